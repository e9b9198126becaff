"""llama-server's argv for the measured scenarios, spelled from real --help recordings: the
current one (0c1e570) and an older release that still takes --no-mmap/--mlock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_planner_serve import (
    KEY_FILE,
    MODEL_PATH,
    debian_host,
    h100_host,
    hybrid_host,
    llama8b,
    settings,
)

from llmtune.facts.llama import LlamaServerHelp, LlamaServerHelpValue
from llmtune.planner.serve import ServePlan, plan_server
from llmtune.planner.server_argv import (
    ArgvError,
    UnsupportedFlag,
    context_tokens,
    explain,
    render_argv,
)

BINARY = "/opt/llmtune/llama.cpp/current/bin/llama-server"
OLD_HELP_FILE = (
    FIXTURES / "public" / "llama-server-help-old-mlock-no-mmap" / "llama-server-help.txt"
)


def parse_help(path: Path) -> LlamaServerHelpValue:
    """A recorded --help through the LlamaServerHelp fact's parser (with the probe's trailer)."""
    return LlamaServerHelp().process([*path.read_text().splitlines(), "@@llmtune rc 0"])


CURRENT = parse_help(FIXTURES / "llama.cpp" / "llama-server-help-0c1e570-cuda.txt")
OLD = parse_help(OLD_HELP_FILE)


def without(help: LlamaServerHelpValue, *flags: str) -> LlamaServerHelpValue:
    """The help with the options spelled ``flags`` taken out (a binary that lacks them)."""
    return replace(
        help, options=tuple(o for o in help.options if not set(o.spellings) & set(flags))
    )


def argv_of(plan: ServePlan, help: LlamaServerHelpValue = CURRENT) -> list[str]:
    argv = render_argv(plan, help, BINARY)
    assert argv[0] == BINARY
    return argv[1:]


def pairs(argv: list[str]) -> dict[str, str]:
    """Flag -> the item after it (enough for flags that take a value)."""
    return {a: b for a, b in zip(argv, [*argv[1:], ""], strict=True) if a.startswith("-")}


# --- the measured scenarios --------------------------------------------------------------------


def test_a_h100_plenty_of_vram(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(context_size=32768), KEY_FILE)
    assert argv_of(plan) == [
        "-m", MODEL_PATH,
        "-a", "llama8b-q4_k_m",
        "--fit", "off",
        "-ngl", "all",
        "-c", "32768",
        "-ctk", "f16",
        "-ctv", "f16",
        "-fa", "on",
        "-ub", "512",
        "-t", "16",
        "-np", "1",
        "-lm", "mlock",
        "--host", "127.0.0.1",
        "--port", "8080",
        "--api-key-file", KEY_FILE,
    ]  # fmt: skip


def test_b_four_gb_budget(tmp_path: Path) -> None:
    chosen = settings(context_size=32768, fit_target_mib=77559)
    plan = plan_server(h100_host(tmp_path), llama8b(), chosen, KEY_FILE)
    assert argv_of(plan) == [
        "-m", MODEL_PATH,
        "-a", "llama8b-q4_k_m",
        "--fit", "on",
        "-c", "32768",  # asked for in the settings (the anchors' -c 32768)
        "--fit-target", "77559",
        "-ctk", "f16",  # at the serving depth 16384 f16 beats q8_0 on the CPU layers
        "-ctv", "f16",
        "-fa", "on",
        "-ub", "512",
        "-t", "16",
        "-np", "1",
        "-lm", "mlock",
        "--host", "127.0.0.1",
        "--port", "8080",
        "--api-key-file", KEY_FILE,
    ]  # fmt: skip


def test_fit_without_a_context_setting_passes_fit_ctx_and_never_ngl(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(fit_target_mib=78500), KEY_FILE)
    argv = argv_of(plan)
    assert plan.placement == "fit"
    assert pairs(argv)["--fit-ctx"] == "8192"
    assert "-c" not in argv and "-ngl" not in argv


def test_c_cpu_placement_on_the_debian_vm(tmp_path: Path) -> None:
    plan = plan_server(debian_host(tmp_path), llama8b(), settings(), KEY_FILE)
    argv = argv_of(plan, parse_help(FIXTURES / "llama.cpp" / "llama-server-help-0c1e570-cpu.txt"))
    assert argv[4:10] == ["--fit", "off", "-ngl", "0", "-c", "8192"]
    flags = pairs(argv)
    assert (flags["-t"], flags["-ctk"], flags["-lm"]) == ("2", "f16", "mlock")
    assert "--fit-target" not in flags


def test_d_vision(tmp_path: Path) -> None:
    chosen = settings(workload="vision", mmproj_path="/srv/models/mmproj-f16.gguf")
    flags = pairs(argv_of(plan_server(h100_host(tmp_path), llama8b(), chosen, KEY_FILE)))
    assert flags["--mmproj"] == "/srv/models/mmproj-f16.gguf"
    assert int(flags["-ub"]) >= 512
    # Everything fits: --fit is off and the 2048 MiB is the arithmetic's margin only.
    assert flags["--fit"] == "off" and "--fit-target" not in flags
    budget = settings(workload="vision", mmproj_path="/m.gguf", context_size=32768)
    small = replace(
        h100_host(tmp_path / "small"), gpus=(replace(h100_host(tmp_path).gpus[0], free_mib=6000),)
    )
    fit = pairs(argv_of(plan_server(small, llama8b(), budget, KEY_FILE)))
    assert fit["--fit"] == "on" and int(fit["--fit-target"]) >= 2048


def test_e_mtp_spelled_for_the_current_binary_and_refused_by_the_old_one(tmp_path: Path) -> None:
    chosen = settings(workload="mtp")
    plan = plan_server(h100_host(tmp_path), llama8b(nextn_predict_layers=1), chosen, KEY_FILE)
    assert pairs(argv_of(plan))["--spec-type"] == "draft-mtp"
    with pytest.raises(UnsupportedFlag) as refused:
        render_argv(plan, OLD, BINARY)
    assert refused.value.key == "workload" and refused.value.flag == "--spec-type draft-mtp"
    assert "ngram-mod" in str(refused.value)  # what this binary does accept


def test_f_hybrid_threads_on_the_rtx_desktop(tmp_path: Path) -> None:
    plan = plan_server(hybrid_host(tmp_path), llama8b(), settings(), KEY_FILE)
    flags = pairs(argv_of(plan))
    assert flags["-t"] == "6"
    # The P-core list is the unit's CPUAffinity=, not a llama-server flag.
    assert not {"-C", "--cpu-mask", "-Cr", "--cpu-range"} & set(flags)


# --- (g) extra arguments ------------------------------------------------------------------------


def test_g_unknown_extra_arg_is_refused_naming_setting_and_flag(tmp_path: Path) -> None:
    plan = plan_server(
        h100_host(tmp_path), llama8b(), settings(server_extra_args=["--turbo"]), KEY_FILE
    )
    with pytest.raises(UnsupportedFlag) as refused:
        render_argv(plan, CURRENT, BINARY)
    assert refused.value.key == "server_extra_args" and refused.value.flag == "--turbo"
    assert "server_extra_args" in str(refused.value) and "--turbo" in str(refused.value)


@pytest.mark.parametrize(
    ("extra", "flag", "why"),
    [
        # Listed in the 0c1e570 help, but as removed.
        (["--draft-max", "8"], "--draft-max", "the argument has been removed"),
        # Gone in 0c1e570 (the measured "error: invalid argument: --no-mmap").
        (["--no-mmap"], "--no-mmap", "not an option"),
        (["--metrics=1"], "--metrics=1", "no --flag=value"),
        (["8"], "8", "not an option"),
    ],
)
def test_extra_args_this_binary_would_refuse(
    tmp_path: Path, extra: list[str], flag: str, why: str
) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(server_extra_args=extra), KEY_FILE)
    with pytest.raises(UnsupportedFlag, match=why) as refused:
        render_argv(plan, CURRENT, BINARY)
    assert refused.value.flag == flag


def test_extra_args_that_fight_the_plan_or_lack_a_value(tmp_path: Path) -> None:
    host = h100_host(tmp_path)
    conflict = plan_server(
        host, llama8b(), settings(server_extra_args=["--threads", "8"]), KEY_FILE
    )
    with pytest.raises(ArgvError, match="use the setting threads"):
        render_argv(conflict, CURRENT, BINARY)
    dangling = plan_server(
        host, llama8b(), settings(server_extra_args=["--slot-save-path"]), KEY_FILE
    )
    with pytest.raises(ArgvError, match="needs a value"):
        render_argv(dangling, CURRENT, BINARY)


def test_known_extra_args_are_appended_last(tmp_path: Path) -> None:
    extra = ["--metrics", "--slot-save-path", "/var/lib/llama/slots", "--no-webui"]
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(server_extra_args=extra), KEY_FILE)
    assert argv_of(plan)[-4:] == extra


# --- (h) the API key ----------------------------------------------------------------------------


def test_h_api_key_only_as_a_file(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(), KEY_FILE)
    argv = argv_of(plan)
    assert pairs(argv)["--api-key-file"] == KEY_FILE
    assert "--api-key" not in argv
    # A binary without --api-key-file: refused, never spelled as --api-key KEY.
    with pytest.raises(UnsupportedFlag, match="--api-key-file"):
        render_argv(plan, without(CURRENT, "--api-key-file"), BINARY)
    # Nor through the extra arguments.
    leaky = settings(server_extra_args=["--api-key", "sk-secret"])
    with pytest.raises(ArgvError, match="server_api_key: file"):
        render_argv(plan_server(h100_host(tmp_path), llama8b(), leaky, KEY_FILE), CURRENT, BINARY)


def test_no_key_file_when_the_policy_is_none(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(server_api_key="none"), None)
    assert not any(a.startswith("--api-key") for a in argv_of(plan))


# --- older binaries -----------------------------------------------------------------------------


def test_old_binary_gets_no_mmap_and_mlock(tmp_path: Path) -> None:
    # A real --help of an older release (tests/fixtures/public/llama-server-help-old-*).
    assert not OLD.has("-lm") and OLD.has("--no-mmap") and OLD.has("--mlock")
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(context_size=32768), KEY_FILE)
    argv = argv_of(plan, OLD)
    assert argv[argv.index("--no-mmap") + 1] == "--mlock"
    assert "-lm" not in argv
    # Everything else of the plan is spelled the same there.
    assert pairs(argv)["-ngl"] == "all" and pairs(argv)["-fa"] == "on"


def test_current_binary_without_load_mode_falls_back_too(tmp_path: Path) -> None:
    # No recording has -lm missing and --no-mmap present apart from the old one above: here
    # -lm is removed from the current help programmatically, and --mlock/--no-mmap are absent.
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(), KEY_FILE)
    with pytest.raises(UnsupportedFlag) as refused:
        render_argv(plan, without(CURRENT, "-lm"), BINARY)
    assert refused.value.setting == "load_mode" and "--load-mode mlock" in str(refused.value)
    assert "--mlock" in argv_of(plan, without(OLD, "-lm"))


def test_switch_flash_attn_and_numeric_all_layers_for_older_spellings(tmp_path: Path) -> None:
    # Programmatic stand-ins: -fa as a switch (before on|off|auto) and -ngl without 'all'.
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(), KEY_FILE)
    options = []
    for option in CURRENT.options:
        if "-fa" in option.spellings:
            option = replace(option, placeholder="", choices=())
        if "-ngl" in option.spellings:
            option = replace(option, help="number of layers to store in VRAM")
        options.append(option)
    argv = argv_of(plan, replace(CURRENT, options=tuple(options)))
    assert argv[argv.index("-fa") + 1] == "-ub"  # no value after the switch
    assert pairs(argv)["-ngl"] == "999"


def test_unreadable_help_stops_before_anything_is_written(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(), KEY_FILE)
    broken = LlamaServerHelp().process(["@@llmtune missing " + BINARY])
    with pytest.raises(ArgvError, match="--help could not be read"):
        render_argv(plan, broken, BINARY)


def test_parallel_slots_multiply_c(tmp_path: Path) -> None:
    plan = plan_server(h100_host(tmp_path), llama8b(), settings(parallel=2), KEY_FILE)
    assert context_tokens(plan) == 16384
    assert pairs(argv_of(plan))["-c"] == "16384" and pairs(argv_of(plan))["-np"] == "2"


# --- explain ------------------------------------------------------------------------------------


def test_explain_lists_every_decision_with_flag_value_and_reason(tmp_path: Path) -> None:
    chosen = settings(context_size=32768, fit_target_mib=77559)
    plan = plan_server(h100_host(tmp_path), llama8b(), chosen, KEY_FILE)
    table = explain(plan)
    lines = table.splitlines()
    assert lines[0].split() == ["flag", "value", "reason"]
    assert any(line.startswith("--fit on ") and "fit" in line for line in lines)
    assert any(line.startswith("-ctk/-ctv") and " f16 " in line for line in lines)
    assert any(line.startswith("--fit-target") and "77559" in line for line in lines)
    words = " ".join(table.split())  # reasons wrap
    assert "f16 6.8 vs q8_0 5.8" in words and "set in settings" in table
    assert all(len(line) <= 100 for line in lines if not line.lstrip().startswith("/"))


def test_explain_cpu_plan(tmp_path: Path) -> None:
    table = explain(plan_server(debian_host(tmp_path), llama8b(), settings(), KEY_FILE))
    words = " ".join(table.split())  # reasons wrap
    assert "-ngl 0 --fit off" in table and "nvidia-smi is not installed" in words
