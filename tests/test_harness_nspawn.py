"""The real-host harness itself (tests/hosts): 3 Debian 12 systemd containers, pyinfra over SSH.

These run for real in CI (as root) and are never skipped: not root is a failure with the reason.
"""

from __future__ import annotations

import threading
import time

import pytest
from hosts import (
    CPUFREQ_DEFAULTS,
    INTEL_PSTATE_DEFAULTS,
    THP_PATH,
    Fleet,
    fleet_fixture,
    pyinfra_state,
)
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.facts.server import Hostname
from pyinfra.operations import apt, files, server, systemd

pytestmark = pytest.mark.container

fleet = fleet_fixture(3)

GOVERNOR = "/sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor"
EPP = "/sys/devices/system/cpu/cpu{n}/cpufreq/energy_performance_preference"
MIN_PERF_PCT = "/sys/devices/system/cpu/intel_pstate/min_perf_pct"
THP_ENABLED = f"{THP_PATH}/enabled"


def cpus(host) -> list[int]:
    return sorted(int(p.name[3:]) for p in host.cpu_dir.glob("cpu[0-9]*"))


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_three_hosts_boot_real_systemd_in_parallel(fleet: Fleet):
    assert [h.name for h in fleet] == ["host1", "host2", "host3"]
    assert len({h.port for h in fleet}) == 3
    machine_ids = set()
    for host in fleet:
        assert host.system_state() in ("running", "degraded"), host.console_tail()
        assert host.run("hostname").stdout.strip() == host.name
        assert host.run(["systemctl", "is-active", "ssh"]).stdout.strip() == "active"
        machine_ids.add(host.read("/etc/machine-id"))
        # Each host is its own systemd (PID 1 of its own PID namespace) in its own cgroup.
        assert host.run("readlink /proc/1/exe").stdout.strip().endswith("systemd")
    assert len(machine_ids) == 3
    assert fleet.start_seconds is not None and fleet.start_seconds < 60


def test_pyinfra_operations_over_ssh_on_all_hosts(fleet: Fleet):
    state = pyinfra_state(fleet)
    shell = add_op(state, server.shell, name="write marker", commands=["hostname > /root/marker"])
    line = add_op(
        state,
        files.line,
        name="add a line",
        path="/etc/llmtune-harness.conf",
        line="harness=ok",
    )
    echo = add_op(state, server.shell, name="echo", commands=["echo from-$(hostname)"])
    run_ops(state)
    for inv_host in state.inventory:
        host = fleet.host(inv_host.name)
        assert shell[inv_host].did_succeed()
        assert line[inv_host].did_change()
        assert echo[inv_host].stdout == f"from-{host.name}"
        assert inv_host.get_fact(Hostname) == host.name  # a fact, gathered over SSH
        assert host.read("/root/marker") == f"{host.name}\n"
        assert "harness=ok" in host.read("/etc/llmtune-harness.conf").splitlines()
    # Idempotent: the same line again changes nothing.
    state = pyinfra_state(fleet)
    again = add_op(state, files.line, path="/etc/llmtune-harness.conf", line="harness=ok")
    run_ops(state)
    assert not any(meta.did_change() for meta in again.values())


def test_thp_standin_is_writable_behaves_like_sysfs_and_resets_on_restart(fleet: Fleet):
    host = fleet[2]
    boot_default = host.read(THP_ENABLED)
    assert boot_default == "always [madvise] never\n"
    assert host.read(f"{THP_PATH}/defrag") == "always defer defer+madvise [madvise] never\n"

    host.run(f"echo always > {THP_ENABLED}")
    wait_for(lambda: host.read(THP_ENABLED) == "[always] madvise never\n", 5, "the selector")
    host.run(f"echo bogus > {THP_ENABLED}")  # the kernel refuses it (EINVAL): value unchanged
    wait_for(lambda: host.read(THP_ENABLED) == "[always] madvise never\n", 5, "the revert")
    host.run("echo kept > /root/on-disk")  # disk state, unlike sysfs, survives a reboot

    host.restart()
    assert host.system_state() in ("running", "degraded")
    assert host.read(THP_ENABLED) == boot_default  # a reboot resets kernel state
    assert host.read("/root/on-disk") == "kept\n"


def test_cpufreq_standin_follows_intel_pstate_rules_and_resets(fleet: Fleet):
    host = fleet[1]
    for n in cpus(host):
        assert host.read(GOVERNOR.format(n=n)) == "powersave\n"
        assert host.read(EPP.format(n=n)) == "balance_performance\n"
    gov, epp = GOVERNOR.format(n=0), EPP.format(n=0)
    assert host.read("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor") == "powersave\n"
    host.run(f"echo balance_power > {epp}")
    wait_for(lambda: host.read(epp) == "balance_power\n", 5, "EPP balance_power")
    host.run(f"echo performance > {gov}")  # intel_pstate: the performance governor forces EPP
    wait_for(lambda: host.read(epp) == "performance\n", 5, "EPP forced to performance")
    host.run(f"echo power > {epp}")  # refused (EBUSY) under the performance governor
    host.run(f"echo ondemand > {gov}")  # not in scaling_available_governors: refused
    time.sleep(0.3)
    assert (host.read(gov), host.read(epp)) == ("performance\n", "performance\n")
    host.run(f"echo powersave > {gov}")  # back: the EPP from before comes back
    wait_for(lambda: host.read(epp) == "balance_power\n", 5, "EPP restored")
    host.run(f"echo performance > {gov}")
    wait_for(lambda: host.read(gov) == "performance\n", 5, "governor performance")

    host.restart(hard=True)  # power cut: kernel state back to boot defaults
    assert host.read(gov) == CPUFREQ_DEFAULTS["scaling_governor"] + "\n"
    assert host.read(epp) == CPUFREQ_DEFAULTS["energy_performance_preference"] + "\n"


def test_tuned_applies_throughput_performance_to_the_cpufreq_standins(fleet: Fleet):
    host = fleet[0]
    state = pyinfra_state([host])
    add_op(state, apt.packages, packages=["tuned"], _env={"DEBIAN_FRONTEND": "noninteractive"})
    add_op(state, systemd.service, service="tuned", running=True, enabled=True)
    add_op(state, server.shell, commands=["tuned-adm profile throughput-performance"])
    run_ops(state)
    assert not state.failed_hosts

    # tuned (plugin_cpu._check_arch) writes intel_pstate's min_perf_pct only where
    # /proc/cpuinfo names a GenuineIntel CPU; the container sees this machine's real cpuinfo, and
    # the CI machines have been Intel and AMD. On AMD the stand-in keeps its boot default.
    vendor = host.run("grep -m1 '^vendor_id' /proc/cpuinfo").stdout.split(":")[-1].strip()
    on_amd = INTEL_PSTATE_DEFAULTS["min_perf_pct"] + "\n"
    min_perf_pct = on_amd if vendor in ("AuthenticAMD", "HygonGenuine") else "100\n"

    def applied() -> bool:
        return host.read(MIN_PERF_PCT) == min_perf_pct and all(
            (host.read(GOVERNOR.format(n=n)), host.read(EPP.format(n=n)))
            == ("performance\n", "performance\n")
            for n in cpus(host)
        )

    expected = f"governor and EPP performance, min_perf_pct {min_perf_pct.strip()}"
    wait_for(applied, 30, f"tuned: {expected}")
    assert host.run("tuned-adm active").stdout.strip().endswith("throughput-performance")

    # Persistence comes from tuned re-applying its profile at boot, not from the harness.
    host.restart()
    wait_for(applied, 60, "tuned to re-apply the profile after the reboot")
    assert host.unit_state("tuned") == ("enabled", "active")


def test_a_host_killed_in_the_middle_of_a_deploy_boots_again(fleet: Fleet):
    host = fleet[2]
    state = pyinfra_state([host])
    add_op(state, server.shell, commands=["touch /root/started && sleep 120"])
    errors: list[BaseException] = []

    def deploy() -> None:
        try:
            run_ops(state)
        except BaseException as exc:  # pyinfra raises when no host is left
            errors.append(exc)

    thread = threading.Thread(target=deploy)
    thread.start()
    wait_for(lambda: host.read("/root/started") is not None, 30, "the deploy to start")
    host.kill()
    thread.join(60)
    assert not thread.is_alive(), "pyinfra did not notice the host went away"
    assert errors or state.failed_hosts
    host.start()
    assert host.system_state() in ("running", "degraded")
    snap = host.snapshot(["/root/started", "/nonexistent"], ["ssh", "tuned", "nope"])
    assert snap["files"] == {"/root/started": "", "/nonexistent": None}
    assert snap["units"]["ssh"] == ("enabled", "active")
    assert snap["units"]["tuned"][0] == "not-found"
