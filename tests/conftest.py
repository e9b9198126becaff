"""Shared test helpers: recorded fixtures, and running a fact's real command on a recorded tree."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
HOSTS = FIXTURES / "hosts"


def fixture_text(*parts: str) -> str:
    return FIXTURES.joinpath(*parts).read_text()


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{absolute host path: content}`` under ``root`` (a stand-in /sys or /proc)."""
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return root


def run_command(command: str) -> list[str]:
    """Run a fact command the way the local collector does; it must exit 0."""
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def read_fact(fact_cls: type, **kwargs: Any) -> Any:
    """Run the fact's command (e.g. with ``root=`` a recorded tree) and parse it."""
    fact = fact_cls()
    return fact.process(run_command(fact.command(**kwargs)))


@pytest.fixture
def tree(tmp_path: Path):
    def build(files: dict[str, str]) -> str:
        return str(make_tree(tmp_path / "root", files))

    return build
