"""Checks of category build: the llama.cpp build llmtune made (deploys/llama_cpp.py).

They prove what the deploy did: the build is the pinned source (an unpinned rebuild cost one user
29% of decode speed, seed 001), it carries native code for every GPU in the host, and the running
server is the build ``current`` names (a switch without a restart serves the old binary).
Hosts without an llmtune build skip them.
"""

from __future__ import annotations

from llmtune.checks.registry import FactValues, check
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.llama import ROOT_DIR, LlamaBuild, LlamaBuilds, LlamaBuildsValue
from llmtune.facts.llama_cuda import LlamaCudaCode, LlamaCudaCodeValue
from llmtune.facts.llama_runtime import LlamaServerProcesses
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

DEPLOY_FIX = "pyinfra INVENTORY deploys/llama_cpp.py   # builds the pinned ref and switches to it"
ROLLBACK_FIX = "pyinfra INVENTORY deploys/llama_cpp_rollback.py   # back to the previous build"
RESTART_FIX = "sudo systemctl restart llama-server"
SOURCE = "issue 4 (pinned, native CUDA build); seed 001 (unpinned rebuild: -29% decode)"


def _current(builds: LlamaBuildsValue) -> tuple[LlamaBuild | None, Outcome | None]:
    """The current build, or the outcome that ends the check (skip: nothing to check)."""
    if not builds.builds and not builds.current_target:
        return None, skipped(f"no llmtune llama.cpp build on this host ({ROOT_DIR})")
    if not builds.current:
        return None, failed(
            f"{len(builds.complete)} complete build(s), but no 'current' symlink",
            "current -> builds/<id>",
            ROLLBACK_FIX if builds.complete else DEPLOY_FIX,
        )
    build = builds.current_build
    if build is None or not build.complete:
        why = build.error if build is not None and build.error else "no build-info.json"
        return None, failed(
            f"current -> {builds.current_target}: not a complete build ({why})",
            "current names a complete build",
            ROLLBACK_FIX if builds.complete else DEPLOY_FIX,
        )
    return build, None


def _describe(build: LlamaBuild) -> str:
    commit = build.commit[:12] or "unknown"
    return f"build {build.dir}: ref {build.ref or '?'}, commit {commit}"


@check(
    id="BLD001",
    name="llama-cpp-pinned",
    title="The llama.cpp build is the pinned ref",
    category="build",
    severity=Severity.HIGH,
    source=SOURCE,
    facts=(LlamaBuilds,),
)
def llama_cpp_pinned(facts: FactValues, settings: HostSettings) -> Outcome:
    if not settings.llama_cpp_build:
        return skipped("llama_cpp_build: false in the settings (llama.cpp not built by llmtune)")
    builds = facts[LlamaBuilds]
    build, end = _current(builds)
    if end is not None or build is None:
        return end or skipped("no current build")
    pin = settings.llama_cpp_ref
    expected = f"llama_cpp_ref {pin}"
    pinned = [b for b in builds.complete if b.ref == pin and b.dir != build.dir]
    fix = ROLLBACK_FIX if pinned else DEPLOY_FIX
    if build.ref != pin:
        return failed(_describe(build), expected, fix)
    is_commit = all(c in "0123456789abcdef" for c in pin)
    if is_commit and build.commit and not build.commit.startswith(pin):
        # The ref is right but the tree was another commit (a tarball of other source).
        return failed(f"{_describe(build)}: the source is not commit {pin}", expected, DEPLOY_FIX)
    return passed(_describe(build), expected)


def _gpu_archs(facts: FactValues) -> dict[int, list[str]]:
    """Compute capability as CMake spells it (8.9 -> 89) -> the GPUs that have it."""
    archs: dict[int, list[str]] = {}
    for gpu in facts[NvidiaGpus].gpus:
        if gpu.compute_cap:
            major, _, minor = gpu.compute_cap.partition(".")
            if major.isdigit() and minor.isdigit():
                archs.setdefault(int(major) * 10 + int(minor), []).append(gpu.name)
    return archs


def _compatible(code: LlamaCudaCodeValue, arch: int) -> str:
    """How a GPU of ``arch`` runs the library without native SASS: "" when it cannot."""
    # A cubin runs on later minor versions of its major architecture; PTX is JIT-compiled for any
    # later GPU. Both run, slower than native code (and the JIT at every cold start).
    lower_sass = [a for a in code.sass if code.arch_number(a) // 10 == arch // 10]
    lower_sass = [a for a in lower_sass if code.arch_number(a) < arch and not a[-1].isalpha()]
    if lower_sass:
        return f"SASS sm_{lower_sass[-1]} (binary-compatible, not tuned for sm_{arch})"
    ptx = [a for a in code.ptx if code.arch_number(a) <= arch and not a[-1].isalpha()]
    if ptx:
        return f"PTX compute_{ptx[-1]} (JIT-compiled by the driver at start)"
    return ""


@check(
    id="BLD002",
    name="llama-cpp-cuda-archs",
    title="The llama.cpp build has CUDA code for every GPU",
    category="build",
    severity=Severity.HIGH,
    source="issue 4; seed 004 §5.4 (CMAKE_CUDA_ARCHITECTURES for the installed cards)",
    facts=(NvidiaGpus, LlamaBuilds, LlamaCudaCode),
)
def llama_cpp_cuda_archs(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    if not gpus.available:
        return skipped(f"no NVIDIA GPU ({gpus.reason})" if gpus.reason else "no NVIDIA GPU")
    if settings.llama_cpp_cuda == "off":
        return skipped("llama_cpp_cuda: off in the settings (a CPU build by choice)")
    build, end = _current(facts[LlamaBuilds])
    if end is not None or build is None:
        return end or skipped("no current build")
    need = _gpu_archs(facts)
    if not need:
        return skipped("nvidia-smi reports no compute capability")
    want = ";".join(str(a) for a in sorted(need))
    expected = f"native code (SASS) for sm_{', sm_'.join(str(a) for a in sorted(need))}"
    recorded = set(build.cuda_architectures)
    missing_info = [a for a in sorted(need) if a not in recorded]
    if not recorded:
        return failed(
            f"build {build.dir} is a CPU build on a host with {len(facts[NvidiaGpus].gpus)} GPU(s)",
            expected,
            f"set llama_cpp_cuda: auto (or on), then {DEPLOY_FIX}",
        )
    if missing_info:
        return failed(
            f"build {build.dir} was made for CMAKE_CUDA_ARCHITECTURES="
            f"{';'.join(str(a) for a in sorted(recorded))}; GPUs need {want}",
            expected,
            f"{DEPLOY_FIX} (the planner adds every GPU's architecture)",
        )
    code = facts[LlamaCudaCode]
    if not code.available:
        # build-info.json already agrees; without cuobjdump the library itself cannot be read.
        return passed(
            f"build-info.json: CMAKE_CUDA_ARCHITECTURES={want} (library not read: {code.reason})",
            expected,
        )
    details = tuple(
        f"sm_{arch} ({', '.join(names)}): SASS {', '.join(code.sass_for(arch)) or 'none'}"
        for arch, names in sorted(need.items())
    )
    listed = f"SASS {', '.join(code.sass) or 'none'}; PTX {', '.join(code.ptx) or 'none'}"
    lacking = [a for a in sorted(need) if not code.sass_for(a)]
    if not lacking:
        return passed(f"{code.library}: {listed}", expected, details)
    runs = {a: _compatible(code, a) for a in lacking}
    if all(runs.values()):
        how = "; ".join(f"sm_{a} via {runs[a]}" for a in lacking)
        return warned(f"{code.library}: {listed}; {how}", expected, DEPLOY_FIX, details)
    dead = ", ".join(f"sm_{a}" for a in lacking if not runs[a])
    return failed(
        f"{code.library}: {listed}; no code that runs on {dead}", expected, DEPLOY_FIX, details
    )


@check(
    id="BLD003",
    name="llama-server-current",
    title="llama-server runs the current build",
    category="build",
    severity=Severity.MEDIUM,
    source="issue 4 (the service restarts after a build switch)",
    facts=(LlamaServerProcesses,),
)
def llama_server_current(facts: FactValues, settings: HostSettings) -> Outcome:
    running = facts[LlamaServerProcesses]
    if not running.current_binary:
        return skipped(f"no llmtune llama.cpp build on this host ({ROOT_DIR})")
    if not running.processes:
        return skipped("no llama-server is running")
    expected = f"every llama-server runs {running.current_binary}"
    unreadable = [p.pid for p in running.processes if not p.exe]
    if unreadable:
        return warned(
            f"cannot read /proc/PID/exe of pid {', '.join(map(str, unreadable))} (not root)",
            expected,
            "sudo llmtune doctor --only llama-server-current",
        )
    stale = [p for p in running.processes if p.exe_deleted or p.exe_path != running.current_binary]
    if not stale:
        pids = ", ".join(str(p.pid) for p in running.processes)
        return passed(f"pid {pids} runs {running.current_binary}", expected)
    details = tuple(
        f"pid {p.pid}: {p.exe_path}" + (" (deleted: a pruned build)" if p.exe_deleted else "")
        for p in stale
    )
    return failed(
        f"{len(stale)} llama-server process(es) run another binary than current",
        expected,
        RESTART_FIX,
        details,
    )
