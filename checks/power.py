"""Checks of category power: tuned's profile and the power-profiles-daemon trap."""

from __future__ import annotations

from llmtune.checks.applies import systemd_skip
from llmtune.checks.registry import FactValues, check
from llmtune.facts.host import HostInfo
from llmtune.facts.systemd import SystemdState
from llmtune.facts.tuned import THROUGHPUT_PERFORMANCE, TunedState, include_path
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

PROFILE_CMD = f"sudo tuned-adm profile {THROUGHPUT_PERFORMANCE}"
DEPLOY_NOTE = "   # or: the llmtune power deploy"
INSTALL_TUNED_FIX = (
    f"sudo apt install tuned && sudo systemctl enable --now tuned && {PROFILE_CMD}{DEPLOY_NOTE}"
)
TUNED_EXPECTED = f"tuned active with {THROUGHPUT_PERFORMANCE} or a profile that includes it"
PPD_FIX = (
    "sudo systemctl disable --now power-profiles-daemon"
    " && sudo systemctl mask power-profiles-daemon"
)
PPD_EXPECTED = "power-profiles-daemon not installed, or inactive and masked"


@check(
    id="PWR001",
    name="tuned-profile",
    title="tuned runs throughput-performance (or a profile including it)",
    category="power",
    severity=Severity.HIGH,
    source="seed 004 §7.4 (The power-profiles-daemon trap), §22 #10, §2 #5",
    facts=(HostInfo, SystemdState, TunedState),
)
def tuned_profile(facts: FactValues, settings: HostSettings) -> Outcome:
    if not settings.tuned:
        return skipped("tuned: false in the settings: the cpu deploy sets governor and EPP")
    systemd = facts[SystemdState]
    skip = systemd_skip(facts[HostInfo], systemd, "tuned is managed by systemd units")
    if skip:
        return skip
    tuned = facts[TunedState]
    unit = systemd.unit("tuned")
    if not unit.installed and not tuned.available:
        return failed("tuned is not installed", TUNED_EXPECTED, INSTALL_TUNED_FIX)
    if unit.masked:
        return failed(
            "tuned.service is masked",
            TUNED_EXPECTED,
            f"sudo systemctl unmask tuned && sudo systemctl enable --now tuned && {PROFILE_CMD}",
        )
    if not unit.active or not tuned.daemon_running:
        preset = f", preset profile {tuned.preset_profile}" if tuned.preset_profile else ""
        return failed(
            f"tuned.service {unit.describe()}{preset}",
            TUNED_EXPECTED,
            f"sudo systemctl enable --now tuned && {PROFILE_CMD}{DEPLOY_NOTE}",
        )
    if not tuned.available:
        return warned(
            f"tuned.service is active but {tuned.reason}",
            TUNED_EXPECTED,
            f"{PROFILE_CMD}{DEPLOY_NOTE}",
        )
    if not tuned.active_profile:
        return failed("tuned runs with no active profile", TUNED_EXPECTED, PROFILE_CMD)
    path = next(
        (p for name in tuned.active_profiles if (p := include_path(tuned, name)) is not None),
        None,
    )
    if path is None:
        return failed(
            f"active profile {tuned.active_profile} (does not include {THROUGHPUT_PERFORMANCE})",
            TUNED_EXPECTED,
            f"{PROFILE_CMD}{DEPLOY_NOTE}",
        )
    chain = " -> ".join(path)
    observed = f"active profile {tuned.active_profile}" + (
        f" (includes {chain})" if len(path) > 1 else ""
    )
    if not unit.enabled:
        return warned(
            f"{observed}, but tuned.service is {unit.unit_file_state or 'not enabled'}",
            "tuned.service enabled, so the profile returns after a reboot",
            "sudo systemctl enable tuned",
        )
    ppd_unit = systemd.unit("tuned-ppd")
    ppd = tuned.ppd
    if ppd_unit.installed and not ppd_unit.masked and ppd is not None:
        # tuned-ppd switches tuned to the profile mapped to its saved base profile at every start
        # (tuned/ppd/controller.py initialize()), and a profile it does not map (llmtune) does
        # not update that base: map "performance" to the active profile and make it the base.
        startup = ppd.startup_profile
        performance = ppd.tuned_profile_for("performance")
        if startup != tuned.active_profile or performance != tuned.active_profile:
            return warned(
                f"{observed}; tuned-ppd maps performance={performance or '(none)'} and starts "
                f"with {ppd.startup_ppd_profile}={startup or '(none)'}",
                f"tuned-ppd keeps {tuned.active_profile} (performance={tuned.active_profile})",
                f"sudo sed -i 's/^performance=.*/performance={tuned.active_profile}/'"
                " /etc/tuned/ppd.conf && echo performance | sudo tee /etc/tuned/ppd_base_profile"
                " && sudo systemctl restart tuned-ppd",
            )
    return passed(observed, TUNED_EXPECTED)


@check(
    id="PWR002",
    name="ppd-masked",
    title="power-profiles-daemon is stopped and masked",
    category="power",
    severity=Severity.HIGH,
    source="seed 004 §7.4 (The power-profiles-daemon trap), §2 #5, Known TG Variability",
    facts=(HostInfo, SystemdState),
)
def ppd_masked(facts: FactValues, settings: HostSettings) -> Outcome:
    systemd = facts[SystemdState]
    skip = systemd_skip(
        facts[HostInfo], systemd, "power-profiles-daemon is managed by systemd units"
    )
    if skip:
        return skip
    ppd = systemd.unit("power-profiles-daemon")
    if not ppd.installed:
        return passed("power-profiles-daemon is not installed", PPD_EXPECTED)
    observed = f"power-profiles-daemon {ppd.describe()}"
    if ppd.masked and not ppd.active:
        return passed(observed, PPD_EXPECTED)
    if ppd.masked:
        # Masking does not stop a running unit; disable would refuse a masked one.
        return failed(observed, PPD_EXPECTED, "sudo systemctl stop power-profiles-daemon")
    if not ppd.active and systemd.unit("tuned").active:
        # tuned's Conflicts= stops it at tuned's start but leaves it enabled (recorded on Debian
        # 12 right after `apt install tuned`): a boot or a D-Bus activation can start it again.
        observed += " (stopped by tuned's Conflicts=, still startable)"
    return failed(observed, PPD_EXPECTED, PPD_FIX)
