"""BLD001-BLD003 and the facts they read: builds on disk, the running llama-server processes (real
processes here, read through the real /proc) and the CUDA code in the library (recorded on the
H100 machine)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, read_fact

from llmtune.checks.build import llama_cpp_cuda_archs, llama_cpp_pinned, llama_server_current
from llmtune.checks.registry import FactValues
from llmtune.facts.gpu import NvidiaGpus, parse_nvidia_gpus
from llmtune.facts.llama import LlamaBuilds
from llmtune.facts.llama_cuda import LlamaCudaCode, LlamaCudaCodeValue
from llmtune.facts.llama_runtime import LlamaServerProcesses, LlamaServerProcessesValue
from llmtune.findings import Status
from llmtune.settings import HostSettings

SETTINGS = HostSettings()
H100_GPUS = parse_nvidia_gpus(
    (FIXTURES / "recorded" / "gpu" / "h100-vm" / "fact-nvidia-gpus.txt").read_text().splitlines()
)
COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
PYTHON = "/usr/bin/python3"
SCRIPT = ("-c", "import time; time.sleep(300)")


def write_build(prefix: Path, build_id: str, ref: str = "0c1e570", **extra: object) -> Path:
    """A build directory as llmtune.ops.llama_build leaves it (bin -> build/bin, info last)."""
    build = prefix / "builds" / build_id
    (build / "build" / "bin").mkdir(parents=True)
    (build / "bin").symlink_to("build/bin")
    info = {
        "build_id": build_id,
        "ref": ref,
        "commit": COMMIT,
        "cmake_flags": ["-DGGML_NATIVE=ON", "-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90"],
        "cuda_architectures": [90],
        **extra,
    }
    (build / "build-info.json").write_text(json.dumps(info, indent=2))
    return build


def switch(prefix: Path, build_id: str) -> None:
    (prefix / "current.new").symlink_to(f"builds/{build_id}")
    os.replace(prefix / "current.new", prefix / "current")


def builds_facts(prefix: Path, more: dict[type, object] | None = None) -> FactValues:
    return FactValues({LlamaBuilds: read_fact(LlamaBuilds, root_dir=str(prefix)), **(more or {})})


# --- BLD001: the pinned ref ---


def test_pinned_build_passes_and_other_ref_fails(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-aaaa")
    write_build(tmp_path, "b8149-bbbb", ref="b8149", commit="1a2b3c4d")
    switch(tmp_path, "0c1e570-aaaa")
    ok = llama_cpp_pinned(builds_facts(tmp_path), SETTINGS)
    assert ok.status is Status.PASS, ok
    assert "0c1e570-aaaa" in ok.observed and COMMIT[:12] in ok.observed

    switch(tmp_path, "b8149-bbbb")
    bad = llama_cpp_pinned(builds_facts(tmp_path), SETTINGS)
    assert bad.status is Status.FAIL
    assert "ref b8149" in bad.observed and bad.expected == "llama_cpp_ref 0c1e570"
    # A complete build of the pin is still there: going back is the fix, not a rebuild.
    assert "llama_cpp_rollback.py" in bad.fix


def test_pin_with_other_source_commit_fails(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-aaaa", commit="deadbeef" * 5)
    switch(tmp_path, "0c1e570-aaaa")
    bad = llama_cpp_pinned(builds_facts(tmp_path), SETTINGS)
    assert bad.status is Status.FAIL and "not commit 0c1e570" in bad.observed
    assert "deploys/llama_cpp.py" in bad.fix


def test_no_build_skips_and_broken_current_fails(tmp_path: Path) -> None:
    assert llama_cpp_pinned(builds_facts(tmp_path), SETTINGS).status is Status.SKIP
    no_build = HostSettings(llama_cpp_build=False)
    assert llama_cpp_pinned(builds_facts(tmp_path), no_build).status is Status.SKIP
    # current names a directory whose build never finished (no build-info.json).
    (tmp_path / "builds" / "0c1e570-cccc").mkdir(parents=True)
    switch(tmp_path, "0c1e570-cccc")
    broken = llama_cpp_pinned(builds_facts(tmp_path), SETTINGS)
    assert broken.status is Status.FAIL and "not a complete build" in broken.observed


# --- BLD002: CUDA code for every GPU ---


def cuda_code(name: str) -> LlamaCudaCodeValue:
    """The fact's real output on the H100 machine (recorded there, see SOURCE.md)."""
    lines = (FIXTURES / "recorded" / "llama-build" / name).read_text().splitlines()
    return LlamaCudaCode().process(lines)


def test_library_read_on_the_h100_has_sm_90() -> None:
    code = cuda_code("fact-llama-cuda-code-h100.txt")
    assert code.available, code.reason
    assert code.library.endswith("/current/bin/libggml-cuda.so")
    assert code.sass_for(90)


def test_h100_build_passes(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-aaaa")
    switch(tmp_path, "0c1e570-aaaa")
    code = cuda_code("fact-llama-cuda-code-h100.txt")
    facts = builds_facts(tmp_path, {NvidiaGpus: H100_GPUS, LlamaCudaCode: code})
    outcome = llama_cpp_cuda_archs(facts, SETTINGS)
    assert outcome.status is Status.PASS, outcome
    assert "SASS 90" in outcome.observed and outcome.details == (
        "sm_90 (NVIDIA H100 80GB HBM3): SASS 90",
    )


def test_build_for_another_arch_or_cpu_fails(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-89", cuda_architectures=[89])
    write_build(tmp_path, "0c1e570-cpu", cuda_architectures=[])
    switch(tmp_path, "0c1e570-89")
    code = cuda_code("fact-llama-cuda-code-h100.txt")
    more = {NvidiaGpus: H100_GPUS, LlamaCudaCode: code}
    wrong = llama_cpp_cuda_archs(builds_facts(tmp_path, more), SETTINGS)
    assert wrong.status is Status.FAIL and "CMAKE_CUDA_ARCHITECTURES=89" in wrong.observed
    switch(tmp_path, "0c1e570-cpu")
    cpu = llama_cpp_cuda_archs(builds_facts(tmp_path, more), SETTINGS)
    assert cpu.status is Status.FAIL and "CPU build" in cpu.observed
    # The owner chose a CPU build: nothing to check.
    off = llama_cpp_cuda_archs(builds_facts(tmp_path, more), HostSettings(llama_cpp_cuda="off"))
    assert off.status is Status.SKIP


def test_library_without_native_code_warns_or_fails(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-aaaa")
    switch(tmp_path, "0c1e570-aaaa")
    lib = "/opt/llmtune/llama.cpp/current/bin/libggml-cuda.so"

    def outcome(code: LlamaCudaCodeValue):
        facts = builds_facts(tmp_path, {NvidiaGpus: H100_GPUS, LlamaCudaCode: code})
        return llama_cpp_cuda_archs(facts, SETTINGS)

    # build-info.json says 90, but the library has only PTX for 8.0: runs through the JIT.
    jit = outcome(LlamaCudaCodeValue(True, library=lib, sass=("80",), ptx=("80",)))
    assert jit.status is Status.WARN and "JIT" in jit.observed
    # Only code for a later architecture: nothing that runs on the H100.
    dead = outcome(LlamaCudaCodeValue(True, library=lib, sass=("100",)))
    assert dead.status is Status.FAIL and "no code that runs on sm_90" in dead.observed
    # cuobjdump missing: build-info.json alone, said so.
    unread = outcome(LlamaCudaCodeValue(False, reason="cuobjdump is not installed"))
    assert unread.status is Status.PASS and "library not read" in unread.observed


def test_no_gpu_skips(tmp_path: Path) -> None:
    no_gpu = parse_nvidia_gpus(
        (FIXTURES / "recorded" / "gpu" / "debian12-vm" / "fact-nvidia-gpus.txt")
        .read_text()
        .splitlines()
    )
    facts = builds_facts(tmp_path, {NvidiaGpus: no_gpu})
    assert llama_cpp_cuda_archs(facts, SETTINGS).status is Status.SKIP


def test_cuda_code_fact_without_a_build(tmp_path: Path) -> None:
    value = read_fact(LlamaCudaCode, root_dir=str(tmp_path / "none"))
    assert not value.available and "no current llama.cpp build" in value.reason


# --- BLD003 and the process fact: real processes through the real /proc ---


@pytest.fixture
def stand_in_server(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process named llama-server, started from build A's binary: a copy of the system's
    python3, which ignores the arguments after its script (they are llama-server's flags)."""
    prefix = tmp_path / "llama.cpp"
    binary = write_build(prefix, "0c1e570-aaaa") / "build" / "bin" / "llama-server"
    shutil.copy(PYTHON, binary)
    switch(prefix, "0c1e570-aaaa")
    # Started through the current symlink, as the unit does: argv[0] names current, exe the build.
    argv0 = str(prefix / "current" / "bin" / "llama-server")
    proc = subprocess.Popen([argv0, *SCRIPT, "--port", "8080", "--api-key-file", "/k y"])
    try:
        for _ in range(100):  # the exec has happened once comm is the new name
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "llama-server":
                break
            time.sleep(0.01)
        yield prefix, proc
    finally:
        proc.kill()
        proc.wait()


def running(prefix: Path, pid: int) -> LlamaServerProcessesValue:
    value = read_fact(LlamaServerProcesses, root_dir=str(prefix))
    assert pid in {p.pid for p in value.processes}
    # Other llama-servers of this machine (none in CI) are left out of the comparison.
    return LlamaServerProcessesValue(
        value.current_binary, tuple(p for p in value.processes if p.pid == pid)
    )


def test_process_fact_reads_a_real_process(stand_in_server) -> None:
    prefix, proc = stand_in_server
    value = running(prefix, proc.pid)
    build_binary = str((prefix / "builds/0c1e570-aaaa/build/bin/llama-server").resolve())
    assert value.current_binary == build_binary
    (p,) = value.processes
    assert p.exe == build_binary and not p.exe_deleted
    assert p.argv == (str(prefix / "current/bin/llama-server"), *SCRIPT, "--port", "8080",
                      "--api-key-file", "/k y")  # fmt: skip
    assert p.option("--port") == "8080" and p.option("--api-key-file") == "/k y"
    assert p.option("--metrics") is None
    assert p.cpus_allowed == tuple(sorted(os.sched_getaffinity(proc.pid)))
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    as_fact = lambda v: None if v == resource.RLIM_INFINITY else v  # noqa: E731
    assert (p.memlock_soft, p.memlock_hard) == (as_fact(soft), as_fact(hard))
    assert p.vm_rss_kib > 0

    outcome = llama_server_current(FactValues({LlamaServerProcesses: value}), SETTINGS)
    assert outcome.status is Status.PASS and str(proc.pid) in outcome.observed


def test_server_after_a_switch_without_restart_fails(stand_in_server) -> None:
    prefix, proc = stand_in_server
    new = write_build(prefix, "0c1e570-bbbb") / "build" / "bin" / "llama-server"
    shutil.copy(PYTHON, new)
    switch(prefix, "0c1e570-bbbb")
    stale = llama_server_current(
        FactValues({LlamaServerProcesses: running(prefix, proc.pid)}), SETTINGS
    )
    assert stale.status is Status.FAIL and stale.fix == "sudo systemctl restart llama-server"
    assert "0c1e570-aaaa" in stale.details[0]

    # The old build pruned while the server still runs it.
    shutil.rmtree(prefix / "builds" / "0c1e570-aaaa")
    pruned = llama_server_current(
        FactValues({LlamaServerProcesses: running(prefix, proc.pid)}), SETTINGS
    )
    assert pruned.status is Status.FAIL and "deleted" in pruned.details[0]


def test_no_server_or_no_build_skips(tmp_path: Path) -> None:
    write_build(tmp_path, "0c1e570-aaaa")
    switch(tmp_path, "0c1e570-aaaa")
    # A build whose binary does not exist resolves nowhere: nothing llmtune runs to compare.
    none = read_fact(LlamaServerProcesses, root_dir=str(tmp_path / "missing"))
    assert none.current_binary == ""
    skip = llama_server_current(FactValues({LlamaServerProcesses: none}), SETTINGS)
    assert skip.status is Status.SKIP
    idle = LlamaServerProcessesValue(current_binary="/opt/x/llama-server", processes=())
    assert llama_server_current(FactValues({LlamaServerProcesses: idle}), SETTINGS).status is (
        Status.SKIP
    )


def test_cuda_code_of_a_binary_without_device_code() -> None:
    """cuobjdump on a file with host code only (recorded: exit status 255): a CPU build."""
    recorded = FIXTURES / "recorded" / "llama-build" / "cuobjdump-list-elf-cpu-binary.txt"
    lines = recorded.read_text().splitlines()
    tool_lines = [ln for ln in lines if not ln.startswith(("$ ", "rc="))]
    rc = next(ln for ln in lines if ln.startswith("rc="))[3:]
    binary = "/opt/llmtune/llama.cpp/current/bin/llama-server"
    output = ["@@llmtune section lib", "dir", f"lib={binary}"]
    for kind in ("elf", "ptx"):
        output += [f"@@llmtune section {kind}", *tool_lines, f"@@llmtune rc {rc}"]
    value = LlamaCudaCode().process(output)
    assert value.available and value.library == binary
    assert value.sass == () and value.ptx == ()


def test_the_recorded_build_record_reads_as_the_h100_build(tmp_path: Path) -> None:
    info = (FIXTURES / "recorded" / "llama-build" / "build-info-h100.json").read_text()
    build = tmp_path / "builds" / "0c1e570-ef071a1f58"
    build.mkdir(parents=True)
    (build / "build-info.json").write_text(info)
    switch(tmp_path, "0c1e570-ef071a1f58")
    code = cuda_code("fact-llama-cuda-code-h100.txt")
    facts = builds_facts(tmp_path, {NvidiaGpus: H100_GPUS, LlamaCudaCode: code})
    assert llama_cpp_pinned(facts, SETTINGS).status is Status.PASS
    outcome = llama_cpp_cuda_archs(facts, SETTINGS)
    assert outcome.status is Status.PASS
    assert outcome.observed.endswith("libggml-cuda.so: SASS 90; PTX 90")
