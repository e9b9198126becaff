"""llama.cpp built for real from the offline source in a Debian 12 systemd host, over SSH:
a CPU build, no rebuild on a second apply, a build made to fail leaves the previous build
current and working, a second build and a rollback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hosts import fleet_fixture

from llmtune.ops.llama_build import DEFAULT_PREFIX

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parent.parent
SOURCE_CACHE = Path(os.environ.get("LLMTUNE_TEST_CACHE", "/var/tmp/llmtune-test")) / "llama-source"
fleet = fleet_fixture(1, names=["builder"])


@pytest.fixture(scope="module")
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


def apply(tmp_path: Path, fleet, tarball: Path, deploy: str = "llama_cpp", **settings):
    host = fleet[0]
    (tmp_path / "group_vars").mkdir(exist_ok=True)
    commit = json.loads(tarball.with_name(tarball.name[:-7] + ".json").read_text())["commit"]
    values = {"llama_cpp_source_tarball": str(tarball), "llama_cpp_ref": commit[:7], **settings}
    (tmp_path / "group_vars" / "all.yaml").write_text(
        "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items())
    )
    (tmp_path / "inv.py").write_text(
        "from llmtune.inventory import group\n"
        f"builders = group(__file__, 'builders', [{host.pyinfra_host()!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", str(tmp_path / "inv.py"), f"deploys/{deploy}.py", "-y"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    return proc, proc.stdout + proc.stderr


def current(fleet) -> str:
    return fleet[0].run(["readlink", f"{DEFAULT_PREFIX}/current"], check=False).stdout.strip()


def server_version(fleet) -> str:
    proc = fleet[0].run([f"{DEFAULT_PREFIX}/current/bin/llama-server", "--version"], check=False)
    return proc.stdout + proc.stderr


def test_cpu_build_then_no_rebuild_then_failed_build_then_rollback(tmp_path, fleet, tarball):
    proc, out = apply(tmp_path, fleet, tarball)
    assert proc.returncode == 0, out[-4000:]
    assert "llmtune: building" in out  # progress shown while it builds
    first = current(fleet)
    assert first.startswith("builds/")
    info = json.loads(fleet[0].read(f"{DEFAULT_PREFIX}/current/build-info.json"))
    assert info["cuda_architectures"] == [] and "-DGGML_NATIVE=ON" in info["cmake_flags"]
    version = server_version(fleet)
    assert info["commit"][:7] in version, version  # --version names the tarball's commit
    print(f"EVIDENCE first build: {first}; {version.strip().splitlines()[0]}")

    proc, out = apply(tmp_path, fleet, tarball)
    # Same ref and flags: the deploy finds the build current and runs nothing.
    assert proc.returncode == 0 and "llmtune: building" not in out
    assert re.search(r"Grand total\s+\S+\s+-\s", out), out[-2000:]
    assert current(fleet) == first

    proc, out = apply(
        tmp_path, fleet, tarball, llama_cpp_cmake_extra=["-DCMAKE_CXX_COMPILER=/no/such/c++"]
    )
    assert proc.returncode != 0 and "current build unchanged" in out
    assert current(fleet) == first and "version" in server_version(fleet)

    proc, out = apply(tmp_path, fleet, tarball, llama_cpp_ref="1234567")
    assert proc.returncode != 0 and "pins 1234567" in out and current(fleet) == first

    proc, out = apply(tmp_path, fleet, tarball, llama_cpp_cmake_extra=["-DLLMTUNE_TEST_VARIANT=2"])
    assert proc.returncode == 0, out[-4000:]
    second = current(fleet)
    assert second != first and "version" in server_version(fleet)

    proc, out = apply(tmp_path, fleet, tarball, deploy="llama_cpp_rollback")
    assert proc.returncode == 0, out[-3000:]
    assert current(fleet) == first
    print(f"EVIDENCE rollback: {second} -> {first}")
