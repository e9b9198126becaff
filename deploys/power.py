"""Power: tuned with the llmtune profile (throughput-performance based) replaces
power-profiles-daemon, which can leave the CPU in a slow hardware P-state on some boots
(seed 004 §7.4, "The power-profiles-daemon trap"). Verified by PWR001, PWR002, CPU001, CPU002.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import files, python, server, systemd

from llmtune.facts.host import HostInfo
from llmtune.facts.kernel import KernelCmdline
from llmtune.facts.systemd import SystemdState
from llmtune.facts.tuned import TunedState, verify_failures
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.original import record_original
from llmtune.ops.packages import packages
from llmtune.planner.ownership import TUNED, thp_owner
from llmtune.planner.tuned_profile import render_profile
from llmtune.platform import platform_for

PPD = "power-profiles-daemon.service"
PPD_CONF = "/etc/tuned/ppd.conf"
PPD_BASE = "/etc/tuned/ppd_base_profile"
TUNED_LOG = "/var/log/tuned/tuned.log"


def report_tuned_verify() -> None:
    """Run ``tuned-adm verify`` and report each setting tuned could not apply (a warning: in a
    VM or container some plugins, e.g. disk readahead, have nothing to act on)."""
    status, output = host.run_shell_command("tuned-adm verify")
    if status:
        logger.info(f"{host.print_prefix}tuned-adm verify: the profile is fully applied")
        return
    _, log = host.run_shell_command(f"tail -n 300 {TUNED_LOG}")
    failures = verify_failures(log.stdout_lines) or [output.stdout or "see " + TUNED_LOG]
    for failure in failures:
        logger.warning(f"{host.print_prefix}tuned could not apply: {failure}")


@deploy("llmtune power")
def power() -> None:
    settings = settings_of(host.data)
    if not settings.tuned:
        host.noop("tuned: false in settings: the cpu and memory deploys own governor, EPP, THP")
        return
    info = host.get_fact(HostInfo)
    platform = platform_for(info)
    systemd_state = host.get_fact(SystemdState)
    tuned = host.get_fact(TunedState)
    if not systemd_state.running:
        fail_host("tuned needs systemd", f"systemd is not running here ({systemd_state.reason})")
        return
    ppd = systemd_state.unit("power-profiles-daemon")
    tuned_unit = systemd_state.unit("tuned")
    profile_name = settings.tuned_profile

    record_original(
        "power",
        {
            "ppd": {
                "installed": ppd.installed,
                "enabled": ppd.enabled,
                "active": ppd.active,
                "masked": ppd.masked,
            },
            "tuned": {
                "installed": tuned_unit.installed,
                "enabled": tuned_unit.enabled,
                "active": tuned_unit.active,
                "profile": tuned.active_profile,
            },
            "tuned_ppd_installed": systemd_state.unit("tuned-ppd").installed,
            "ppd_performance": tuned.ppd.tuned_profile_for("performance") if tuned.ppd else None,
            "ppd_base_profile": tuned.ppd.base_profile if tuned.ppd else None,
        },
    )

    packages("Install tuned", platform, list(platform.tuned_packages))

    if ppd.active or not ppd.masked:
        server.shell(
            name="Stop and mask power-profiles-daemon",
            commands=[f"systemctl stop {PPD} 2>/dev/null || true", f"systemctl mask {PPD}"],
        )

    # Before tuned has been installed its profile directory layout comes from the distro table.
    root = (
        tuned.layout.replace("/usr/lib", "/etc")
        if tuned.available and tuned.layout
        else (platform.tuned_profile_root)
    )
    manage_thp = thp_owner(settings, host.get_fact(KernelCmdline)) == TUNED
    profile = files.put(
        name=f"Write the tuned profile {profile_name}",
        src=StringIO(render_profile(settings, manage_thp)),
        dest=f"{root}/{profile_name}/tuned.conf",
        mode="644",
        create_remote_dir=True,
    )

    ppd_changes = []
    if platform.tuned_ppd:
        # tuned-ppd switches tuned to the profile ppd.conf maps "performance" to at every start:
        # map it to ours, and make performance its saved choice, or it undoes the profile.
        mapped = tuned.ppd.tuned_profile_for("performance") if tuned.ppd else None
        if mapped != profile_name:
            ppd_changes.append(
                server.shell(
                    name="Map tuned-ppd's performance profile to ours",
                    commands=[f"sed -i 's/^performance=.*/performance={profile_name}/' {PPD_CONF}"],
                )
            )
        if not tuned.ppd or tuned.ppd.base_profile != "performance":
            ppd_changes.append(
                server.shell(
                    name="Make performance tuned-ppd's saved profile",
                    commands=[f"echo performance > {PPD_BASE}"],
                )
            )

    systemd.service(
        name="Enable and start tuned", service="tuned.service", running=True, enabled=True
    )
    if ppd_changes:
        systemd.service(
            name="Restart tuned-ppd with the new mapping",
            service="tuned-ppd.service",
            running=True,
            restarted=True,
            _if=lambda: any(op.did_change() for op in ppd_changes),
        )

    activate = f"tuned-adm profile {shlex.quote(profile_name)}"
    verify = {
        "name": "Verify the tuned profile (tuned-adm verify)",
        "function": report_tuned_verify,
    }
    if tuned.active_profile != profile_name or not tuned.daemon_running:
        server.shell(name=f"Activate the tuned profile {profile_name}", commands=[activate])
        python.call(**verify)
    else:
        # Only after a change: an unchanged host stays a run with no changes. (An operation
        # skipped by its _if still reports did_change(), so both gate on the profile itself.)
        server.shell(
            name=f"Reload the tuned profile {profile_name}",
            commands=[activate],
            _if=profile.did_change,
        )
        python.call(**verify, _if=profile.did_change)


run_if_deploy_file(__file__, power)
