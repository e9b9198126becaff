"""Failing one host with a clear reason, while the other hosts of the run go on."""

from __future__ import annotations

import shlex

from pyinfra.operations import server


def fail_host(name: str, reason: str) -> None:
    """An operation that fails on the current host with ``reason`` on stderr.

    Raising during pyinfra's prepare phase would stop every host; this fails only this one, at
    the point of the run where the problem is, and pyinfra reports it with the host's name.
    """
    server.shell(name=name, commands=[f"echo {shlex.quote('llmtune: ' + reason)} >&2; exit 1"])
