"""Who persists each OS knob: tuned (its profile) or systemd-tmpfiles. One owner per knob.

With two owners a reboot applies whichever runs last, and a revert of one leaves the other.
"""

from __future__ import annotations

from llmtune.facts.kernel import KernelCmdlineValue
from llmtune.settings import HostSettings

TUNED = "tuned"
TMPFILES = "tmpfiles"


def thp_owner(settings: HostSettings, cmdline: KernelCmdlineValue) -> str:
    """tuned's [vm] plugin leaves THP alone when ``transparent_hugepage=`` is on the kernel
    command line, so then (or without tuned) tmpfiles owns it."""
    if settings.tuned and cmdline.get("transparent_hugepage") is None:
        return TUNED
    return TMPFILES


def cpu_owner(settings: HostSettings) -> str:
    return TUNED if settings.tuned else TMPFILES
