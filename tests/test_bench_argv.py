"""llama-bench's command line for the planned service: the H100 plans recorded by `llmtune plan`,
plans of the recorded hosts, spelled against real `llama-bench --help` recordings (CUDA and CPU
builds of 0c1e570); the CPU case was run for real (its output is the -cpu .jsonl fixture)."""

from __future__ import annotations

import shlex
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FIXTURES, fixture_text, read_fact
from test_planner_serve import KEY_FILE, h100_host, hybrid_host, llama8b, settings
from test_server_argv import BINARY, CURRENT, OLD, without

from llmtune.bench.argv import (
    BenchArgvError,
    bench_argv,
    bench_binary_for,
    bench_command,
    server_options,
    serving_depth,
)
from llmtune.bench.results import parse_jsonl
from llmtune.facts.llama import LlamaServerHelpValue, parse_help
from llmtune.facts.llama_bench import LlamaBenchHelp, parse_bench_help
from llmtune.facts.llama_service import ServiceRecord
from llmtune.planner.serve import plan_server
from llmtune.planner.server_argv import render_argv

BENCH = "/opt/llmtune/llama.cpp/current/bin/llama-bench"
CUDA_HELP_FILE = FIXTURES / "llama.cpp" / "llama-bench-help-0c1e570.txt"
CPU_HELP_FILE = FIXTURES / "llama.cpp" / "llama-bench-help-0c1e570-cpu.txt"


def bench_help(path: Path = CUDA_HELP_FILE) -> LlamaServerHelpValue:
    """A recorded llama-bench --help through the LlamaBenchHelp fact (with the probe's trailer)."""
    return LlamaBenchHelp().process([*path.read_text().splitlines(), "@@llmtune rc 0"])


HELP = bench_help()


def recorded_plan(name: str, placement: str) -> ServiceRecord:
    """The service record of a plan `llmtune plan` printed on the H100 (its last line)."""
    line = fixture_text("recorded", "llama-service", f"plan-{name}.txt").splitlines()[-1]
    return ServiceRecord(argv=tuple(shlex.split(line)), placement=placement, uses_gpu=True)


def record_of(plan, help: LlamaServerHelpValue = CURRENT) -> ServiceRecord:
    """What the deploy records for a plan: the rendered argv, placement and CPU affinity."""
    cpus = plan.value("cpus")
    return ServiceRecord(
        argv=tuple(render_argv(plan, help, BINARY)),
        placement=plan.placement,
        cpu_affinity=tuple(cpus) if isinstance(cpus, tuple) else (),
    )


def pairs(argv: tuple[str, ...] | list[str]) -> dict[str, str]:
    return dict(zip(argv[1::2], argv[2::2], strict=False))


# --- llama-bench's --help ----------------------------------------------------------------------


def test_bench_help_parses_every_option_of_both_recordings() -> None:
    lines = CUDA_HELP_FILE.read_text().splitlines()
    heads = [line for line in lines if line.startswith("  -")]
    assert HELP.installed and HELP.rc == 0 and HELP.reason == ""
    assert len(HELP.options) == len(heads) == 46
    # llama-server's parser reads no option there: the two helps have different layouts.
    assert parse_help(lines) == ()
    cpu = bench_help(CPU_HELP_FILE)
    # Same options; only the printed -t default differs (16 vs 2 cores).
    assert [(o.spellings, o.placeholder, o.choices) for o in cpu.options] == [
        (o.spellings, o.placeholder, o.choices) for o in HELP.options
    ]
    assert {o.section for o in HELP.options} == {"options", "test parameters"}


def test_bench_help_options_that_matter_here() -> None:
    # No --fit switch: fitting is -fitt/-fitc; -ngl takes a number only.
    assert not HELP.has("--fit")
    assert HELP.spelling_for("-fitt", "--fit-target") == "-fitt"
    ngl = HELP.option("--n-gpu-layers")
    assert ngl is not None and ngl.spellings == ("-ngl", "--n-gpu-layers")
    assert ngl.placeholder == "<n>" and "'all'" not in ngl.help
    assert HELP.option("-fa").choices == ("on", "off", "auto")  # type: ignore[union-attr]
    assert HELP.option("-o").choices == ("csv", "json", "jsonl", "md", "sql")  # type: ignore[union-attr]
    lm = HELP.option("--load-mode")
    assert lm is not None and lm.choices == ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
    assert lm.help == "(default: auto)"
    # "-ot --override-tensor" has no comma; its placeholder holds spaces.
    ot = HELP.option("-ot")
    assert ot is not None and ot.spellings == ("-ot", "--override-tensor")
    assert ot.placeholder == "<tensor name pattern>=<buffer type>;..."
    delay = HELP.option("--delay")
    assert delay is not None and delay.placeholder == "<0...N>" and delay.choices == ()
    assert delay.help.startswith("(seconds) delay between each test")
    # The switches are switches; the help's trailing paragraph is no option.
    assert not HELP.option("--no-warmup").takes_value  # type: ignore[union-attr]
    assert parse_bench_help(["Multiple values can be given for each parameter"]) == ()


def test_bench_help_fact_runs_the_binary(tmp_path: Path) -> None:
    # A stand-in that prints the CPU recording and exits 0, as the real binary does.
    stub = tmp_path / "llama-bench"
    stub.write_text(f"#!/bin/sh\ncat '{CPU_HELP_FILE}'\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    assert read_fact(LlamaBenchHelp, binary=str(stub)) == bench_help(CPU_HELP_FILE)
    missing = read_fact(LlamaBenchHelp, binary=str(tmp_path / "nope"))
    assert not missing.available and not missing.installed and "not installed" in missing.reason


# --- the measured scenarios --------------------------------------------------------------------


def test_h100_plenty_of_vram() -> None:
    record = recorded_plan("plenty", "gpu")
    command = bench_command(record, HELP, bench_binary_for(record.argv[0]))
    assert list(command.argv) == [
        BENCH,
        "-m", "/srv/models/llama8b-q4_k_m.gguf",
        "-ngl", "999",  # -ngl all: llama-bench reads a number
        "-lm", "mlock",
        "-ctk", "f16",
        "-ctv", "f16",
        "-fa", "on",
        "-ub", "512",
        "-t", "16",
        "-p", "512",
        "-n", "128",
        "-d", "0,16384",  # -c 32768, one slot: half of it
        "-r", "5",
        "-o", "jsonl",
    ]  # fmt: skip
    assert command.tests == ("pp512", "tg128", "pp512@d16384", "tg128@d16384")
    assert command.depth == 16384 and command.notes == ()
    assert bench_argv(record, HELP, BENCH) == list(command.argv)


def test_h100_four_gb_budget_fits_with_the_servers_margin() -> None:
    command = bench_command(recorded_plan("budget", "fit"), HELP, BENCH)
    flags = pairs(command.argv)
    assert (flags["-fitt"], flags["-fitc"]) == ("77559", "32768")
    assert "-ngl" not in flags  # the fit chooses the layers, as the server's --fit does
    assert (flags["-ctk"], flags["-ctv"], flags["-d"]) == ("q8_0", "q8_0", "0,16384")
    (note,) = command.notes
    assert note.startswith("--fit: llama-bench fits each test's own context (at most 16896")
    assert "77559 MiB margin" in note and "32768-token KV cache" in note


def test_cpu_plan_is_the_command_that_ran_on_the_vm() -> None:
    text = fixture_text("llama.cpp", "llama-bench-tiny-f32-cpu-0c1e570.cmd.txt")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    server, ran = shlex.split(lines[0]), shlex.split(lines[1])
    record = ServiceRecord(argv=tuple(server), placement="cpu")
    command = bench_command(record, bench_help(CPU_HELP_FILE), bench_binary_for(server[0]))
    assert list(command.argv) == ran
    assert pairs(command.argv)["-ngl"] == "0" and command.depth == 1024  # -c 2048
    # What llama-bench reported it ran: the planned settings, the planned tests.
    output = fixture_text("llama.cpp", "llama-bench-tiny-f32-cpu-0c1e570.jsonl")
    results = parse_jsonl(output.splitlines())
    assert tuple(r.test for r in results) == command.tests
    for r in results:
        assert (r.get("n_gpu_layers"), r.get("n_threads"), r.get("n_ubatch")) == (0, 2, 512)
        assert (r.get("type_k"), r.get("type_v"), r.get("flash_attn")) == ("f16", "f16", 1)
        assert r.get("load_mode") == "mlock" and len(r.samples_ts) == 5


def test_hybrid_cpu_pins_the_bench_to_the_p_cores(tmp_path: Path) -> None:
    plan = plan_server(hybrid_host(tmp_path), llama8b(), settings(), KEY_FILE)
    record = record_of(plan)
    assert record.cpu_affinity == (0, 1, 3, 6, 8, 10)
    flags = pairs(bench_command(record, HELP, BENCH).argv)
    assert flags["-C"] == "0x54b"  # bits 0, 1, 3, 6, 8, 10
    assert flags["-t"] == "6" and flags["-d"] == "0,4096"  # trained context 8192


def test_extra_arguments_in_llama_bench_spelling(tmp_path: Path) -> None:
    # Extra arguments the planner accepted (checked against the real server --help).
    extra = [
        "--no-kv-offload", "-ts", "3,1", "-ot", r"blk\.1\.ffn_.*=CPU,blk\.2\.ffn_.*=CPU",
        "--no-repack", "-tb", "8", "--metrics", "--no-host", "-sm", "row", "--poll", "0",
        "--spec-type", "ngram-simple",
    ]  # fmt: skip
    chosen = settings(context_size=32768, parallel=2, server_extra_args=extra)
    record = record_of(plan_server(h100_host(tmp_path), llama8b(), chosen, KEY_FILE))
    command = bench_command(record, HELP, BENCH)
    flags = pairs(command.argv)
    assert flags["-nkvo"] == "1" and flags["--repack"] == "0" and flags["--no-host"] == "1"
    # "," would start another test in llama-bench: its lists use "/" and ";".
    assert flags["-ts"] == "3/1"
    assert flags["-ot"] == r"blk\.1\.ffn_.*=CPU;blk\.2\.ffn_.*=CPU"
    assert (flags["-sm"], flags["--poll"]) == ("row", "0")
    # -c 65536 over 2 slots: 32768 per request, depth capped at 16384.
    assert flags["-d"] == "0,16384"
    assert command.notes == (
        "llama-bench measures one sequence; the server's 2 slots share the hardware when "
        "several requests run at once",
        "-tb 8: llama-bench processes prompts with -t threads (16)",
        "--spec-type ngram-simple: llama-bench measures the model alone, without speculative "
        "decoding",
    )
    assert "--metrics" not in command.argv and "-np" not in command.argv


def test_older_server_spellings_mean_the_same(tmp_path: Path) -> None:
    # A release before -lm: the plan's mlock is --no-mmap --mlock there.
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(context_size=32768), KEY_FILE)
    record = record_of(plan, OLD)
    assert "--no-mmap" in record.argv and "--mlock" in record.argv
    flags = pairs(bench_command(record, HELP, BENCH).argv)
    assert flags["-lm"] == "mlock" and flags["-fa"] == "on"
    # -fa as a bare switch (older releases) means on.
    switch = replace(record, argv=tuple(a for a in record.argv if a != "on"))
    assert pairs(bench_command(switch, HELP, BENCH).argv)["-fa"] == "on"


# --- depth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "depth"), [(2048, 1024), (8192, 4096), (32768, 16384), (131072, 16384), (0, 0)]
)
def test_serving_depth_is_half_a_slot_capped(ctx: int, depth: int) -> None:
    assert serving_depth(ctx) == depth


def test_depth_can_be_chosen_or_left_out() -> None:
    record = recorded_plan("plenty", "gpu")
    none = bench_command(record, HELP, BENCH, depth=0, repetitions=3)
    assert pairs(none.argv)["-d"] == "0" and pairs(none.argv)["-r"] == "3"
    assert none.tests == ("pp512", "tg128") and none.depth == 0
    chosen = bench_command(record, HELP, BENCH, depth=8192)
    assert chosen.tests[2:] == ("pp512@d8192", "tg128@d8192")


def test_no_context_in_the_service_assumes_llama_cpps_least(tmp_path: Path) -> None:
    record = recorded_plan("plenty", "gpu")
    argv = list(record.argv)
    del argv[argv.index("-c") : argv.index("-c") + 2]
    command = bench_command(replace(record, argv=tuple(argv)), HELP, BENCH)
    assert pairs(command.argv)["-d"] == "0,2048"
    assert command.notes == (
        "the service sets no context size: the depth test assumes 4096 tokens",
    )


# --- what cannot be measured: clear errors ------------------------------------------------------


def test_a_bench_without_fit_target_cannot_reproduce_fit() -> None:
    with pytest.raises(BenchArgvError) as err:
        bench_command(recorded_plan("budget", "fit"), without(HELP, "-fitt"), BENCH)
    assert err.value.flag == "--fit on"
    assert "this llama-bench has no --fit-target" in str(err.value)


@pytest.mark.parametrize(
    ("missing", "flag"), [("-lm", "-lm mlock"), ("-d", "(test)"), ("-fa", "-fa"), ("-o", "(test)")]
)
def test_flags_this_bench_lacks(missing: str, flag: str) -> None:
    with pytest.raises(BenchArgvError) as err:
        bench_command(recorded_plan("plenty", "gpu"), without(HELP, missing), BENCH)
    assert err.value.flag == flag


def test_per_device_margins_and_unreadable_inputs() -> None:
    record = recorded_plan("budget", "fit")
    argv = list(record.argv)
    argv[argv.index("--fit-target") + 1] = "77559,2048"
    with pytest.raises(BenchArgvError, match="one margin to every device"):
        bench_command(replace(record, argv=tuple(argv)), HELP, BENCH)
    with pytest.raises(BenchArgvError, match="could not be read"):
        bench_command(record, LlamaBenchHelp().process([]), BENCH)
    with pytest.raises(BenchArgvError, match="names no model"):
        bench_command(replace(record, argv=(BINARY, "-t", "4")), HELP, BENCH)
    with pytest.raises(BenchArgvError, match=r"accepts on\|off\|auto, not yes"):
        bench_command(replace(record, argv=(BINARY, "-m", "m.gguf", "-fa", "yes")), HELP, BENCH)


def test_server_options_reads_switches_values_and_negative_numbers() -> None:
    assert server_options(["-m", "/m.gguf", "--no-host", "-ngl", "-1", "--metrics", "-t", "4"]) == [
        ("-m", "/m.gguf"),
        ("--no-host", None),
        ("-ngl", "-1"),
        ("--metrics", None),
        ("-t", "4"),
    ]
    with pytest.raises(BenchArgvError, match="no positional arguments"):
        server_options(["/m.gguf"])
