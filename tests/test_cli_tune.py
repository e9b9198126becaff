"""``llmtune tune``'s command line refusals, before anything is measured: --confirm with options
that measure something else, and a --confirm file that names no configuration (the file's name
in the message). The measuring paths run end to end against real hosts in
tests/test_verify_rollout_container.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmtune.synthetic_model import SHAPES, write_model

FIXTURES = Path(__file__).parent / "fixtures" / "recorded" / "tune-report"


def tune(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    model = tmp_path / "tiny.gguf"
    if not model.exists():
        write_model(model, SHAPES["tiny"])
    settings = tmp_path / "s.yaml"
    settings.write_text(f"model_path: {model}\ncontext_size: 1024\n")
    return subprocess.run(
        [sys.executable, "-m", "llmtune", "tune", "--settings", str(settings), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )


def test_confirm_refuses_options_that_measure_something_else(tmp_path: Path) -> None:
    for extra in ("--exhaustive", "--references", "--resume"):
        proc = tune(tmp_path, "--confirm", str(FIXTURES / "c-tune.jsonl"), extra)
        assert proc.returncode == 2, proc.stderr
        assert "--confirm measures the files' finalists only" in proc.stderr
    assert not (tmp_path / "llmtune-tune.jsonl").exists()  # nothing measured, nothing written


def test_confirm_names_a_file_without_measurements(tmp_path: Path) -> None:
    started = tmp_path / "started.jsonl"
    started.write_text((FIXTURES / "s1-sweep.jsonl").read_text().splitlines()[0] + "\n")
    proc = tune(tmp_path, "--confirm", str(started))
    assert proc.returncode == 2
    assert f"--confirm: {started}: no measured configuration" in proc.stderr
    assert not (tmp_path / "llmtune-tune.jsonl").exists()


def test_confirm_needs_an_existing_file(tmp_path: Path) -> None:
    proc = tune(tmp_path, "--confirm", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "missing.jsonl" in proc.stderr
