"""Revert: put back what the other deploys changed, from the state recorded on the host before
their first apply (``/var/lib/llmtune/original/*.json``), then forget that record so that a later
apply records afresh. A section that was never recorded is left alone.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from llmtune.deploys.cpu import CPU_ENV, CPU_TMPFILES, CPUFREQ
from llmtune.deploys.memory import THP_ENABLED, THP_TMPFILES
from llmtune.deploys.power import PPD, PPD_BASE, PPD_CONF
from llmtune.facts.host import HostInfo
from llmtune.facts.llmtune_state import ORIGINAL_DIR, OriginalState
from llmtune.facts.tuned import TunedState
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.packages import packages as remove_packages
from llmtune.platform import platform_for

TUNED_RUNTIME_FILES = (
    "/etc/tuned/active_profile",
    "/etc/tuned/profile_mode",
    "/etc/tuned/post_loaded_profile",
)


def _forget(section: str) -> None:
    files.file(
        name=f"Forget the recorded state ({section})",
        path=f"{ORIGINAL_DIR}/{section}.json",
        present=False,
    )


def _revert_power(original: dict) -> None:
    settings = settings_of(host.data)
    tuned = host.get_fact(TunedState)
    before_tuned, before_ppd = original["tuned"], original["ppd"]
    if before_tuned["installed"] and before_tuned["profile"]:
        server.shell(
            name=f"tuned back to its profile {before_tuned['profile']}",
            commands=[f"tuned-adm profile {shlex.quote(before_tuned['profile'])}"],
        )
    if original.get("ppd_performance") and tuned.ppd:
        server.shell(
            name="tuned-ppd's mapping back as it was",
            commands=[
                f"sed -i 's/^performance=.*/performance={original['ppd_performance']}/' {PPD_CONF}",
                f"echo {shlex.quote(original.get('ppd_base_profile') or 'balanced')} > {PPD_BASE}",
            ],
        )
    for location in ("/etc/tuned", "/etc/tuned/profiles"):
        files.directory(
            name=f"Remove the tuned profile {settings.tuned_profile} ({location})",
            path=f"{location}/{settings.tuned_profile}",
            present=False,
        )
    if not before_tuned["installed"]:
        server.shell(
            name="Stop tuned (it was not installed before)",
            commands=["systemctl disable --now tuned.service 2>/dev/null || true"],
        )
        platform = platform_for(host.get_fact(HostInfo))
        packages = (
            ["tuned"] if original.get("tuned_ppd_installed") else (list(platform.tuned_packages))
        )
        if platform.family == "debian":
            # Purge: a plain remove leaves tuned's conffiles, and the package "config-files".
            server.shell(
                name="Purge tuned",
                commands=[
                    "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "
                    + " ".join(shlex.quote(p) for p in packages)
                ],
            )
        else:
            remove_packages("Remove tuned", platform, packages, present=False)
        # tuned's runtime state outlives the package (it is no conffile): gone, as before.
        for leftover in TUNED_RUNTIME_FILES:
            files.file(name=f"Remove {leftover}", path=leftover, present=False)
    elif not before_tuned["enabled"]:
        server.shell(name="tuned not enabled, as before", commands=["systemctl disable tuned"])
    if not before_ppd["masked"]:
        commands = [f"systemctl unmask {PPD}"]
        if before_ppd["enabled"]:
            commands.append(f"systemctl enable {PPD}")
        if before_ppd["active"]:
            commands.append(f"systemctl start {PPD}")
        server.shell(name="power-profiles-daemon back as it was", commands=commands)
    _forget("power")


def _revert_memory(original: dict) -> None:
    files.file(name="Remove the THP boot setting", path=THP_TMPFILES, present=False)
    if original.get("thp"):
        server.shell(
            name=f"Transparent hugepages back to {original['thp']}",
            commands=[f"echo {shlex.quote(original['thp'])} > {THP_ENABLED}"],
        )
    _forget("memory")


def _revert_cpu(original: dict) -> None:
    files.file(name="Remove the CPU boot settings", path=CPU_TMPFILES, present=False)
    files.file(name="Remove the P-core export", path=CPU_ENV, present=False)
    commands = []
    for key, file in (("governor", "scaling_governor"), ("epp", "energy_performance_preference")):
        for cpu, value in sorted(original.get(key, {}).items(), key=lambda kv: int(kv[0])):
            path = CPUFREQ.replace("cpu*", f"cpu{int(cpu)}") + f"/{file}"
            commands.append(f"echo {shlex.quote(value)} > {path}")
    if commands:
        server.shell(name="CPU governor and EPP back as they were", commands=commands)
    _forget("cpu")


def _revert_headless(original: dict) -> None:
    commands = []
    if original.get("default_target"):
        commands.append(f"systemctl set-default {shlex.quote(original['default_target'])}")
    commands += [f"systemctl enable {shlex.quote(unit)}" for unit in original["enabled_dms"]]
    commands += [f"systemctl start {shlex.quote(unit)}" for unit in original["active_dms"]]
    if commands:
        server.shell(name="Boot target and display manager back as they were", commands=commands)
    _forget("headless")


REVERTERS = {
    "power": _revert_power,
    "memory": _revert_memory,
    "cpu": _revert_cpu,
    "headless": _revert_headless,
}


@deploy("llmtune revert")
def revert() -> None:
    state = host.get_fact(OriginalState)
    if state.broken:
        fail_host(
            "Recorded state is readable",
            f"cannot revert: unreadable state in {ORIGINAL_DIR}: {', '.join(state.broken)}",
        )
        return
    if not state.sections:
        host.noop("nothing recorded: llmtune never applied a deploy here (or it was reverted)")
        return
    # Reverse order of application: headless, cpu, memory, power.
    for section in ("headless", "cpu", "memory", "power"):
        if section in state.sections:
            REVERTERS[section](state.sections[section])


run_if_deploy_file(__file__, revert)
