"""TopCpuProcesses and PRC001 on real recorded samples, and the real probe on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_command
from test_cpu_facts import RECORDED

from llmtune.checks.processes import cpu_hogs
from llmtune.checks.registry import CHECKS, FactValues
from llmtune.facts.probe import split_sections
from llmtune.facts.processes import (
    ProcessCpu,
    TopCpuProcesses,
    TopCpuProcessesValue,
    cpu_totals,
    own_processes,
    parse_pid_stat,
)
from llmtune.findings import Status
from llmtune.settings import HostSettings

SETTINGS = HostSettings()


def _recorded(name: str) -> list[str]:
    return (RECORDED / name / "fact-TopCpuProcesses.txt").read_text().splitlines()


def _check(value: TopCpuProcessesValue, settings: HostSettings = SETTINGS):
    return cpu_hogs(FactValues({TopCpuProcesses: value}), settings)


def test_parse_pid_stat_odd_name() -> None:
    line = (RECORDED / "debian12-vm" / "proc-pid-stat-odd-name.txt").read_text().strip()
    stat = parse_pid_stat(line)
    assert stat is not None
    assert (stat.pid, stat.name, stat.ppid, stat.ticks) == (4025, "odd) name (x", 4024, 0)
    assert parse_pid_stat("") is None and parse_pid_stat("12 (x) R 1") is None


def test_cpu_totals_from_recorded_proc_stat() -> None:
    parts = split_sections(_recorded("h100-ubuntu2404-vm"))
    first, second = cpu_totals(parts["first"]), cpu_totals(parts["second"])
    assert first is not None and second is not None
    assert first[1] == second[1] == 16
    # 0.25 s on 16 CPUs is about 400 ticks of USER_HZ 100.
    assert 350 < second[0] - first[0] < 500
    assert cpu_totals([]) is None and cpu_totals(["cpu  a b"]) is None


def test_recorded_busy_vm_sample() -> None:
    # Two busy loops on the 2-vCPU VM: `yes` and a script named llama-server (SOURCE.md).
    value = TopCpuProcesses().process(_recorded("debian12-vm/busy"))
    assert value.available and value.cpus == 2 and 0.2 < value.window_s < 0.35
    assert [(p.name, p.ppid) for p in value.processes] == [("yes", 1), ("llama-server", 1)]
    assert all(90 <= p.cpu_percent <= 105 for p in value.processes)
    outcome = _check(value)
    assert outcome.status == Status.WARN
    # llama-server is part of the inference stack: listed in details, never named a hog.
    assert outcome.observed.startswith("1 background process(es) above 20% of one CPU")
    assert "yes (pid 2768)" in outcome.observed and "llama-server" not in outcome.observed
    assert outcome.fix.startswith("stop yes (pid 2768) before serving: sudo kill 2768")
    assert "renice -n 19 -p 2768" in outcome.fix
    assert any(line.startswith("llama-server (pid 2766)") for line in outcome.details)


def test_recorded_h100_sample_excludes_only_the_probe_tree() -> None:
    lines = _recorded("h100-ubuntu2404-vm")
    value = TopCpuProcesses().process(lines)
    assert [(p.pid, p.name) for p in value.processes] == [(398, "yes")]
    # The probe (413) ran under record.sh (400), whose parent bash (396) also ran `yes`: the
    # doctor's tree stops below that bash.
    stats = {s.pid: s for s in map(parse_pid_stat, split_sections(lines)["second"]) if s}
    own = own_processes(stats, 413)
    assert {400, 413} <= own and 398 not in own and 396 not in own
    outcome = _check(value)
    assert outcome.status == Status.WARN and "sudo kill 398" in outcome.fix


def test_recorded_idle_sample_passes() -> None:
    value = TopCpuProcesses().process(_recorded("debian12-vm/idle"))
    assert value.available and value.processes == ()
    outcome = _check(value)
    assert outcome.status == Status.PASS
    assert outcome.observed == "no background process above 20% of one CPU over 0.25 s"


def test_threshold_kernel_threads_and_skip() -> None:
    assert CHECKS["PRC001"].category == "processes"
    value = TopCpuProcesses().process(_recorded("debian12-vm/busy"))
    # Above the user's threshold nothing is a hog.
    assert _check(value, HostSettings(cpu_hog_percent=150.0)).status == Status.PASS
    kswapd = TopCpuProcessesValue(True, "", 0.25, 2, (ProcessCpu(93, "kswapd0", 2, 60.0),))
    outcome = _check(kswapd)
    assert outcome.status == Status.WARN and "kill" not in outcome.fix
    assert "(kernel thread)" in outcome.observed
    skipped = _check(TopCpuProcesses().process([]))
    assert skipped.status == Status.SKIP and "/proc/stat" in skipped.observed


def test_real_probe_is_quick_and_sees_itself_nowhere() -> None:
    start = time.monotonic()
    value = TopCpuProcesses().process(run_command(TopCpuProcesses().command()))
    assert time.monotonic() - start < 0.9
    assert value.available and value.cpus >= 1 and 0.15 < value.window_s < 0.6
    assert os.getpid() not in {p.pid for p in value.processes}


@pytest.fixture
def detached_busy_loop():
    """A busy shell loop outside this test's process tree (its parent exits at once)."""
    out = subprocess.run(
        ["/bin/sh", "-c", "sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(out.stdout.strip())
    time.sleep(0.1)
    yield pid
    os.kill(pid, signal.SIGTERM)


def test_real_probe_finds_a_busy_process_and_skips_our_own(detached_busy_loop: int) -> None:
    # A busy child of this test process is the doctor's own tree, like the doctor's probes.
    own = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        value = TopCpuProcesses().process(run_command(TopCpuProcesses().command()))
    finally:
        own.kill()
        own.wait()
    seen = {p.pid: p for p in value.processes}
    assert detached_busy_loop in seen and seen[detached_busy_loop].cpu_percent > 30
    assert own.pid not in seen
