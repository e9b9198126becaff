"""tune's search space on real host recordings: the H100 VM with the measured anchors' 8B Q4_K_M
(plenty of VRAM, the 4 GB budget, a KV type set in settings), the project's synthetic qwen3moe
(Qwen3-30B-A3B's shape, a sparse file read through the GgufModel fact) under a budget, and the
Debian 12 VM without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_command
from test_planner_serve import KEY_FILE, debian_host, h100_host, llama8b, settings

from llmtune import synthetic_model as sm
from llmtune.facts.model import GgufModel, GgufModelValue
from llmtune.planner.serve import HostResources, plan_server
from llmtune.settings import HostSettings
from llmtune.tune.config import Config, from_plan
from llmtune.tune.space import SearchSpace, search_space

# The 4 GB budget the anchors were measured under: 81079 MiB free - 77559 = 3520 MiB usable.
BUDGET_4GB = 77559
# qwen3moe at -c 32768 (dense part 2964 MiB, compute 641/937/1827 MiB for ub 256/512/2048):
# 7000 MiB usable holds the dense part with q8_0 KV (1632 MiB) at every ubatch and with f16 KV
# (3072 MiB) at 256 and 512 (6825, 6973 MiB) but not at 2048 (7863 MiB).
MOE_BUDGET = 81079 - 7000


def space_for(host: HostResources, model: GgufModelValue, chosen: HostSettings) -> SearchSpace:
    """The space ``llmtune tune`` builds: around the plan's configuration, at the plan's ctx."""
    plan = plan_server(host, model, chosen, KEY_FILE)
    return search_space(host, model, chosen, from_plan(plan), int(str(plan.value("ctx"))))


def reasons(space: SearchSpace, knob: str) -> dict[object, str]:
    return dict(space.knob(knob).pruned)


@pytest.fixture
def h100(tmp_path: Path) -> HostResources:
    return h100_host(tmp_path)


@pytest.fixture(scope="module")
def qwen3moe(tmp_path_factory: pytest.TempPathFactory) -> GgufModelValue:
    """The synthetic qwen3moe (F16, 61 GB, written sparse) through the GgufModel fact."""
    path = tmp_path_factory.mktemp("moe") / "qwen3moe.gguf"
    sm.write_model(path, sm.SHAPES["qwen3moe"], sparse=True)
    model = GgufModel().process(run_command(GgufModel().command(str(path))))
    assert model.available and model.is_moe
    return model


# --- (a) plenty of VRAM -------------------------------------------------------------------------


def test_plenty_of_vram_starts_on_the_gpu_and_prunes_threads_and_q8_0(
    h100: HostResources,
) -> None:
    space = space_for(h100, llama8b(), settings(context_size=32768))
    assert space.start == Config(
        placement="gpu", kv="f16", flash_attn="on", ubatch=512, threads=16, load_mode="mlock"
    )
    assert (space.ctx, space.slots, space.moe) == (32768, 1, False)

    threads = space.knob("threads")
    assert threads.values == (8, 12, 16)  # half, 3/4 and all of the 16 physical cores
    assert threads.for_tune() == (16,)
    assert set(reasons(space, "threads")) == {8, 12}
    assert "every layer is on the GPU" in reasons(space, "threads")[8]

    kv = space.knob("kv")
    assert kv.values == ("f16", "q8_0") and kv.for_tune() == ("f16",)
    assert "9-22% slower" in reasons(space, "kv")["q8_0"]

    assert space.knob("ubatch").values == (256, 512, 2048)
    assert space.knob("flash_attn").values == ("on", "off")
    assert space.knob("placement").values == ("gpu",)
    assert space.knob("fit_target").values == (None,)
    assert space.knob("fit_target").fixed == "--fit is off"


def test_plenty_of_vram_grids(h100: HostResources) -> None:
    space = space_for(h100, llama8b(), settings(context_size=32768))
    full = space.grid(exhaustive=True)
    assert full[0] == space.start
    assert len(full) == len(set(full))
    assert all(c.valid for c in full)
    assert not any(c.kv == "q8_0" and c.flash_attn == "off" for c in full)
    # 3 threads x (f16: 3 ubatches x 2 FA + q8_0: 3 ubatches x FA on) = 27.
    assert len(full) == 27
    assert {c.placement for c in full} == {"gpu"} and {c.fit_target for c in full} == {None}

    tune = space.grid(exhaustive=False)
    assert tune[0] == space.start
    assert set(tune) < set(full)
    # threads 16, f16 and FA on only: the 3 ubatches.
    assert len(tune) == 3
    assert {(c.threads, c.kv, c.flash_attn) for c in tune} == {(16, "f16", "on")}
    assert "217.1 vs 169.2" in reasons(space, "flash_attn")["off"]


# --- (b) the 4 GB budget ------------------------------------------------------------------------


def test_four_gb_budget_fits_and_prunes_threads_below_three_quarters(h100: HostResources) -> None:
    space = space_for(h100, llama8b(), settings(context_size=32768, fit_target_mib=BUDGET_4GB))
    # f16: at depth 16384 q8_0's attention on the CPU layers costs more than it buys.
    assert space.start == Config(
        placement="fit",
        kv="f16",
        flash_attn="on",
        ubatch=512,
        threads=16,
        fit_target=BUDGET_4GB,
        load_mode="mlock",
    )
    threads = space.knob("threads")
    assert threads.values == (8, 12, 16)
    assert threads.for_tune() == (12, 16)  # 12 is 3/4 of 16: kept
    assert "fewer than 3/4 of the cores" in reasons(space, "threads")[8]

    # Under --fit a smaller KV buys GPU layers: both types stay.
    assert space.knob("kv").for_tune() == ("f16", "q8_0")
    fit_target = space.knob("fit_target")
    assert fit_target.values == (BUDGET_4GB,)
    assert "fit_target_mib" in fit_target.fixed and str(BUDGET_4GB) in fit_target.fixed
    # A dense model: --fit is the only placement.
    assert space.knob("placement").values == ("fit",)

    tune = space.grid(exhaustive=False)
    assert tune[0] == space.start
    assert {c.threads for c in tune} == {12, 16}
    assert {c.fit_target for c in tune} == {BUDGET_4GB}
    # 2 threads x 2 KV types x 3 ubatches, FA on (off pruned), of the 27 of the sweep.
    assert (len(tune), len(space.grid(exhaustive=True))) == (12, 27)
    assert "under a 4 GB budget" in reasons(space, "flash_attn")["off"]


def test_fit_margin_is_a_knob_when_the_model_does_not_fit_by_itself(
    h100: HostResources,
) -> None:
    # 40 GB of weights: --fit with llama.cpp's margin, nothing set in settings.
    space = space_for(h100, llama8b(file_bytes=90 * 1024**3), settings(context_size=32768))
    assert (space.start.placement, space.start.fit_target) == ("fit", 1024)
    fit_target = space.knob("fit_target")
    assert fit_target.values == (1024, 512) and not fit_target.fixed
    assert {c.fit_target for c in space.grid(exhaustive=False)} == {1024, 512}


# --- (c) a KV type set in settings --------------------------------------------------------------


def test_kv_cache_type_in_settings_fixes_the_kv_knob(h100: HostResources) -> None:
    space = space_for(h100, llama8b(), settings(context_size=32768, kv_cache_type="q8_0"))
    kv = space.knob("kv")
    assert kv.values == ("q8_0",) and kv.pruned == ()
    assert "kv_cache_type q8_0 is set in settings" in kv.fixed
    full = space.grid(exhaustive=True)
    assert {c.kv for c in full} == {"q8_0"}
    # q8_0 needs flash attention: FA off never appears, 3 threads x 3 ubatches.
    assert {c.flash_attn for c in full} == {"on"} and len(full) == 9


# --- (d) a MoE under a budget -------------------------------------------------------------------


def test_moe_under_a_budget_offers_cpu_moe_but_prunes_it(
    h100: HostResources, qwen3moe: GgufModelValue
) -> None:
    space = space_for(h100, qwen3moe, settings(context_size=32768, fit_target_mib=MOE_BUDGET))
    assert space.moe
    assert (space.start.placement, space.start.fit_target) == ("fit", MOE_BUDGET)
    placement = space.knob("placement")
    assert placement.values == ("fit", "cpu-moe") and not placement.fixed
    assert placement.for_tune() == ("fit",)
    assert "all experts in RAM" in reasons(space, "placement")["cpu-moe"]
    assert {c.placement for c in space.grid(exhaustive=False)} == {"fit"}


def test_moe_cpu_moe_configs_only_where_the_dense_part_fits(
    h100: HostResources, qwen3moe: GgufModelValue
) -> None:
    space = space_for(h100, qwen3moe, settings(context_size=32768, fit_target_mib=MOE_BUDGET))
    full = space.grid(exhaustive=True)
    cpu_moe = [c for c in full if c.placement == "cpu-moe"]
    assert {(c.kv, c.ubatch) for c in cpu_moe} == {
        ("f16", 256),
        ("f16", 512),
        ("q8_0", 256),
        ("q8_0", 512),
        ("q8_0", 2048),
    }
    # Every expert in RAM: --fit's margin does not apply.
    assert {c.fit_target for c in cpu_moe} == {None}
    assert not space.valid(Config(placement="cpu-moe", kv="f16", ubatch=2048, threads=16))
    assert space.valid(Config(placement="cpu-moe", kv="q8_0", flash_attn="on", ubatch=2048))
    # 27 --fit configs as for a dense model, plus 3 threads x (f16: 2 ub x 2 FA + q8_0: 3 ub).
    assert len(full) == 27 + 3 * 7


def test_moe_under_the_4gb_budget_has_no_cpu_moe(
    h100: HostResources, qwen3moe: GgufModelValue
) -> None:
    # 3520 MiB usable: the 2964 MiB dense part fits with no KV type and compute buffer.
    space = space_for(h100, qwen3moe, settings(context_size=32768, fit_target_mib=BUDGET_4GB))
    assert space.knob("placement").values == ("fit",)
    assert not any(c.placement == "cpu-moe" for c in space.grid(exhaustive=True))


# --- (e) no GPU ---------------------------------------------------------------------------------


def test_no_gpu_runs_on_the_cpu_with_f16(tmp_path: Path) -> None:
    space = space_for(debian_host(tmp_path), llama8b(), settings())
    assert space.start.placement == "cpu" and space.start.threads == 2
    kv = space.knob("kv")
    assert kv.values == ("f16",) and "no GPU" in kv.fixed
    assert space.knob("placement").values == ("cpu",)
    assert space.knob("fit_target").values == (None,)
    # 2 vCPUs: 1 and 2 threads, nothing pruned on the CPU.
    assert space.knob("threads").values == (1, 2) and space.knob("threads").pruned == ()
    full = space.grid(exhaustive=True)
    assert {(c.placement, c.kv) for c in full} == {("cpu", "f16")}
    assert len(full) == 2 * 3 * 2
    assert space.grid(exhaustive=False) == full
