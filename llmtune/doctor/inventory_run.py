"""Doctor over a pyinfra inventory: the same checks on each host, read through pyinfra's
connectors (SSH...), each host with its own inventory settings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pyinfra.api import Config, State
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory

from llmtune import __version__
from llmtune.checks.registry import Level
from llmtune.doctor.remote import collect_pyinfra
from llmtune.doctor.report import Report
from llmtune.doctor.run import evaluate_all, exit_code, facts_needed, select_checks
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.findings import Status
from llmtune.inventory import settings_of


def _in_limit(host, limit: Sequence[str]) -> bool:
    if not limit:
        return True
    names = {host.name, *(getattr(g, "name", g) for g in host.groups)}
    return bool(names & set(limit))


def doctor_inventory(
    inventory: Path,
    *,
    limit: Sequence[str],
    level: Level,
    only: Sequence[str],
    skip: Sequence[str],
    fail_on: Status = Status.FAIL,
) -> list[Report]:
    """One report per host of the inventory (in ``limit``); an unreachable host gets a report
    with no findings, exit code 1 and the connection error as its origin."""
    checks = select_checks(level, only, skip)
    facts = [HostInfo, *facts_needed(checks)]
    # pyinfra's inventory loader runs the inventory file within a State, as its CLI does.
    state = State(check_for_changes=False)
    with ctx_state.use(state):
        pyinfra_inventory = make_inventory(str(inventory))
        state.init(pyinfra_inventory, Config())
    reports = []
    for host in pyinfra_inventory:
        if not _in_limit(host, limit):
            continue
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        start = time.monotonic()
        try:
            host.connect(raise_exceptions=True)
        except Exception as exc:
            reports.append(
                Report(
                    host=HostInfoValue(hostname=host.name),
                    level=level.value,
                    origin=f"unreachable over {host.connector_cls.__name__}: {exc}",
                    started_at=started_at,
                    duration_s=time.monotonic() - start,
                    findings=(),
                    exit_code=1,
                    llmtune_version=__version__,
                )
            )
            continue
        collection = collect_pyinfra(host, facts)
        findings = tuple(evaluate_all(checks, collection.facts, settings_of(host.data)))
        try:
            info = collection.facts[HostInfo]
        except Exception:
            info = HostInfoValue(hostname=host.name)
        host.disconnect()
        reports.append(
            Report(
                host=info,
                level=level.value,
                origin=f"{host.name} through pyinfra",
                started_at=started_at,
                duration_s=time.monotonic() - start,
                findings=findings,
                exit_code=exit_code(findings, fail_on),
                llmtune_version=__version__,
            )
        )
    return reports


def fleet_exit_code(reports: Sequence[Report]) -> int:
    codes = {r.exit_code for r in reports}
    return 1 if 1 in codes else 3 if 3 in codes else 0
