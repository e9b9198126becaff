"""What can change llama.cpp's speed on a host, recorded with every bench run.

A benchmark number alone cannot explain a regression; the same number next to "llama.cpp
0c1e570 -> abcdef1" or "governor performance -> powersave" can. ``take_snapshot`` reduces the
facts the doctor already reads to those settings; ``diff`` says what differs between two runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from llmtune.facts.cpu import CpuFreqValue
from llmtune.facts.cuda import CudaToolkitValue
from llmtune.facts.gpu import NvidiaGpusValue
from llmtune.facts.host import HostInfoValue
from llmtune.facts.llama import LlamaBuildsValue, LlamaVersionValue
from llmtune.facts.memory import MemoryModulesValue, ThpValue
from llmtune.facts.tuned import TunedStateValue

# The CMake flags that only restate the commit (the diff names the commit itself).
_COMMIT_FLAGS = ("-DLLAMA_BUILD_COMMIT=", "-DLLAMA_BUILD_NUMBER=")


@dataclass(frozen=True)
class Snapshot:
    """Example (the H100 VM after the deploy's CUDA build; a VM has no cpufreq or DMI table)::

    Snapshot(llama_commit="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
             build_id="0c1e570-ef071a1f58", cmake_flags=("-DCMAKE_BUILD_TYPE=Release", ...),
             gpu="NVIDIA H100 80GB HBM3", driver="580.159.04", cuda="13.0",
             kernel="6.18.44-fc-v657-gpu", governor="", epp="", thp="madvise",
             thp_defrag="madvise", tuned="", ram_speed="")

    "" is "not reported" (no GPU, no cpufreq, tuned not installed, no DMI table).
    """

    # The commit the installed build was made from (full SHA from build-info.json).
    llama_commit: str = ""
    build_id: str = ""
    cmake_flags: tuple[str, ...] = ()
    gpu: str = ""
    driver: str = ""
    # The toolkit's release (nvcc) on the host.
    cuda: str = ""
    kernel: str = ""
    # cpufreq of the CPUs the service runs on; several values are joined with ",".
    governor: str = ""
    epp: str = ""
    thp: str = ""
    thp_defrag: str = ""
    tuned: str = ""
    # The RAM's configured speed ("4800 MT/s"; "4800,5600 MT/s" when modules differ).
    ram_speed: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmake_flags"] = list(self.cmake_flags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Keys this version does not know are dropped; missing ones read as ""."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name == "cmake_flags":
                values[f.name] = tuple(str(v) for v in value) if isinstance(value, list) else ()
            else:
                values[f.name] = value if isinstance(value, str) else ""
        return cls(**values)


def _joined(values: Iterable[str | None]) -> str:
    return ",".join(sorted({v for v in values if v}))


def _gpus(gpus: NvidiaGpusValue) -> str:
    """The GPUs' names: "NVIDIA H100 80GB HBM3"; "2x NVIDIA H100 80GB HBM3" for two alike."""
    if not gpus.available:
        return ""
    counts = Counter(g.name for g in gpus.gpus if g.name)
    return ", ".join(name if n == 1 else f"{n}x {name}" for name, n in sorted(counts.items()))


def _ram_speed(modules: MemoryModulesValue) -> str:
    speeds = sorted({m.configured_mts for m in modules.populated if m.configured_mts})
    return f"{','.join(str(s) for s in speeds)} MT/s" if speeds else ""


def take_snapshot(
    *,
    builds: LlamaBuildsValue,
    gpus: NvidiaGpusValue,
    cuda: CudaToolkitValue,
    host: HostInfoValue,
    cpufreq: CpuFreqValue,
    thp: ThpValue,
    tuned: TunedStateValue,
    modules: MemoryModulesValue,
    version: LlamaVersionValue | None = None,
    cpus: Iterable[int] = (),
) -> Snapshot:
    """The snapshot from the facts' values.

    ``version`` (``llama-server --version``) gives the commit when the current build has no
    build-info.json (a build llmtune did not make). ``cpus``: the CPUs the service is pinned to
    (ServiceRecord.cpu_affinity); the governor and EPP of the others do not change its speed.
    """
    build = builds.current_build
    commit = build.commit if build is not None else ""
    if not commit and version is not None and version.commit_known:
        commit = version.commit
    wanted = set(cpus)
    freq = [c for c in cpufreq.cpus if not wanted or c.cpu in wanted]
    return Snapshot(
        llama_commit=commit,
        build_id=build.dir if build is not None else "",
        cmake_flags=build.cmake_flags if build is not None else (),
        gpu=_gpus(gpus),
        driver=gpus.driver if gpus.available else "",
        cuda=cuda.version if cuda.available else "",
        kernel=host.kernel,
        governor=_joined(c.governor for c in freq),
        epp=_joined(c.epp for c in freq),
        thp=thp.enabled or "",
        thp_defrag=thp.defrag or "",
        tuned=tuned.active_profile if tuned.available else "",
        ram_speed=_ram_speed(modules),
    )


# --- diff -----------------------------------------------------------------------------------

LABELS = {
    "llama_commit": "llama.cpp",
    "build_id": "build",
    "cmake_flags": "CMake flags",
    "gpu": "GPU",
    "driver": "driver",
    "cuda": "CUDA",
    "kernel": "kernel",
    "governor": "governor",
    "epp": "EPP",
    "thp": "THP",
    "thp_defrag": "THP defrag",
    "tuned": "tuned profile",
    "ram_speed": "RAM",
}
# Named even when unchanged ("driver unchanged"): the usual suspects of a regression, so a
# reader sees they were looked at.
ALWAYS_NAMED = ("llama_commit", "driver")


def short_commit(commit: str) -> str:
    return commit[:7]


def same_commit(a: str, b: str) -> bool:
    """Full and abbreviated SHAs of one commit are the same commit (build-info.json has the full
    SHA, ``--version`` often 7 characters)."""
    if not a or not b:
        return a == b
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def _shown(key: str, value: str) -> str:
    if not value:
        return "none"
    return short_commit(value) if key == "llama_commit" else value


def _flags_change(a: tuple[str, ...], b: tuple[str, ...]) -> str | None:
    """``-DGGML_CUDA_GRAPHS=ON -> -DGGML_CUDA_GRAPHS=OFF``: the flags only one side has, leaving
    out those that restate the commit."""
    a_own = [f for f in a if not f.startswith(_COMMIT_FLAGS)]
    b_own = [f for f in b if not f.startswith(_COMMIT_FLAGS)]
    removed = [f for f in a_own if f not in b_own]
    added = [f for f in b_own if f not in a_own]
    if not removed and not added:
        return None
    return f"{LABELS['cmake_flags']} {' '.join(removed) or 'none'} -> {' '.join(added) or 'none'}"


def diff(a: Snapshot, b: Snapshot) -> list[str]:
    """What changed from ``a`` (before) to ``b`` (after), in the order of ``LABELS``.

    Example: ``["llama.cpp 0c1e570 -> abcdef1", "driver unchanged", "governor performance ->
    powersave"]``. The build id is left out when the commit or the flags changed (it is made of
    them); the keys in ``ALWAYS_NAMED`` say "unchanged" when both runs report the same value.
    """
    changes: list[str] = []
    flags = _flags_change(a.cmake_flags, b.cmake_flags)
    for key, label in LABELS.items():
        if key == "cmake_flags":
            if flags:
                changes.append(flags)
            continue
        before, after = getattr(a, key), getattr(b, key)
        commit_changed = not same_commit(a.llama_commit, b.llama_commit)
        if key == "build_id" and (flags or commit_changed):
            continue
        changed = commit_changed if key == "llama_commit" else before != after
        if changed:
            changes.append(f"{label} {_shown(key, before)} -> {_shown(key, after)}")
        elif key in ALWAYS_NAMED and before:
            changes.append(f"{label} unchanged")
    return changes
