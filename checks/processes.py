"""Checks of category processes: background CPU consumers."""

from __future__ import annotations

from llmtune.checks.registry import FactValues, check
from llmtune.facts.processes import ProcessCpu, TopCpuProcesses, named
from llmtune.findings import Outcome, Severity, passed, skipped, warned
from llmtune.settings import HostSettings

# Shown in a passing finding: the busiest few, so a reader sees what the sample saw.
SHOWN = 5


def _line(p: ProcessCpu) -> str:
    kernel = " (kernel thread)" if p.ppid == 2 else ""
    return f"{p.name} (pid {p.pid}){kernel}: {p.cpu_percent:.0f}% of one CPU"


@check(
    id="PRC001",
    name="cpu-hogs",
    title="No background process competing for the CPU",
    category="processes",
    severity=Severity.MEDIUM,
    source="seed 004 §22 #7 (Background CPU hogs)",
    facts=(TopCpuProcesses,),
)
def cpu_hogs(facts: FactValues, settings: HostSettings) -> Outcome:
    sample = facts[TopCpuProcesses]
    if not sample.available:
        return skipped(f"processes could not be sampled: {sample.reason}")
    limit = settings.cpu_hog_percent
    ours = {p.pid for p in named(sample.processes, settings.inference_processes)}
    hogs = [p for p in sample.processes if p.pid not in ours and p.cpu_percent > limit]
    window = f"over {sample.window_s:.2f} s"
    expected = f"no process outside the inference stack above {limit:.0f}% of one CPU"
    if not hogs:
        return passed(
            f"no background process above {limit:.0f}% of one CPU {window}",
            expected,
            tuple(_line(p) for p in sample.processes[:SHOWN]),
        )
    # Kernel threads (children of kthreadd, pid 2) cannot be stopped; their cause can.
    users = [p for p in hogs if p.ppid != 2]
    pids = " ".join(str(p.pid) for p in users)
    names = ", ".join(f"{p.name} (pid {p.pid})" for p in users)
    if users:
        fix = (
            f"stop {names} before serving: sudo kill {pids}   "
            f"# or deprioritize: sudo renice -n 19 -p {pids}"
        )
    else:
        fix = "busy kernel threads: find their cause (kswapd: memory pressure; ksoftirqd: IRQ load)"
    return warned(
        f"{len(hogs)} background process(es) above {limit:.0f}% of one CPU {window}: "
        + "; ".join(_line(p) for p in hogs),
        expected,
        fix,
        tuple(_line(p) for p in sample.processes),
    )
