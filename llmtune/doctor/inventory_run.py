"""Doctor over a pyinfra inventory: the same checks on each host, read through pyinfra's
connectors (SSH...), each host with its own inventory settings, all hosts at once.

Hosts run as gevent greenlets, as in pyinfra itself: importing pyinfra_cli (for its inventory
loader) monkey-patches the stdlib for gevent, so sockets, subprocesses and sleeps yield to the
other hosts' greenlets while one waits on its SSH channel. An OS thread pool would fight that
patched stdlib; greenlets are what pyinfra's connectors are written for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gevent.pool
from pyinfra.api import Config, State
from pyinfra.api.host import Host
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from llmtune import __version__
from llmtune.checks.registry import Check, Level
from llmtune.doctor.remote import collect_pyinfra
from llmtune.doctor.render.fleet import UNREACHABLE
from llmtune.doctor.report import Report
from llmtune.doctor.run import (
    SelectionError,
    evaluate_all,
    exit_code,
    facts_needed,
    select_checks,
)
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.findings import Status
from llmtune.inventory import settings_of

# Hosts checked at once: each holds an SSH connection; pyinfra's own default is every host, a
# cap keeps a large fleet from opening hundreds of sessions (and file descriptors) at once.
MAX_PARALLEL = 64


def _names(host: Host) -> set[str]:
    return {host.name, *(getattr(g, "name", g) for g in host.groups)}


def load_inventory(inventory: Path, limit: Sequence[str] = ()) -> list[Host]:
    """The inventory's hosts (in ``limit``: host or group names, repeated or comma-separated),
    in inventory order. A limit name that matches no host is a SelectionError: a typo must not
    silently leave a host out."""
    # pyinfra's inventory loader runs the inventory file within a State, as its CLI does.
    state = State(check_for_changes=False)
    with ctx_state.use(state):
        pyinfra_inventory = make_inventory(str(inventory))
        state.init(pyinfra_inventory, Config())
    hosts = list(pyinfra_inventory)
    wanted = {name.strip() for value in limit for name in value.split(",") if name.strip()}
    if not wanted:
        return hosts
    unknown = sorted(wanted - set().union(*(_names(h) for h in hosts)))
    if unknown:
        raise SelectionError(f"--limit {', '.join(unknown)}: no such host or group in {inventory}")
    return [host for host in hosts if _names(host) & wanted]


def doctor_host(host: Host, checks: Sequence[Check], level: Level, fail_on: Status) -> Report:
    """Connect, collect, evaluate, disconnect: one host's report. A host that cannot be reached
    gets a report with no findings, exit code 1 and ``unreachable: REASON`` as its origin."""
    facts = [HostInfo, *facts_needed(checks)]
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    start = time.monotonic()
    try:
        host.connect(show_errors=False, raise_exceptions=True)
    except Exception as exc:
        return Report(
            host=HostInfoValue(hostname=host.name),
            level=level.value,
            origin=f"{UNREACHABLE}: {exc} (pyinfra {host.connector_cls.__name__})",
            started_at=started_at,
            duration_s=time.monotonic() - start,
            findings=(),
            exit_code=1,
            llmtune_version=__version__,
        )
    try:
        collection = collect_pyinfra(host, facts)
    finally:
        host.disconnect()
    findings = tuple(evaluate_all(checks, collection.facts, settings_of(host.data)))
    try:
        info = collection.facts[HostInfo]
    except Exception:
        info = HostInfoValue(hostname=host.name)
    return Report(
        host=info,
        level=level.value,
        origin=f"{host.name} through pyinfra",
        started_at=started_at,
        duration_s=time.monotonic() - start,
        findings=findings,
        exit_code=exit_code(findings, fail_on),
        llmtune_version=__version__,
    )


def doctor_fleet(
    inventory: Path,
    *,
    limit: Sequence[str],
    level: Level,
    only: Sequence[str],
    skip: Sequence[str],
    fail_on: Status = Status.FAIL,
    on_done: Callable[[str, Report], None] | None = None,
) -> dict[str, Report]:
    """Inventory name -> report, in inventory order; the hosts are checked concurrently, so the
    run takes about as long as the slowest host. ``on_done`` is called as each host finishes."""
    checks = select_checks(level, only, skip)  # a bad --only fails before any connection
    hosts = load_inventory(inventory, limit)

    def one(host: Host) -> Report:
        report = doctor_host(host, checks, level, fail_on)
        if on_done is not None:
            on_done(host.name, report)
        return report

    pool = gevent.pool.Pool(min(len(hosts), MAX_PARALLEL) or 1)
    # Pool.map keeps the input order and re-raises a greenlet's exception (a bug, not a host
    # problem: connection failures already became reports).
    reports = pool.map(one, hosts)
    return dict(zip([h.name for h in hosts], reports, strict=True))


def doctor_inventory(
    inventory: Path,
    *,
    limit: Sequence[str],
    level: Level,
    only: Sequence[str],
    skip: Sequence[str],
    fail_on: Status = Status.FAIL,
) -> list[Report]:
    """The reports of :func:`doctor_fleet`, without the inventory names."""
    return list(
        doctor_fleet(
            inventory, limit=limit, level=level, only=only, skip=skip, fail_on=fail_on
        ).values()
    )


def fleet_exit_code(reports: Sequence[Report]) -> int:
    codes = {r.exit_code for r in reports}
    return 1 if 1 in codes else 3 if 3 in codes else 0
