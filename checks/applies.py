"""When a check does not apply to a host: the shared skip outcomes."""

from __future__ import annotations

from llmtune.facts.host import HostInfoValue
from llmtune.facts.systemd import SystemdStateValue
from llmtune.findings import Outcome, skipped


def systemd_skip(host: HostInfoValue, systemd: SystemdStateValue, why: str) -> Outcome | None:
    """The skip outcome when systemd does not manage this host's services, else None.

    ``why`` ends the reason: "tuned is managed by systemd units", "no targets to check".
    """
    if not host.systemd:
        return skipped(f"PID 1 is {host.pid1 or 'unknown'}, not systemd: {why}")
    if not systemd.running:
        return skipped(f"systemd does not answer ({systemd.reason or systemd.system_state})")
    return None
