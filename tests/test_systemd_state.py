"""SystemdState on recorded real systemctl outputs (VM without systemd, Debian 12/13 nspawn hosts).

Recorded outputs are replayed by stand-in ``systemctl``/``tuned-adm`` scripts that print the
recorded file and exit with the recorded status, so the fact's real command runs over them.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import FIXTURES, run_command

from llmtune.facts.systemd import SystemdState, SystemdStateValue, UnitState, parse_show

RECORDED = FIXTURES / "recorded" / "systemd"

# tool name -> {first argument: recorded file stem}
_STUBS = {
    "systemctl": {
        "show": "systemctl-show",
        "get-default": "systemctl-get-default",
        "is-system-running": "systemctl-is-system-running",
    },
    "tuned-adm": {"active": "tuned-adm-active"},
}


def exit_codes(scenario: Path) -> dict[str, int]:
    codes: dict[str, int] = {}
    for line in (scenario / "exit-codes.txt").read_text().splitlines():
        stem, _, code = line.rpartition(" ")
        codes[stem] = int(code)
    return codes


def stub_bin(tmp_path: Path, scenario: Path) -> Path:
    """A bin directory whose tools replay ``scenario``'s recorded outputs and exit statuses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    codes = exit_codes(scenario)
    for tool, commands in _STUBS.items():
        cases = [
            f"  {arg}) cat '{scenario / (stem + '.txt')}'; exit {codes[stem]};;"
            for arg, stem in commands.items()
            if stem in codes
        ]
        if not cases:
            continue
        script = bin_dir / tool
        script.write_text('#!/bin/sh\ncase "$1" in\n' + "\n".join(cases) + "\nesac\nexit 64\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_with_path(fact: object, path: str, **kwargs: object) -> object:
    """Run the fact's real command with ``PATH`` set (stand-in tools first, or none at all)."""
    command = fact.command(**kwargs)  # type: ignore[attr-defined]
    return fact.process(run_command(f"PATH={path}; export PATH; {command}"))  # type: ignore[attr-defined]


def recorded_systemd(tmp_path: Path, host: str, scenario: str) -> SystemdStateValue:
    bin_dir = stub_bin(tmp_path, RECORDED / host / scenario)
    return run_with_path(SystemdState(), f"{bin_dir}:/usr/bin:/bin")  # type: ignore[return-value]


def fact_output(host: str, scenario: str, fact: str) -> list[str]:
    """The full output of llmtune's fact command recorded inside a real systemd host."""
    return (RECORDED / host / scenario / f"{fact}.txt").read_text().splitlines()


def test_real_command_on_this_host():
    value = SystemdState().process(run_command(SystemdState().command()))
    pid1 = Path("/proc/1/comm").read_text().strip()
    if pid1 == "systemd":
        assert value.running and value.units
    else:
        # This VM (and the GPU machine): systemctl is installed but systemd is not PID 1.
        assert not value.running
        assert value.units == ()
        assert value.unit("tuned") == UnitState(name="tuned")


def test_vm_without_systemd(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-vm-no-systemd", "")
    assert value.available and not value.running
    assert "System has not been booted with systemd as init system" in value.reason
    # get-default answers from the unit files even without systemd; is-system-running: offline.
    assert value.default_target == "graphical.target"
    assert value.system_state == "offline"
    assert value.units == ()


def test_ppd_stopped_by_tuned_but_still_enabled(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-nspawn", "tuned-installed")
    assert value.running and value.system_state == "running"
    ppd = value.unit("power-profiles-daemon")
    assert (ppd.installed, ppd.masked, ppd.active, ppd.enabled) == (True, False, False, True)
    tuned = value.unit("tuned.service")
    assert tuned == UnitState("tuned", "tuned.service", "loaded", "active", "running", "enabled")
    assert not value.unit("tuned-ppd").installed  # Debian 12 has no tuned-ppd


def test_ppd_masked_and_multi_user(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-nspawn", "ppd-masked-multi-user")
    ppd = value.unit("power-profiles-daemon")
    assert ppd.installed and ppd.masked and not ppd.active and not ppd.enabled
    assert ppd.describe() == "masked, inactive (dead), masked"
    assert value.default_target == "multi-user.target"


def test_display_manager_alias_names_the_real_unit(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-nspawn", "lightdm-active")
    alias = value.unit("display-manager")
    assert alias.id == "lightdm.service" and alias.active
    assert value.active_display_managers() == ("lightdm.service",)
    assert value.display_manager_unit() == "lightdm.service"
    assert value.default_target == "graphical.target"


def test_alias_removed_while_lightdm_runs(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-nspawn", "dm-alias-disabled-lightdm-running")
    assert not value.unit("display-manager").installed
    assert value.active_display_managers() == ("lightdm.service",)
    assert value.display_manager_unit() == "lightdm.service"


def test_failed_display_manager_degraded_system(tmp_path):
    value = recorded_systemd(tmp_path, "debian12-nspawn", "lightdm-failed")
    # is-system-running exits 1 for "degraded", but systemd is running.
    assert value.running and value.system_state == "degraded"
    lightdm = value.unit("lightdm")
    assert lightdm.active_state == "failed" and not lightdm.active
    assert value.active_display_managers() == ()


def test_bare_debian13_nothing_installed(tmp_path):
    value = recorded_systemd(tmp_path, "debian13-nspawn", "bare")
    assert value.running and value.default_target == "graphical.target"
    assert [u.name for u in value.units] == [
        "power-profiles-daemon",
        "tuned",
        "tuned-ppd",
        "display-manager",
        "gdm",
        "gdm3",
        "sddm",
        "lightdm",
    ]
    assert not any(u.installed for u in value.units)
    assert value.display_manager_unit() == ""


def test_fact_output_recorded_in_systemd_hosts():
    value = SystemdState().process(
        fact_output("debian13-nspawn", "fact-llmtune-ppd-mapped", "SystemdState")
    )
    assert value.running
    assert value.unit("tuned-ppd").active and value.unit("tuned").enabled
    value = SystemdState().process(
        fact_output("debian12-nspawn", "fact-headless-tuned-tp", "SystemdState")
    )
    assert value.default_target == "multi-user.target"
    assert value.unit("lightdm").unit_file_state == "disabled"


def test_systemctl_missing():
    value = run_with_path(SystemdState(), "/nonexistent")
    assert value == SystemdStateValue(reason="systemctl is not installed")


@pytest.mark.parametrize(
    "lines",
    [[], ["garbage"], ["@@llmtune section show", "=x", "", "@@llmtune rc 0"], ["\x00\xff"]],
)
def test_empty_and_garbage(lines):
    value = SystemdState().process(lines)
    assert not value.running and value.units == ()


def test_parse_show_recorded_blocks_in_argument_order():
    lines = (RECORDED / "debian12-nspawn" / "ppd-installed" / "systemctl-show.txt").read_text()
    units = parse_show(lines.splitlines(), ("power-profiles-daemon", "tuned"))
    assert [u.id for u in units] == ["power-profiles-daemon.service", "tuned.service"]
    assert units[0].active and units[0].enabled and not units[1].installed


def test_parse_show_without_blank_lines():
    lines = (RECORDED / "debian12-nspawn" / "tuned-installed" / "systemctl-show.txt").read_text()
    names = ("power-profiles-daemon", "tuned", "tuned-ppd")
    kept = parse_show(lines.splitlines(), names)
    assert parse_show([line for line in lines.splitlines() if line], names) == kept
    assert [u.active for u in kept] == [False, True, False]
