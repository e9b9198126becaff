"""Memory: transparent hugepages now and at every boot, and the RAM speed guard (XMP/EXPO).

The RAM check runs at deploy time and fails the deploy with the BIOS step when a module runs
below its rated speed (``ram_below_rated: warn`` makes it a warning): no command can fix that, and
the deploy never pretends to. Verified by MEM001 and MEM003.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import files, python, server

from llmtune.facts.kernel import KernelCmdline
from llmtune.facts.memory import Thp
from llmtune.facts.tuned import TunedState
from llmtune.findings import Status
from llmtune.inventory import settings_of
from llmtune.ops.checks import check_on_host
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.original import record_original
from llmtune.planner.ownership import TMPFILES, thp_owner

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
THP_TMPFILES = "/etc/tmpfiles.d/llmtune-thp.conf"


def _warn(message: str) -> None:
    logger.warning(f"{host.print_prefix}{message}")


@deploy("llmtune memory")
def memory() -> None:
    settings = settings_of(host.data)
    thp = host.get_fact(Thp)
    record_original("memory", {"thp": thp.enabled})

    ram = check_on_host("MEM001", settings)
    if ram.status == Status.FAIL:
        message = f"RAM below its rated speed: {ram.observed}. {ram.fix}"
        if settings.ram_below_rated == "fail":
            fail_host("RAM runs at its rated speed (XMP/EXPO)", message)
        else:
            python.call(name="RAM speed (warning only)", function=_warn, message=message)

    if thp.enabled is None:
        host.noop("this kernel has no transparent hugepages")
        return
    if thp.enabled != settings.thp:
        server.shell(
            name=f"Transparent hugepages: {settings.thp} now",
            commands=[f"echo {settings.thp} > {THP_ENABLED}"],
        )
    if thp_owner(settings, host.get_fact(KernelCmdline)) == TMPFILES:
        files.put(
            name=f"Transparent hugepages: {settings.thp} at every boot (systemd-tmpfiles)",
            src=StringIO(f"# Written by llmtune\nw {THP_ENABLED} - - - - {settings.thp}\n"),
            dest=THP_TMPFILES,
            mode="644",
        )
    else:
        # The llmtune tuned profile persists THP: a second owner could only disagree with it.
        files.file(name="No second owner for THP", path=THP_TMPFILES, present=False)
        if host.get_fact(TunedState).active_profile != settings.tuned_profile:
            python.call(
                name="THP persistence comes from the tuned profile",
                function=_warn,
                message=f"THP persists through the tuned profile {settings.tuned_profile}: "
                "apply deploys/power.py too (deploys/all.py does)",
            )


run_if_deploy_file(__file__, memory)
