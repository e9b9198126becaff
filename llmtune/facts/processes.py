"""Process facts: which processes use the CPU right now (a short sample, not lifetime averages).

``ps aux --sort=-%cpu`` (seed 004 §22 #7) shows each process's CPU time divided by its age, so a
daemon that spun for an hour last week still looks busy and a hog that started a minute ago
looks idle. ``top -b`` samples properly but prints columns chosen by the user's toprc. So the
probe reads /proc/[pid]/stat twice, 0.25 s apart, with the /proc/stat CPU totals as the clock
(the same USER_HZ ticks as the per-process times).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale, join, section, split_sections, sysroot

SAMPLE_S = 0.25
# Kept in the value: enough to name every plausible hog without carrying the whole table.
MAX_LISTED = 20
# USER_HZ: the unit of /proc tick counters; 100 on every mainstream architecture.
USER_HZ = 100
# Processes that only wrap the probe command (pyinfra's sudo/sh layers); the doctor's own
# process tree is found above them.
WRAPPERS = frozenset({"sh", "bash", "dash", "zsh", "ash", "busybox", "sudo", "su", "doas"})


@dataclass(frozen=True)
class ProcessCpu:
    """One process over the sample window; ``cpu_percent`` is of one CPU (200 = two busy CPUs)."""

    pid: int
    name: str
    ppid: int
    cpu_percent: float


@dataclass(frozen=True)
class TopCpuProcessesValue:
    """Example::

    TopCpuProcessesValue(available=True, reason="", window_s=0.256, cpus=16,
                         processes=(ProcessCpu(416, "yes", 395, 100.0), ...))

    ``processes`` are the busiest first, only those that used any CPU, without the doctor's own
    processes (the probe, its wrappers, the doctor and its other probes). ``available`` is False,
    with ``reason``, when /proc could not be sampled.
    """

    available: bool = False
    reason: str = "no output"
    window_s: float = 0.0
    cpus: int = 0
    processes: tuple[ProcessCpu, ...] = ()


@dataclass(frozen=True)
class PidStat:
    """The parts of one /proc/[pid]/stat line the sample needs; ``ticks`` is utime + stime."""

    pid: int
    name: str
    ppid: int
    ticks: int


def parse_pid_stat(line: str) -> PidStat | None:
    """One /proc/[pid]/stat line; the name is in parentheses and may hold spaces and ``)``."""
    head, sep, rest = line.rpartition(")")
    pid_text, open_paren, name = head.partition(" (")
    fields = rest.split()
    if not sep or not open_paren or len(fields) < 13:
        return None
    try:
        # After the name: state(3) ppid(4) ... utime(14) stime(15), numbered as in proc(5).
        return PidStat(int(pid_text), name, int(fields[1]), int(fields[11]) + int(fields[12]))
    except ValueError:
        return None


def cpu_totals(lines: Iterable[str]) -> tuple[int, int] | None:
    """(total ticks of all CPUs, number of CPUs) from the ``cpu`` lines of /proc/stat."""
    total: int | None = None
    cpus = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name == "cpu":
            try:
                # user nice system idle iowait irq softirq steal; guest time is inside user.
                total = sum(int(v) for v in rest.split()[:8])
            except ValueError:
                return None
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    return (total, cpus) if total is not None and cpus else None


def _stats(lines: Iterable[str]) -> dict[int, PidStat]:
    parsed = (parse_pid_stat(line) for line in lines if not line.startswith("cpu"))
    return {s.pid: s for s in parsed if s is not None}


def own_processes(stats: dict[int, PidStat], probe: int) -> set[int]:
    """The doctor's processes: the probe's tree from its first ancestor that is not a wrapper.

    The probe runs under the local doctor, or under the SSH session that runs pyinfra's
    commands, possibly through ``sudo`` and ``sh -c`` layers: climb through those, then take the
    whole subtree (the doctor's other probes run there too). A shell with other children is not
    a wrapper of ours but someone's session or script: stop below it, so its jobs stay visible.
    """
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    anchor = probe
    seen = {probe}
    while anchor in stats:
        parent = stats[anchor].ppid
        # Never climb to init or the kernel: that would exclude every process.
        if parent <= 1 or parent not in stats or parent in seen:
            break
        wrapper = stats[parent].name in WRAPPERS
        if wrapper and children.get(parent, []) != [anchor]:
            break
        anchor = parent
        seen.add(parent)
        if not wrapper:
            break
    own: set[int] = set()
    todo = [anchor, probe]
    while todo:
        pid = todo.pop()
        if pid not in own:
            own.add(pid)
            todo.extend(children.get(pid, []))
    return own


class TopCpuProcesses(LlmtuneFact[TopCpuProcessesValue]):
    """CPU use of every process over a 0.25 s window, busiest first, without the doctor's own."""

    timeout_s = 5.0
    stable = False

    def command(self, root: str = "") -> str:
        stat = sysroot(root, "/proc/stat")
        pids = sysroot(root, "/proc") + "/[0-9]*/stat"
        # cat of a process that exits meanwhile fails for that file only.
        sample = f"grep -s '^cpu' {stat}; cat {pids} 2>/dev/null; true"
        return c_locale(
            join(
                section("probe", "echo $$"),
                section("first", sample),
                f"sleep {SAMPLE_S}",
                section("second", sample),
            )
        )

    def process(self, output: list[str]) -> TopCpuProcessesValue:
        parts = split_sections(output)
        first_totals = cpu_totals(parts.get("first", []))
        second_totals = cpu_totals(parts.get("second", []))
        if first_totals is None or second_totals is None:
            return TopCpuProcessesValue(reason="/proc/stat could not be read")
        elapsed = (second_totals[0] - first_totals[0]) / second_totals[1]
        if elapsed <= 0:
            return TopCpuProcessesValue(reason="no time passed between the two /proc samples")
        first, second = _stats(parts.get("first", [])), _stats(parts.get("second", []))
        if not second:
            return TopCpuProcessesValue(reason="no /proc/[pid]/stat could be read")
        probe_text = next((s.strip() for s in parts.get("probe", []) if s.strip()), "")
        own = own_processes(second, int(probe_text)) if probe_text.isdigit() else set()
        busy = [
            ProcessCpu(s.pid, s.name, s.ppid, round(100.0 * (s.ticks - old.ticks) / elapsed, 1))
            for s in second.values()
            if s.pid not in own and (old := first.get(s.pid)) is not None and s.ticks > old.ticks
        ]
        busy.sort(key=lambda p: (-p.cpu_percent, p.pid))
        return TopCpuProcessesValue(
            available=True,
            reason="",
            window_s=round(elapsed / USER_HZ, 3),
            cpus=second_totals[1],
            processes=tuple(busy[:MAX_LISTED]),
        )


def named(processes: Sequence[ProcessCpu], names: Iterable[str]) -> list[ProcessCpu]:
    """Processes whose name is one of ``names`` (the kernel keeps 15 characters of a name)."""
    wanted = {n[:15] for n in names}
    return [p for p in processes if p.name in wanted]
