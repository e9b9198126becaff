"""``llmtune plan`` end to end on this machine: a real GGUF model written by the project, the
recorded llama-server --help (served by a stand-in binary), this machine's real facts."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

from llmtune.synthetic_model import SHAPES, write_model

HELP = FIXTURES / "llama.cpp" / "llama-server-help-0c1e570-cpu.txt"
OLD_HELP = FIXTURES / "public" / "llama-server-help-old-mlock-no-mmap" / "llama-server-help.txt"


def stand_in(tmp_path: Path, help_file: Path) -> str:
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n[ "$1" = --help ] && cat {help_file}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_model(path, SHAPES["tiny"])
    return path


def plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtune", "plan", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plan_shows_argv_and_reasons(tmp_path: Path, model: Path) -> None:
    binary = stand_in(tmp_path, HELP)
    proc = plan("--model", str(model), "--binary", binary)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.strip().splitlines()[-1].split()
    assert argv[0] == binary and argv[argv.index("-m") + 1] == str(model)
    assert argv[argv.index("--port") + 1] == "8080" and "--api-key-file" in argv
    assert argv[argv.index("-lm") + 1] == "mlock" and "--no-mmap" not in argv
    assert "the model's trained context" in proc.stdout  # a reason per flag


def test_plan_spells_flags_for_an_old_binary(tmp_path: Path, model: Path) -> None:
    proc = plan("--model", str(model), "--binary", stand_in(tmp_path, OLD_HELP), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "llmtune.plan/v1"
    assert "--mlock" in data["argv"] and "--no-mmap" in data["argv"] and "-lm" not in data["argv"]
    assert {d["setting"] for d in data["decisions"]} >= {"placement", "kv_cache", "threads"}


def test_plan_refuses_a_flag_the_binary_lacks(tmp_path: Path, model: Path) -> None:
    settings = tmp_path / "host.yaml"
    settings.write_text(f"model_path: {model}\nserver_extra_args: ['--no-such-flag']\n")
    proc = plan("--settings", str(settings), "--binary", stand_in(tmp_path, HELP))
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr


def test_plan_names_a_missing_or_bad_model(tmp_path: Path) -> None:
    binary = stand_in(tmp_path, HELP)
    missing = plan("--model", str(tmp_path / "none.gguf"), "--binary", binary)
    assert missing.returncode == 2 and "model_path" in missing.stderr
    assert "No such file" in missing.stderr
    settings = tmp_path / "bad.yaml"
    settings.write_text("server_port: 99999\n")
    bad = plan("--settings", str(settings))
    assert bad.returncode == 2 and "server_port" in bad.stderr and str(settings) in bad.stderr
