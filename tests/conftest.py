"""Shared test helpers: recorded fixtures, and running a fact's real command on a recorded tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent
SOURCE_CACHE = Path(os.environ.get("LLMTUNE_TEST_CACHE", "/var/tmp/llmtune-test")) / "llama-source"
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


@pytest.fixture(scope="session")
def tarball() -> Path:
    """The offline llama.cpp source (PyPI's llama-cpp-python sdist), made once and cached."""
    found = sorted(SOURCE_CACHE.glob("llama.cpp-*.tar.gz"))
    if not found:
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "llama_cpp_source.py"), str(SOURCE_CACHE)],
            check=True,
        )
        found = sorted(SOURCE_CACHE.glob("llama.cpp-*.tar.gz"))
    return found[0]
