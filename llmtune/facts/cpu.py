"""CPU facts: topology (sockets, cores, hybrid P/E cores) and frequency scaling (cpufreq).

Both read sysfs directly rather than ``lscpu``: the files are there on every Linux (lscpu is
not in minimal containers), the hybrid P/E lists exist only in sysfs, and one command then
runs unchanged over a recorded tree in tests (``root=``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from llmtune.facts.probe import (
    LlmtuneFact,
    c_locale,
    join,
    parse_grep_h,
    read_files,
    section,
    split_sections,
    sysroot,
)

CPU_DIR = "/sys/devices/system/cpu"
# Intel hybrid CPUs register one PMU per core type (kernel >= 5.13); each lists its CPUs.
PCORE_LIST = "/sys/devices/cpu_core/cpus"
ECORE_LIST = "/sys/devices/cpu_atom/cpus"
# Fallback hybrid detection: the per-CPU max clocks split into two groups with at least this
# relative gap. Turbo Boost Max 3.0 / AMD preferred cores differ by a few percent only (not
# hybrid); P vs E (or Zen 5 vs Zen 5c) differ by 25% and more.
HYBRID_MAX_FREQ_GAP = 0.15

_CPU_FILE = re.compile(r"/cpu(\d+)/(?:topology|cpufreq)/(\w+)$")


def parse_cpulist(text: str | None) -> tuple[int, ...]:
    """Parse a kernel cpulist (``0-11,16``) into sorted CPU numbers; garbage parts are ignored.

    >>> parse_cpulist("0-3,8,10-11")
    (0, 1, 2, 3, 8, 10, 11)
    """
    cpus: set[int] = set()
    for part in (text or "").replace("\n", ",").split(","):
        first, dash, last = part.strip().partition("-")
        try:
            if dash:
                start, end = int(first), int(last)
                # A wild range (a corrupt file) must not build a huge set.
                if 0 <= start <= end <= 65535:
                    cpus.update(range(start, end + 1))
            elif first:
                cpus.add(int(first))
        except ValueError:
            continue
    return tuple(sorted(c for c in cpus if c >= 0))


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist`: ``(0, 1, 2, 3, 8)`` -> ``0-3,8`` (taskset syntax)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _per_cpu(lines: list[str]) -> dict[int, dict[str, str]]:
    """``grep -H`` lines of per-CPU sysfs files -> ``{cpu: {file name: value}}``."""
    per_cpu: dict[int, dict[str, str]] = {}
    for path, values in parse_grep_h(lines).values.items():
        match = _CPU_FILE.search(path)
        if match and values:
            per_cpu.setdefault(int(match.group(1)), {})[match.group(2)] = values[0].strip()
    return per_cpu


def hybrid_by_max_freq(max_clock: Mapping[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split CPUs into (fast, slow) when their max clocks clearly form two groups, else ((), ()).

    "Clearly": the largest gap between neighbouring distinct max clocks is at least
    ``HYBRID_MAX_FREQ_GAP`` of the highest clock, and it is the only such gap (three tiers
    would be a guess).
    """
    if any(v <= 0 for v in max_clock.values()):
        return (), ()
    distinct = sorted(set(max_clock.values()))
    if len(distinct) < 2:
        return (), ()
    top = distinct[-1]
    big_gaps = [
        (low, high) for low, high in pairwise(distinct) if (high - low) >= HYBRID_MAX_FREQ_GAP * top
    ]
    if len(big_gaps) != 1:
        return (), ()
    threshold = big_gaps[0][1]
    fast = tuple(sorted(c for c, v in max_clock.items() if v >= threshold))
    slow = tuple(sorted(c for c, v in max_clock.items() if v < threshold))
    return fast, slow


@dataclass(frozen=True)
class CpuInfo:
    """One logical CPU. ``core_key`` identifies its physical core (its thread-siblings list)."""

    cpu: int
    core_id: int | None = None
    socket: int | None = None
    max_mhz: int | None = None
    core_key: str = ""


@dataclass(frozen=True)
class CpuTopologyValue:
    """Example (a 2-vCPU VM)::

    CpuTopologyValue(cpus=(CpuInfo(0, core_id=0, socket=0, core_key="0"),
                           CpuInfo(1, core_id=1, socket=0, core_key="1")))

    On an Intel hybrid CPU ``pcore_cpus``/``ecore_cpus`` hold the kernel's lists and
    ``hybrid_source="kernel (/sys/devices/cpu_core, cpu_atom)"``; from the max clocks it says
    ``"cpufreq max clocks"``; not hybrid: both empty and ``hybrid_source=""``.
    """

    cpus: tuple[CpuInfo, ...] = ()
    pcore_cpus: tuple[int, ...] = ()
    ecore_cpus: tuple[int, ...] = ()
    hybrid_source: str = ""

    @property
    def threads(self) -> int:
        """Logical CPUs (online)."""
        return len(self.cpus)

    @property
    def sockets(self) -> int:
        return len({c.socket for c in self.cpus if c.socket is not None}) or (1 if self.cpus else 0)

    @property
    def physical_cores(self) -> int:
        """Physical cores: distinct thread-siblings lists, else distinct (socket, core id)."""
        if self.cpus and all(c.core_key for c in self.cpus):
            # The siblings list is unique per core whatever the platform numbers core ids.
            return len({c.core_key for c in self.cpus})
        if all(c.core_id is not None for c in self.cpus):
            return len({(c.socket, c.core_id) for c in self.cpus})
        # Without topology files each CPU is all we know.
        return len(self.cpus)

    @property
    def hybrid(self) -> bool:
        return bool(self.pcore_cpus and self.ecore_cpus)

    @property
    def pcores(self) -> tuple[int, ...]:
        """The CPUs to run inference on: the P-cores on a hybrid CPU, else every CPU."""
        return self.pcore_cpus if self.hybrid else tuple(c.cpu for c in self.cpus)

    @property
    def pcore_physical_cores(self) -> int:
        """Physical cores among :attr:`pcores`: llama.cpp's ``-t`` (SMT siblings share a core)."""
        keys = {c.cpu: c.core_key or str(c.cpu) for c in self.cpus}
        return len({keys.get(cpu, str(cpu)) for cpu in self.pcores})


class CpuTopology(LlmtuneFact[CpuTopologyValue]):
    """Per-CPU core and package ids, max clocks, the online list and Intel's hybrid P/E lists."""

    def command(self, root: str = "") -> str:
        cpu = sysroot(root, CPU_DIR)
        return c_locale(
            join(
                section("online", read_files([f"{cpu}/online"])),
                section(
                    "cpus",
                    read_files(
                        [
                            f"{cpu}/cpu[0-9]*/topology/core_id",
                            f"{cpu}/cpu[0-9]*/topology/physical_package_id",
                            f"{cpu}/cpu[0-9]*/topology/thread_siblings_list",
                            f"{cpu}/cpu[0-9]*/cpufreq/cpuinfo_max_freq",
                        ]
                    ),
                ),
                section(
                    "hybrid", read_files([sysroot(root, PCORE_LIST), sysroot(root, ECORE_LIST)])
                ),
            )
        )

    def process(self, output: list[str]) -> CpuTopologyValue:
        parts = split_sections(output)
        online_files = parse_grep_h(parts.get("online", []))
        online_text = next(iter(online_files.values.values()), None)
        online = set(parse_cpulist("\n".join(online_text))) if online_text else None
        per_cpu = _per_cpu(parts.get("cpus", []))
        cpus = tuple(
            CpuInfo(
                cpu=n,
                core_id=_int(files.get("core_id")),
                socket=_int(files.get("physical_package_id")),
                max_mhz=(khz // 1000) if (khz := _int(files.get("cpuinfo_max_freq"))) else None,
                core_key=files.get("thread_siblings_list", ""),
            )
            for n, files in sorted(per_cpu.items())
            # An offline CPU's topology is stale; it cannot run anything either.
            if online is None or n in online
        )
        known = {c.cpu for c in cpus}

        hybrid_files = {
            path.rsplit("/", 2)[-2]: "\n".join(lines)
            for path, lines in parse_grep_h(parts.get("hybrid", [])).values.items()
        }
        # The kernel's lists may name offline CPUs; keep the usable ones (all, when per-CPU
        # topology could not be read).
        pcore = tuple(
            c for c in parse_cpulist(hybrid_files.get("cpu_core")) if c in known or not known
        )
        ecore = tuple(
            c for c in parse_cpulist(hybrid_files.get("cpu_atom")) if c in known or not known
        )
        if pcore and ecore:
            return CpuTopologyValue(cpus, pcore, ecore, "kernel (/sys/devices/cpu_core, cpu_atom)")
        fast, slow = hybrid_by_max_freq({c.cpu: c.max_mhz for c in cpus if c.max_mhz})
        if fast and slow and len(fast) + len(slow) == len(cpus):
            return CpuTopologyValue(cpus, fast, slow, "cpufreq max clocks")
        return CpuTopologyValue(cpus)


@dataclass(frozen=True)
class CpuFreqInfo:
    """One CPU's cpufreq state; clocks in MHz (sysfs gives kHz). None where a file is absent."""

    cpu: int
    driver: str | None = None
    governor: str | None = None
    epp: str | None = None
    cur_mhz: int | None = None
    max_mhz: int | None = None


@dataclass(frozen=True)
class CpuFreqValue:
    """Example (intel_pstate)::

    CpuFreqValue(cpus=(CpuFreqInfo(0, driver="intel_pstate", governor="powersave",
                                   epp="balance_power", cur_mhz=1699, max_mhz=4900), ...),
                 cpuinfo_mhz={0: 2599.996})

    In a VM there is no cpufreq: ``cpus=()`` (``available`` is False), ``cpuinfo_mhz`` holds
    the ``cpu MHz`` lines of /proc/cpuinfo, the only clock the guest sees, and ``hypervisor`` is
    True.
    """

    cpus: tuple[CpuFreqInfo, ...] = ()
    cpuinfo_mhz: dict[int, float] = field(default_factory=dict)
    # The x86 "hypervisor" CPU flag: a guest, even where systemd-detect-virt is missing.
    hypervisor: bool = False

    @property
    def available(self) -> bool:
        return bool(self.cpus)

    @property
    def drivers(self) -> tuple[str, ...]:
        return tuple(sorted({c.driver for c in self.cpus if c.driver}))

    def current_mhz(self, cpu: int) -> float | None:
        """The CPU's current clock: cpufreq's, else /proc/cpuinfo's ``cpu MHz``."""
        info = next((c for c in self.cpus if c.cpu == cpu), None)
        if info is not None and info.cur_mhz is not None:
            return float(info.cur_mhz)
        return self.cpuinfo_mhz.get(cpu)


def parse_cpuinfo_mhz(lines: Iterable[str]) -> dict[int, float]:
    """``processor`` / ``cpu MHz`` lines of /proc/cpuinfo -> ``{cpu: MHz}`` (x86 prints both)."""
    result: dict[int, float] = {}
    current: int | None = None
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        try:
            if key == "processor":
                current = int(value.strip())
            elif key == "cpu MHz" and current is not None:
                result[current] = float(value.strip())
        except ValueError:
            continue
    return result


CPUFREQ_FILES = (
    "scaling_driver",
    "scaling_governor",
    "energy_performance_preference",
    "scaling_cur_freq",
    "cpuinfo_max_freq",
)


class CpuFreq(LlmtuneFact[CpuFreqValue]):
    """Per-CPU scaling driver, governor, EPP, current and max clock; /proc/cpuinfo's cpu MHz."""

    def command(self, root: str = "") -> str:
        cpu = sysroot(root, CPU_DIR)
        cpuinfo = sysroot(root, "/proc/cpuinfo")
        return c_locale(
            join(
                section(
                    "cpufreq", read_files(f"{cpu}/cpu[0-9]*/cpufreq/{n}" for n in CPUFREQ_FILES)
                ),
                section(
                    "cpuinfo",
                    f"grep -s -E '^(processor|cpu MHz)[[:space:]]*:' {cpuinfo} 2>/dev/null; true",
                ),
                section(
                    "hypervisor",
                    f"grep -s -m1 -o -w hypervisor {cpuinfo} 2>/dev/null; true",
                ),
            )
        )

    def process(self, output: list[str]) -> CpuFreqValue:
        parts = split_sections(output)
        cpus = tuple(
            CpuFreqInfo(
                cpu=n,
                driver=files.get("scaling_driver") or None,
                governor=files.get("scaling_governor") or None,
                epp=files.get("energy_performance_preference") or None,
                cur_mhz=(khz // 1000) if (khz := _int(files.get("scaling_cur_freq"))) else None,
                max_mhz=(khz // 1000) if (khz := _int(files.get("cpuinfo_max_freq"))) else None,
            )
            for n, files in sorted(_per_cpu(parts.get("cpufreq", [])).items())
        )
        return CpuFreqValue(
            cpus,
            parse_cpuinfo_mhz(parts.get("cpuinfo", [])),
            hypervisor=any(line.strip() == "hypervisor" for line in parts.get("hypervisor", [])),
        )
