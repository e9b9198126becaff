"""PWR001 tuned-profile and PWR002 ppd-masked on facts parsed from recorded systemd hosts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_systemd_state import fact_output, recorded_systemd, run_with_path
from test_tuned_state import D12, D13, recorded_tuned

from llmtune.checks.power import ppd_masked, tuned_profile
from llmtune.checks.registry import CHECKS, FactValues
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.facts.systemd import SystemdState, SystemdStateValue
from llmtune.facts.tuned import TunedState, TunedStateValue
from llmtune.findings import Outcome, Status
from llmtune.settings import HostSettings

SYSTEMD_HOST = HostInfoValue(hostname="vm", pid1="systemd", uid=0, virtualization="systemd-nspawn")
# This VM as HostInfo reads it: PID 1 is the sandbox's process_api.
VM_HOST = HostInfoValue(hostname="vm", pid1="process_api", uid=0)


def pwr001(host: HostInfoValue, systemd: SystemdStateValue, tuned: TunedStateValue) -> Outcome:
    facts = FactValues({HostInfo: host, SystemdState: systemd, TunedState: tuned})
    return tuned_profile(facts, HostSettings())


def pwr002(host: HostInfoValue, systemd: SystemdStateValue) -> Outcome:
    return ppd_masked(FactValues({HostInfo: host, SystemdState: systemd}), HostSettings())


def recorded_pair(tmp_path: Path, scenario: Path, tree: Path):
    systemd = recorded_systemd(tmp_path, scenario.parent.name, scenario.name)
    return systemd, recorded_tuned(tmp_path, scenario, tree)


def facts_recorded(host: str, scenario: str) -> tuple[SystemdStateValue, TunedStateValue]:
    return (
        SystemdState().process(fact_output(host, scenario, "SystemdState")),
        TunedState().process(fact_output(host, scenario, "TunedState")),
    )


def test_registered():
    assert CHECKS["PWR001"].name == "tuned-profile" and CHECKS["PWR001"].category == "power"
    assert CHECKS["PWR002"].name == "ppd-masked"


# --- PWR001 -------------------------------------------------------------------------------------


def test_pwr001_pass_throughput_performance():
    outcome = pwr001(SYSTEMD_HOST, *facts_recorded("debian12-nspawn", "fact-headless-tuned-tp"))
    assert outcome.status == Status.PASS
    assert outcome.observed == "active profile throughput-performance"


def test_pwr001_pass_llmtune_with_ppd_mapped():
    outcome = pwr001(SYSTEMD_HOST, *facts_recorded("debian13-nspawn", "fact-llmtune-ppd-mapped"))
    assert outcome.status == Status.PASS
    assert outcome.observed == "active profile llmtune (includes llmtune -> throughput-performance)"


def test_pwr001_pass_virtual_guest(tmp_path):
    outcome = pwr001(
        SYSTEMD_HOST, *recorded_pair(tmp_path, D12 / "tuned-installed", D12 / "tuned-tree")
    )
    assert (
        outcome.status == Status.PASS
        and "virtual-guest -> throughput-performance" in outcome.observed
    )


def test_pwr001_warns_when_tuned_ppd_would_switch_back():
    # Recorded: with this ppd.conf a restart of tuned-ppd put throughput-performance back.
    outcome = pwr001(SYSTEMD_HOST, *facts_recorded("debian13-nspawn", "fact-llmtune-ppd-default"))
    assert outcome.status == Status.WARN
    assert "performance=throughput-performance" in outcome.observed
    assert outcome.fix.startswith("sudo sed -i 's/^performance=.*/performance=llmtune/'")
    assert "sudo systemctl restart tuned-ppd" in outcome.fix


def test_pwr001_fails_on_balanced_set_by_tuned_ppd(tmp_path):
    systemd, tuned = recorded_pair(tmp_path, D13 / "tuned-ppd-installed", D13 / "tuned-tree")
    outcome = pwr001(SYSTEMD_HOST, systemd, tuned)
    assert outcome.status == Status.FAIL
    assert outcome.observed.startswith("active profile balanced")
    assert outcome.fix.startswith("sudo tuned-adm profile throughput-performance")
    assert "llmtune power deploy" in outcome.fix


def test_pwr001_fails_when_tuned_missing(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian13-nspawn", "bare")
    tuned = run_with_path(TunedState(), "/nonexistent", root=str(tmp_path))
    outcome = pwr001(SYSTEMD_HOST, systemd, tuned)  # type: ignore[arg-type]
    assert outcome.status == Status.FAIL and outcome.observed == "tuned is not installed"
    assert outcome.fix.startswith(
        "sudo apt install tuned && sudo systemctl enable --now tuned"
        " && sudo tuned-adm profile throughput-performance"
    )


def test_pwr001_fails_when_tuned_stopped(tmp_path):
    systemd, tuned = recorded_pair(tmp_path, D12 / "tuned-stopped", D12 / "tuned-tree")
    outcome = pwr001(SYSTEMD_HOST, systemd, tuned)
    assert outcome.status == Status.FAIL
    assert outcome.observed == (
        "tuned.service loaded, inactive (dead), enabled, preset profile throughput-performance"
    )
    assert outcome.fix.startswith("sudo systemctl enable --now tuned")


def test_pwr001_fails_without_active_profile(tmp_path):
    systemd, tuned = recorded_pair(tmp_path, D12 / "tuned-off", D12 / "tuned-tree")
    outcome = pwr001(SYSTEMD_HOST, systemd, tuned)
    assert outcome.status == Status.FAIL and outcome.observed == "tuned runs with no active profile"


def test_pwr001_skips_without_systemd(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian12-vm-no-systemd", "")
    outcome = pwr001(VM_HOST, systemd, TunedStateValue(reason="tuned-adm not installed"))
    assert outcome.status == Status.SKIP and "PID 1 is process_api" in outcome.observed


# --- PWR002 -------------------------------------------------------------------------------------


def test_pwr002_pass_not_installed(tmp_path):
    outcome = pwr002(SYSTEMD_HOST, recorded_systemd(tmp_path, "debian13-nspawn", "bare"))
    assert outcome.status == Status.PASS
    assert outcome.observed == "power-profiles-daemon is not installed"


def test_pwr002_pass_masked(tmp_path):
    systemd = recorded_systemd(tmp_path, "debian12-nspawn", "ppd-masked-multi-user")
    outcome = pwr002(SYSTEMD_HOST, systemd)
    assert outcome.status == Status.PASS and "masked" in outcome.observed


def test_pwr002_fails_when_active(tmp_path):
    outcome = pwr002(SYSTEMD_HOST, recorded_systemd(tmp_path, "debian12-nspawn", "ppd-installed"))
    assert outcome.status == Status.FAIL
    assert outcome.observed == "power-profiles-daemon loaded, active (running), enabled"
    assert outcome.fix == (
        "sudo systemctl disable --now power-profiles-daemon"
        " && sudo systemctl mask power-profiles-daemon"
    )


def test_pwr002_fails_when_only_stopped_by_tuned(tmp_path):
    outcome = pwr002(SYSTEMD_HOST, recorded_systemd(tmp_path, "debian12-nspawn", "tuned-installed"))
    assert outcome.status == Status.FAIL
    assert "inactive (dead), enabled" in outcome.observed and "Conflicts=" in outcome.observed


def test_pwr002_fails_when_merely_disabled(tmp_path):
    outcome = pwr002(SYSTEMD_HOST, recorded_systemd(tmp_path, "debian12-nspawn", "ppd-disabled"))
    assert outcome.status == Status.FAIL and outcome.observed.endswith(
        "disabled (stopped by tuned's Conflicts=, still startable)"
    )


def test_pwr002_skips_without_systemd(tmp_path):
    outcome = pwr002(VM_HOST, recorded_systemd(tmp_path, "debian12-vm-no-systemd", ""))
    assert outcome.status == Status.SKIP


def test_pwr002_skips_when_systemd_does_not_answer(tmp_path):
    # HostInfo saw systemd as PID 1 but systemctl could not talk to it.
    outcome = pwr002(SYSTEMD_HOST, recorded_systemd(tmp_path, "debian12-vm-no-systemd", ""))
    assert outcome.status == Status.SKIP and "does not answer" in outcome.observed


def test_pwr001_warns_when_tuned_not_enabled():
    systemd, tuned = facts_recorded("debian12-nspawn", "fact-headless-tuned-tp")
    units = tuple(
        replace(u, unit_file_state="disabled") if u.name == "tuned" else u for u in systemd.units
    )
    outcome = pwr001(SYSTEMD_HOST, replace(systemd, units=units), tuned)
    assert outcome.status == Status.WARN and outcome.fix == "sudo systemctl enable tuned"
    assert outcome.observed.endswith("but tuned.service is disabled")
