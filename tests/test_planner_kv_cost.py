"""The KV type under --fit: the estimate behind it, on the measured anchors' 8B Q4_K_M (the H100's
4 GB budget: 3520 MiB usable, 703 MiB of compute buffers) and the project's synthetic qwen3moe."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_command
from test_planner_serve import llama8b

from llmtune import synthetic_model as sm
from llmtune.facts.model import GgufModel, GgufModelValue
from llmtune.planner.kv_cost import cheaper_kv, kv_cost, serving_depth

ROOM_4GB = 3520 - 703


@pytest.fixture(scope="module")
def qwen3moe(tmp_path_factory: pytest.TempPathFactory) -> GgufModelValue:
    path = tmp_path_factory.mktemp("moe") / "qwen3moe.gguf"
    sm.write_model(path, sm.SHAPES["qwen3moe"], sparse=True)
    return GgufModel().process(run_command(GgufModel().command(str(path))))


def test_shallow_q8_0_buys_layers_and_wins() -> None:
    # The anchors' fresh prompt: q8_0 22.2 vs f16 17.7 t/s under the 4 GB budget at -c 32768.
    choice, f16, q8 = cheaper_kv(llama8b(), ROOM_4GB, 32768, 0)
    assert choice == "q8_0"
    # 258 MiB per layer with f16 cells, 198 with q8_0: 10 vs 14 layers on the GPU.
    assert (f16.on_cpu, q8.on_cpu) == (22, 18)
    assert q8.cost == pytest.approx(f16.cost * 18 / 22)


def test_deep_f16_wins_though_it_leaves_more_layers_on_the_cpu() -> None:
    # Depth 16384 (the serving depth of -c 32768): f16 6.8 vs q8_0 5.8 t/s measured.
    choice, f16, q8 = cheaper_kv(llama8b(), ROOM_4GB, 32768, serving_depth(32768))
    assert choice == "f16"
    assert f16.on_cpu > q8.on_cpu
    assert 1.05 < q8.cost / f16.cost < 1.25  # measured: 6.8 / 5.8 = 1.17


def test_a_near_tie_keeps_f16() -> None:
    # -c 8192, depth 4096: q8_0 is estimated within 5% of f16; f16 is the quality default.
    choice, f16, q8 = cheaper_kv(llama8b(), ROOM_4GB, 8192, 4096)
    assert abs(q8.cost / f16.cost - 1) < 0.05
    assert choice == "f16"


def test_every_layer_on_the_gpu_costs_only_slower_gpu_attention() -> None:
    q8 = kv_cost(llama8b(), "q8_0", 8000 - 703, 32768, 16384)
    assert q8.on_cpu == 0
    assert q8.cost == pytest.approx(2.5e-9 * 54.6e9 * 16384 * 32)


def test_moe_keeps_the_cache_on_the_gpu_and_weighs_expert_bytes(qwen3moe: GgufModelValue) -> None:
    room = 8192 - 1500
    f16 = kv_cost(qwen3moe, "f16", room, 8192, 4096)
    q8 = kv_cost(qwen3moe, "q8_0", room, 8192, 4096)
    # q8_0 frees (2 - 34/32) bytes per value of the 48 x 4 x 256 values per cell for experts.
    freed = (f16.on_cpu - q8.on_cpu) * 1024 * 1024
    assert freed == pytest.approx(48 * 4 * 256 * (2 - 34 / 32) * 8192, rel=1e-6)
    # A token reads 8 of the 128 experts: the freed MiB save a sixteenth of themselves.
    share = qwen3moe.expert_used_count / qwen3moe.expert_count
    assert f16.cost - (q8.cost - 2.5e-9 * 54.6e9 * 4096 * 48) == pytest.approx(freed * share)


def test_serving_depth_is_half_a_slot_capped() -> None:
    assert (serving_depth(8192), serving_depth(65536), serving_depth(0)) == (4096, 16384, 0)


@pytest.mark.parametrize("depth", [0, 4096, 16384])
def test_a_model_without_metadata_does_not_divide_by_zero(depth: int) -> None:
    blank = GgufModelValue(path=str(Path("/x.gguf")), available=True)
    assert kv_cost(blank, "f16", 1000, 0, depth).cost >= 0
