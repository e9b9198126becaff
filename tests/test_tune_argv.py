"""tune's command lines, spelled from the recorded --help of llama.cpp 0c1e570: llama-fit-params
(llama-server's arguments) and llama-bench; the placement flags and how configurations are
packed into llama-bench runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_bench_argv import HELP as BENCH_HELP
from test_server_argv import CURRENT as SERVER_HELP
from test_server_argv import without

from llmtune.tune.argv import (
    BenchGroup,
    Placement,
    TuneArgvError,
    bench_argv,
    fit_params_argv,
    group_configs,
    placement_args,
    sibling,
)
from llmtune.tune.config import Config

SERVER = "/opt/llmtune/llama.cpp/current/bin/llama-server"
FIT = "/opt/llmtune/llama.cpp/current/bin/llama-fit-params"
BENCH = "/opt/llmtune/llama.cpp/current/bin/llama-bench"
MODEL = "/srv/models/llama8b-q4_k_m.gguf"
# The plan under the 4 GB budget.
BUDGET = Config("fit", "q8_0", "on", 512, 16, None, 77559, "mlock")
FITTED = Placement(ngl=12, ctx=32768)


def test_sibling_tools_of_the_same_build() -> None:
    assert sibling(SERVER, "llama-fit-params") == FIT
    assert sibling(SERVER, "llama-bench") == BENCH


# --- llama-fit-params ---------------------------------------------------------------------------


def test_fit_params_argv_of_the_budget_plan() -> None:
    argv = fit_params_argv(FIT, MODEL, BUDGET, 32768, SERVER_HELP)
    assert argv == [
        FIT, "-m", MODEL, "-c", "32768", "-ctk", "q8_0", "-ctv", "q8_0",
        "-fa", "on", "-ub", "512", "-fitt", "77559",
    ]  # fmt: skip


def test_fit_params_argv_leaves_llama_cpp_defaults_out() -> None:
    defaults = Config(placement="fit")
    argv = fit_params_argv(FIT, MODEL, defaults, 65536, SERVER_HELP)
    assert argv == [FIT, "-m", MODEL, "-c", "65536", "-ctk", "f16", "-ctv", "f16"]
    with_batch = fit_params_argv(FIT, MODEL, replace(defaults, batch=4096), 8192, SERVER_HELP)
    assert with_batch[-2:] == ["-b", "4096"]


def test_fit_params_argv_only_for_fit_placements() -> None:
    for placement in ("gpu", "cpu", "cpu-moe"):
        with pytest.raises(TuneArgvError, match=placement):
            fit_params_argv(FIT, MODEL, replace(BUDGET, placement=placement), 32768, SERVER_HELP)


def test_fit_params_argv_without_fit_target_in_the_help() -> None:
    old = without(SERVER_HELP, "-fitt", "--fit-target")
    with pytest.raises(TuneArgvError, match="--fit-target"):
        fit_params_argv(FIT, MODEL, BUDGET, 32768, old)
    # Without a margin to pass, the same binary is fine.
    assert "-fitt" not in fit_params_argv(FIT, MODEL, replace(BUDGET, fit_target=None), 1, old)


# --- placement flags ----------------------------------------------------------------------------


def test_placement_args_per_placement() -> None:
    assert placement_args(Config("gpu"), None) == ("-ngl", "999")
    assert placement_args(Config("cpu"), None) == ("-ngl", "0")
    assert placement_args(Config("cpu-moe"), None) == ("-ngl", "999", "-ncmoe", "999")
    assert placement_args(BUDGET, FITTED) == ("-ngl", "12")


def test_placement_args_join_overrides_and_split_the_llama_bench_way() -> None:
    fitted = Placement(
        ngl=49,
        overrides=("blk\\.20\\.ffn_(gate|down).*=CPU", "blk\\.21\\.ffn_up_exps=CPU"),
        tensor_split=("30", "19"),
        ctx=32768,
    )
    assert placement_args(BUDGET, fitted) == (
        "-ngl", "49",
        "-ot", "blk\\.20\\.ffn_(gate|down).*=CPU;blk\\.21\\.ffn_up_exps=CPU",
        "-ts", "30/19",
    )  # fmt: skip
    assert fitted.brief() == "-ngl 49, 2 tensor override(s)"


def test_a_fit_placement_needs_fit_params_answer() -> None:
    with pytest.raises(TuneArgvError, match="llama-fit-params"):
        placement_args(BUDGET, None)


# --- packing configurations into llama-bench runs -----------------------------------------------


def test_a_cross_product_of_ubatch_and_threads_is_one_run() -> None:
    configs = [replace(BUDGET, ubatch=u, threads=t) for u in (256, 512) for t in (12, 16)]
    groups = group_configs([(c, ("-ngl", "12")) for c in configs])
    assert groups == [
        BenchGroup(("-ngl", "12"), replace(BUDGET, ubatch=None, threads=None), (256, 512), (12, 16))
    ]
    assert groups[0].configs == configs


def test_not_a_cross_product_is_split_by_ubatch() -> None:
    configs = [
        replace(BUDGET, ubatch=256, threads=12),
        replace(BUDGET, ubatch=256, threads=16),
        replace(BUDGET, ubatch=512, threads=16),
    ]
    groups = group_configs([(c, ("-ngl", "12")) for c in configs])
    assert [(g.ubatches, g.threads) for g in groups] == [((256,), (12, 16)), ((512,), (16,))]
    assert [c for g in groups for c in g.configs] == configs


def test_other_placement_or_kv_is_another_run_in_the_order_given() -> None:
    f16 = replace(BUDGET, kv="f16")
    placed = [
        (BUDGET, ("-ngl", "12")),
        (f16, ("-ngl", "9")),
        (replace(BUDGET, threads=12), ("-ngl", "12")),
    ]
    groups = group_configs(placed)
    assert [(g.placement, g.base.kv, g.threads) for g in groups] == [
        (("-ngl", "12"), "q8_0", (16, 12)),
        (("-ngl", "9"), "f16", (16,)),
    ]


def test_default_and_explicit_values_never_share_a_run() -> None:
    placed = [
        (Config("gpu", threads=16), ("-ngl", "999")),
        (Config("gpu", threads=None), ("-ngl", "999")),
        (Config("gpu", ubatch=512, threads=16), ("-ngl", "999")),
    ]
    groups = group_configs(placed)
    assert len(groups) == 3
    for group in groups:
        assert None not in group.ubatches or group.ubatches == (None,)
        assert None not in group.threads or group.threads == (None,)
    # So every group spells into a llama-bench command line.
    for group in groups:
        bench_argv(BENCH, MODEL, group, 16384, 2, BENCH_HELP)


# --- llama-bench --------------------------------------------------------------------------------


def test_bench_argv_of_a_fitted_group() -> None:
    configs = [replace(BUDGET, ubatch=u) for u in (256, 512)]
    (group,) = group_configs([(c, placement_args(c, FITTED)) for c in configs])
    argv = bench_argv(BENCH, MODEL, group, 16384, 2, BENCH_HELP, cpu_mask="0xffff")
    assert argv == [
        BENCH, "-m", MODEL, "-ngl", "12", "-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on",
        "-ub", "256,512", "-t", "16", "-lm", "mlock", "-C", "0xffff",
        "-p", "512", "-n", "64", "-d", "16384", "-r", "2", "-o", "jsonl",
    ]  # fmt: skip
    # llama-bench fits nothing itself: the placement is the one fit-params gave.
    assert "-fitt" not in argv and "-fitc" not in argv


def test_bench_argv_leaves_defaults_out() -> None:
    config = Config("cpu-moe")
    (group,) = group_configs([(config, placement_args(config, None))])
    argv = bench_argv(BENCH, MODEL, group, 0, 1, BENCH_HELP)
    assert argv == [
        BENCH, "-m", MODEL, "-ngl", "999", "-ncmoe", "999", "-ctk", "f16", "-ctv", "f16",
        "-fa", "auto", "-p", "512", "-n", "64", "-d", "0", "-r", "1", "-o", "jsonl",
    ]  # fmt: skip


def test_bench_argv_with_the_batch_and_a_tensor_split() -> None:
    config = replace(BUDGET, batch=4096)
    fitted = Placement(ngl=33, overrides=("a=CPU", "b=CPU"), tensor_split=("3", "1"))
    (group,) = group_configs([(config, placement_args(config, fitted))])
    argv = bench_argv(BENCH, MODEL, group, 16384, 2, BENCH_HELP)
    assert argv[3:9] == ["-ngl", "33", "-ot", "a=CPU;b=CPU", "-ts", "3/1"]
    assert argv[argv.index("-b") + 1] == "4096"


@pytest.mark.parametrize(
    ("config", "missing", "said"),
    [
        (Config("cpu-moe"), ("-ncmoe", "--n-cpu-moe"), "has no -ncmoe"),
        (BUDGET, ("-lm", "--load-mode"), "has no --load-mode"),
        (BUDGET, ("-d", "--n-depth"), "has no --n-depth"),
    ],
)
def test_bench_argv_refuses_a_flag_the_help_lacks(
    config: Config, missing: tuple[str, ...], said: str
) -> None:
    (group,) = group_configs([(config, placement_args(config, FITTED))])
    bench_argv(BENCH, MODEL, group, 16384, 2, BENCH_HELP)  # the recorded help has it
    with pytest.raises(TuneArgvError, match=said):
        bench_argv(BENCH, MODEL, group, 16384, 2, without(BENCH_HELP, *missing))


def test_bench_argv_refuses_a_group_mixing_default_and_explicit_values() -> None:
    mixed = BenchGroup(("-ngl", "999"), Config("gpu"), (None, 512), (16,))
    with pytest.raises(TuneArgvError, match="physical batch"):
        bench_argv(BENCH, MODEL, mixed, 0, 1, BENCH_HELP)
    mixed = BenchGroup(("-ngl", "999"), Config("gpu"), (512,), (16, None))
    with pytest.raises(TuneArgvError, match="thread count"):
        bench_argv(BENCH, MODEL, mixed, 0, 1, BENCH_HELP)


# --- llama-fit-params' answers, recorded on the H100 (tests/fixtures/recorded/tune/SOURCE.md) ---

_FIT = Path(__file__).parent / "fixtures" / "recorded" / "tune"


def test_parse_fit_output_under_a_4_gb_budget_keeps_14_layers_on_the_gpu() -> None:
    from llmtune.tune.argv import Placement, parse_fit_output

    lines = (_FIT / "fit-params-8b-budget.stdout").read_text().splitlines()
    placement = parse_fit_output(lines)
    assert placement == Placement(ngl=14, overrides=(), tensor_split=(), ctx=32768)
    assert placement_args(Config("fit", "q8_0", "on", 512), placement) == ("-ngl", "14")


def test_parse_fit_output_with_plenty_of_vram_leaves_llama_cpp_s_all_layers() -> None:
    # -1: --fit changed nothing; llama-bench's -1 is its default, every layer on the GPU.
    from llmtune.tune.argv import parse_fit_output

    lines = (_FIT / "fit-params-8b-plenty.stdout").read_text().splitlines()
    assert parse_fit_output(lines).ngl == -1


def test_parse_fit_output_without_a_placement_line_is_an_error() -> None:
    from llmtune.tune.argv import parse_fit_output

    with pytest.raises(TuneArgvError, match="no placement"):
        parse_fit_output(["llama_fit: failed", ""])


def test_progress_lines_count_tensor_overrides_instead_of_printing_them() -> None:
    from llmtune.tune.run import _brief

    # The recorded MoE placement: 34 override rules, one per layer whose experts go to RAM.
    ot = ";".join(f"blk\\.{i}\\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU" for i in range(15, 49))
    assert _brief(("-ngl", "49", "-ot", ot)) == "-ngl 49 -ot <34 tensor overrides>"
    assert _brief(("-ngl", "999")) == "-ngl 999"
