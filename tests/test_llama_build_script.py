"""The llama.cpp build script run for real (bash, CMake, Ninja, a C++ compiler) on a small CMake
project with the same targets: completion marker, no second build, a failed build leaves the
current one working, new flags switch atomically, pruning and rollback.

The real llama.cpp build runs in the container tests; this one checks the script's own logic in
seconds.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from llmtune.facts.gpu import NvidiaGpusValue
from llmtune.ops.llama_build import BuildJob, build_info_fields, build_script, rollback_script
from llmtune.planner.build import TARGETS, plan_build

PROGRAM = r"""
#include <cstdio>
#include <cstring>
int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--help") == 0) { std::puts("--port PORT"); return 0; }
    std::puts("version: 1 (" BUILD_TAG ")");
    return 0;
}
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.cpp").write_text(PROGRAM)
    lines = [
        "cmake_minimum_required(VERSION 3.16)",
        "project(toy CXX)",
        "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)",
    ]
    for target in TARGETS:
        lines.append(f"add_executable({target} main.cpp)")
        lines.append(f'target_compile_definitions({target} PRIVATE BUILD_TAG="toy")')
    (src / "CMakeLists.txt").write_text("\n".join(lines) + "\n")
    return src


def run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = cwd / "job.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, check=False)


def test_build_switch_rebuild_failure_prune_and_rollback(tmp_path: Path, source: Path) -> None:
    prefix = tmp_path / "llama.cpp"
    cpu = plan_build(
        ref="b1",
        gpus=NvidiaGpusValue(available=False, reason="nvidia-smi is not installed"),
        cmake_options=(),
    )
    job = BuildJob(prefix=str(prefix), source_dir=str(source), plan=cpu, commit="abc", keep=1)

    first = run(build_script(job), tmp_path)
    assert first.returncode == 0, first.stderr
    assert "llmtune: building" in first.stdout  # progress lines while it builds
    current = prefix / "current"
    assert current.is_symlink() and str(current.readlink()) == f"builds/{cpu.build_id}"
    info = json.loads((current / "build-info.json").read_text())
    assert set(build_info_fields()) <= set(info)
    assert info["cmake_flags"] == list(cpu.cmake_flags) and info["commit"] == "abc"
    assert subprocess.run(
        [current / "bin" / "llama-server", "--help"], capture_output=True, text=True, check=True
    ).stdout.startswith("--port")

    log = prefix / "builds" / cpu.build_id / "build.log"
    before = log.stat().st_mtime_ns
    again = run(build_script(job), tmp_path)
    assert again.returncode == 0 and "complete already" in again.stdout
    assert log.stat().st_mtime_ns == before  # same ref and flags: nothing rebuilt

    broken = replace(cpu, cmake_flags=(*cpu.cmake_flags, "-DCMAKE_CXX_COMPILER=/no/such/c++"))
    failed = run(build_script(replace(job, plan=broken)), tmp_path)
    assert failed.returncode == 1 and "current build unchanged" in failed.stderr
    assert str(current.readlink()) == f"builds/{cpu.build_id}"
    assert (
        subprocess.run([current / "bin" / "llama-server", "--version"], check=False).returncode == 0
    )

    lto = plan_build(
        ref="b1",
        gpus=NvidiaGpusValue(available=False, reason="nvidia-smi is not installed"),
        cmake_options=(),
        lto=True,
    )
    newer = run(build_script(replace(job, plan=lto)), tmp_path)
    assert newer.returncode == 0, newer.stderr
    assert str(current.readlink()) == f"builds/{lto.build_id}"
    # The failed build's directory is gone; the previous complete one is kept (keep=1).
    assert sorted(p.name for p in (prefix / "builds").iterdir()) == sorted(
        [cpu.build_id, lto.build_id]
    )

    back = run(rollback_script(str(prefix)), tmp_path)
    assert back.returncode == 0 and "rolled back" in back.stdout
    assert str(current.readlink()) == f"builds/{cpu.build_id}"
