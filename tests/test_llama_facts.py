"""llama.cpp facts: the parsers on real recordings of llama.cpp 0c1e570, and the real commands run
here against a missing binary, a failing one, a stand-in that prints the recordings, and build
trees made in a temporary directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import FIXTURES, fixture_text, read_fact

from llmtune.facts.llama import (
    LlamaBuilds,
    LlamaServerHelp,
    LlamaServerHelpValue,
    LlamaVersion,
    LlamaVersionValue,
    parse_help,
)
from llmtune.facts.probe import MARK

RECORDINGS = FIXTURES / "llama.cpp"


def help_lines(kind: str = "cpu") -> list[str]:
    return fixture_text("llama.cpp", f"llama-server-help-0c1e570-{kind}.txt").splitlines()


def cuda_startup_lines() -> list[str]:
    """The stderr a CUDA build prints first (recorded before llama-bench's help)."""
    lines = fixture_text("llama.cpp", "llama-bench-help-0c1e570.txt").splitlines()
    startup = lines[: next(i for i, line in enumerate(lines) if line.startswith("usage:"))]
    assert startup[0].startswith("ggml_cuda_init: found 1 CUDA devices")
    return startup


def as_tool_output(lines: list[str], rc: int = 0) -> list[str]:
    return [*lines, f"{MARK}rc {rc}"]


@pytest.fixture(scope="module")
def server_help() -> LlamaServerHelpValue:
    return LlamaServerHelp().process(as_tool_output(help_lines("cpu")))


def test_help_parses_every_option_of_the_recording(server_help: LlamaServerHelpValue) -> None:
    text = help_lines()
    heads = [line for line in text if line.startswith("-") and not line.startswith("-----")]
    assert server_help.installed and server_help.rc == 0 and server_help.reason == ""
    assert len(server_help.options) == len(heads) == 255
    spellings = [s for opt in server_help.options for s in opt.spellings]
    assert len(spellings) == len(set(spellings)), "one spelling, one option"
    assert {o.section for o in server_help.options} == {
        "common",
        "sampling",
        "speculative",
        "example-specific",
    }


def test_the_cuda_build_lists_the_same_options() -> None:
    # The help does not depend on the backend; a CUDA binary's start-up lines on stderr (merged
    # by the command) come first and are not options.
    cpu = LlamaServerHelp().process(as_tool_output(help_lines("cpu")))
    cuda = LlamaServerHelp().process(as_tool_output(cuda_startup_lines() + help_lines("cuda")))
    assert cuda == cpu


def test_loading_flags_of_this_version(server_help: LlamaServerHelpValue) -> None:
    # --no-mmap and --mlock are gone: the server exits on them. -lm/--load-mode replaces both.
    assert not server_help.has("--no-mmap")
    assert not server_help.has("--mlock")
    load = server_help.option("--load-mode")
    assert load is not None
    assert load.spellings == ("-lm", "--load-mode")
    assert load.placeholder == "MODE"
    assert load.choices == ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
    assert load.env == "LLAMA_ARG_LOAD_MODE"
    assert server_help.spelling_for("--no-mmap", "--load-mode") == "--load-mode"
    assert server_help.spelling_for("--mlock") is None


def test_fit_flags(server_help: LlamaServerHelpValue) -> None:
    fit = server_help.option("--fit")
    assert fit is not None and fit.spellings == ("-fit", "--fit")
    assert fit.placeholder == "[on|off]" and fit.choices == ("on", "off") and fit.takes_value
    assert fit.env == "LLAMA_ARG_FIT"
    target = server_help.option("-fitt")
    assert target is not None and target.spellings == ("-fitt", "--fit-target")
    assert target.placeholder == "MiB0,MiB1,MiB2,..." and target.choices == ()
    assert target.env == "LLAMA_ARG_FIT_TARGET"
    assert server_help.has("--fit-ctx") and server_help.has("--fit=on")


def test_server_flags_and_env_names(server_help: LlamaServerHelpValue) -> None:
    key_file = server_help.option("--api-key-file")
    assert key_file is not None
    assert (key_file.placeholder, key_file.env) == ("FNAME", "LLAMA_ARG_API_KEY_FILE")
    # Not every env name follows LLAMA_ARG_<FLAG>.
    envs = {
        "--api-key": "LLAMA_API_KEY",
        "--metrics": "LLAMA_ARG_ENDPOINT_METRICS",
        "--reasoning-format": "LLAMA_ARG_THINK",
        "--hf-token": "HF_TOKEN",
        "--mmproj-device": "MTMD_BACKEND_DEVICE",
        "-ngl": "LLAMA_ARG_N_GPU_LAYERS",
        "-np": "LLAMA_ARG_N_PARALLEL",
        "--port": "LLAMA_ARG_PORT",
        "--threads": "LLAMA_ARG_THREADS",
    }
    assert {flag: server_help.option(flag).env for flag in envs} == envs  # type: ignore[union-attr]
    assert server_help.option("--threads-batch").env == ""  # type: ignore[union-attr]
    ngl = server_help.option("--n-gpu-layers")
    assert ngl is not None and ngl.spellings == ("-ngl", "--gpu-layers", "--n-gpu-layers")
    assert ngl.placeholder == "N" and ngl.takes_value
    assert server_help.option("--n_gpu_layers") == ngl  # llama.cpp's own reading of "_"
    metrics = server_help.option("--metrics")
    assert metrics is not None and not metrics.takes_value


def test_choices_from_placeholders_and_help_text(server_help: LlamaServerHelpValue) -> None:
    def choices(flag: str) -> tuple[str, ...]:
        opt = server_help.option(flag)
        assert opt is not None, flag
        return opt.choices

    assert choices("-fa") == ("on", "off", "auto")
    kv_types = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
    assert choices("-ctk") == choices("--cache-type-v") == kv_types
    assert choices("-sm") == ("none", "layer", "row", "tensor")
    assert choices("--numa") == ("distribute", "isolate", "numactl")
    assert choices("--cpu-strict") == ("0", "1")
    assert "ngram-mod" in choices("--spec-type")
    # Ranges, lists and paths are not choices.
    for flag in ("--poll", "--device", "--tensor-split", "--model", "-hf", "--override-tensor"):
        assert choices(flag) == (), flag


def test_negations_removed_and_deprecated_flags(server_help: LlamaServerHelpValue) -> None:
    kvo = server_help.option("--no-kv-offload")
    assert kvo is not None
    assert kvo.spellings == ("-kvo", "--kv-offload", "-nkvo", "--no-kv-offload")
    # Listed, but "the argument has been removed": the binary refuses them.
    draft = server_help.option("--draft-max")
    assert draft is not None and draft.removed and not server_help.has("--draft-max")
    assert server_help.spelling_for("--draft-max", "--spec-draft-n-max") == "--spec-draft-n-max"
    defrag = server_help.option("-dt")
    assert defrag is not None and defrag.deprecated and server_help.has("-dt")
    # Old spellings kept as aliases of renamed options.
    assert server_help.option("-md") == server_help.option("--spec-draft-model")
    assert server_help.option("--webui") == server_help.option("--ui")


def test_help_of_a_failed_or_missing_binary() -> None:
    assert LlamaServerHelp().process([]) == LlamaServerHelp().default()
    assert not LlamaServerHelp().default().available
    missing = LlamaServerHelp().process([f"{MARK}missing /opt/x/llama-server"])
    assert not missing.installed and missing.reason == "not installed"
    crashed = LlamaServerHelp().process(
        as_tool_output(["error while loading shared libraries: libcuda.so.1"], rc=127)
    )
    assert crashed.installed and crashed.rc == 127 and not crashed.available
    assert crashed.reason.startswith("exit status 127: error while loading")
    assert parse_help([]) == ()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "cpu",
            LlamaVersionValue(
                installed=True,
                rc=0,
                version="0.5.0-dev",
                build_number=1,
                commit="0c1e570",
                compiler="GNU 12.2.0",
                target="Linux x86_64",
            ),
        ),
        (
            "cuda",
            LlamaVersionValue(
                installed=True,
                rc=0,
                version="0.5.0-dev",
                build_number=0,
                commit="unknown",
                compiler="GNU 13.3.0",
                target="Linux x86_64",
            ),
        ),
    ],
)
def test_version_recordings(kind: str, expected: LlamaVersionValue) -> None:
    lines = fixture_text("llama.cpp", f"llama-server-version-0c1e570-{kind}.txt").splitlines()
    if kind == "cuda":
        lines = cuda_startup_lines() + lines
    assert LlamaVersion().process(as_tool_output(lines)) == expected


def test_version_of_a_tarball_build_told_its_commit() -> None:
    # Built from the packed tarball (no .git) with -DLLAMA_BUILD_COMMIT/NUMBER.
    lines = fixture_text("llama.cpp", "llama-server-version-0c1e570-tarball-cpu.txt").splitlines()
    value = LlamaVersion().process(as_tool_output(lines))
    assert (value.commit, value.build_number, value.version) == ("0c1e570", 0, "0.5.0-dev")
    assert value.is_commit("0c1e57098bba43ac29e6e3b677cdceebdd22334f")


def test_version_commit_matching() -> None:
    lines = fixture_text("llama.cpp", "llama-server-version-0c1e570-cpu.txt").splitlines()
    built = LlamaVersion().process(as_tool_output(lines))
    assert built.commit_known and built.available
    assert built.is_commit("0c1e57098bba43ac29e6e3b677cdceebdd22334f")
    assert not built.is_commit("3aa0ce9bca8a21cf3e367be389a2d9a2718c4667")
    assert not built.is_commit("0c1e")  # too short to mean anything
    lines = fixture_text("llama.cpp", "llama-server-version-0c1e570-cuda.txt").splitlines()
    unknown = LlamaVersion().process(as_tool_output(lines))
    assert not unknown.commit_known and not unknown.is_commit("0c1e570")


def _stand_in(tmp_path: Path, script: str) -> str:
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_real_commands_against_a_missing_binary(tmp_path: Path) -> None:
    binary = str(tmp_path / "current" / "bin" / "llama-server")
    help_value = read_fact(LlamaServerHelp, binary=binary)
    assert not help_value.installed and not help_value.available
    assert help_value.reason == "not installed"
    version = read_fact(LlamaVersion, binary=binary)
    assert not version.installed and not version.available


def test_real_commands_against_a_failing_binary(tmp_path: Path) -> None:
    # What a CUDA build does on a host whose driver went away: the loader fails, status 127.
    binary = _stand_in(tmp_path, "echo 'error while loading shared libraries' >&2; exit 127\n")
    help_value = read_fact(LlamaServerHelp, binary=binary)
    assert help_value.installed and help_value.rc == 127 and not help_value.available
    assert "error while loading shared libraries" in help_value.reason


def test_real_commands_read_stdout_and_stderr(tmp_path: Path) -> None:
    # llama-server prints --help on stdout, --version and CUDA's start-up lines on stderr.
    startup = tmp_path / "startup.txt"
    startup.write_text("\n".join(cuda_startup_lines()) + "\n")
    binary = _stand_in(
        tmp_path,
        f'cat {startup} >&2\ncase "$1" in\n'
        f"--help) cat {RECORDINGS}/llama-server-help-0c1e570-cuda.txt ;;\n"
        f"--version) cat {RECORDINGS}/llama-server-version-0c1e570-cuda.txt >&2 ;;\n"
        "esac\n",
    )
    help_value = read_fact(LlamaServerHelp, binary=binary)
    assert help_value == LlamaServerHelp().process(as_tool_output(help_lines("cuda")))
    version = read_fact(LlamaVersion, binary=binary)
    assert (version.commit, version.build_number) == ("unknown", 0)


def _build_info(build_id: str, **extra: object) -> str:
    info = {
        "build_id": build_id,
        "ref": "0c1e570",
        "commit": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        "cmake_flags": [
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON",
            "-DGGML_CUDA=ON",
            "-DCMAKE_CUDA_ARCHITECTURES=90",
            "-DLLAMA_BUILD_COMMIT=0c1e57098bba43ac29e6e3b677cdceebdd22334f",
            "-DLLAMA_BUILD_NUMBER=0",
        ],
        "cuda_architectures": [90],
        "targets": ["llama-server", "llama-bench", "llama-quantize", "llama-fit-params"],
        "source": "pypi:llama-cpp-python==0.3.36",
        "cuda_version": "13.0",
        "driver": "580.159.04",
        "compiler": "c++ (Ubuntu 13.3.0-6ubuntu2~24.04) 13.3.0",
        "built_at": "2026-11-23T12:00:00Z",
        **extra,
    }
    # Indented, as the build script writes it.
    return json.dumps(info, indent=2)


def test_builds_of_an_empty_tree(tmp_path: Path) -> None:
    value = read_fact(LlamaBuilds, root=str(tmp_path))
    assert value == LlamaBuilds().default()
    assert value.builds == () and value.current == "" and value.current_build is None


def test_builds_current_incomplete_and_broken(tmp_path: Path) -> None:
    base = tmp_path / "opt" / "llmtune" / "llama.cpp"
    builds = base / "builds"
    cuda, cpu = "0c1e570-1a2b3c4d5e", "0c1e570-9f8e7d6c5b"
    for name, text in {
        cuda: _build_info(cuda),
        cpu: _build_info(cpu, cuda_architectures=[], build_number=7),
        "b1-broken": '{"build_id": "b1-bro',
    }.items():
        (builds / name).mkdir(parents=True)
        (builds / name / "build-info.json").write_text(text)
    # A build that never finished: no build-info.json, only its log.
    (builds / "b2-unfinished").mkdir()
    (builds / "b2-unfinished" / "build.log").write_text("[1/224] Building C object\n")
    (builds / "stray-file").write_text("not a build\n")
    os.symlink(f"builds/{cuda}", base / "current")

    value = read_fact(LlamaBuilds, root=str(tmp_path))
    assert value.current_target == f"builds/{cuda}" and value.current == cuda
    assert [b.dir for b in value.builds] == [cuda, cpu, "b1-broken", "b2-unfinished"]  # sorted
    assert [b.dir for b in value.complete] == sorted([cuda, cpu])
    current = value.current_build
    assert current is not None and current.complete
    assert current.commit == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert current.ref == "0c1e570"
    assert current.cuda_architectures == (90,)
    assert current.build_number == 0  # from -DLLAMA_BUILD_NUMBER, the script writes no key
    assert current.cmake_flags[0] == "-DCMAKE_BUILD_TYPE=Release"
    assert current.info["driver"] == "580.159.04"
    assert current.built_at == "2026-11-23T12:00:00Z"
    other = value.get(cpu)
    assert other is not None and other.build_number == 7 and other.cuda_architectures == ()
    broken = value.get("b1-broken")
    assert broken is not None and not broken.complete and "not JSON" in broken.error
    unfinished = value.get("b2-unfinished")
    assert unfinished is not None and not unfinished.complete and unfinished.error == ""
    assert value.get("stray-file") is None


def test_builds_with_a_dangling_current(tmp_path: Path) -> None:
    base = tmp_path / "srv" / "llama"
    base.mkdir(parents=True)
    os.symlink("builds/gone", base / "current")
    value = read_fact(LlamaBuilds, root=str(tmp_path), root_dir="/srv/llama")
    assert value.current == "gone" and value.current_build is None and value.builds == ()
