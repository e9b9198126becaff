"""One doctor run end to end: choose checks, read facts (host or capture), evaluate, capture."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from llmtune import __version__
from llmtune.checks.registry import FactValues, Level
from llmtune.doctor.capture import new_capture, read_capture, write_capture
from llmtune.doctor.collect import Collection, ProbeRecord, collect_local, collect_replay
from llmtune.doctor.report import Report
from llmtune.doctor.run import evaluate_all, exit_code, facts_needed, select_checks
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.findings import Status
from llmtune.settings import HostSettings


def _host(facts: FactValues) -> HostInfoValue:
    try:
        return facts[HostInfo]
    except Exception:
        return HostInfoValue()


def run_doctor(
    *,
    level: Level | None,
    only: Sequence[str],
    skip: Sequence[str],
    settings: HostSettings,
    fail_on: Status = Status.FAIL,
    replay: Path | None = None,
    capture: Path | None = None,
    on_probe: Callable[[ProbeRecord], None] | None = None,
) -> Report:
    """``level`` None means quick, or for a replay the level the capture was taken at."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    start = time.monotonic()
    captured = read_capture(replay) if replay else None
    if level is None:
        level = Level(captured.level) if captured else Level.QUICK
    checks = select_checks(level, only, skip)
    # A capture holds every probe of its level, whatever --only/--skip said, so that a replay
    # can evaluate any check.
    wanted = select_checks(level) if capture else checks
    facts = [HostInfo, *facts_needed(wanted)]
    if captured:
        collection: Collection = collect_replay(facts, captured.records)
        origin = (
            f"replay of {replay} (captured {captured.captured_at}, "
            f"llmtune {captured.llmtune_version})"
        )
    else:
        collection = collect_local(facts, on_probe)
        origin = "local"
    findings = tuple(evaluate_all(checks, collection.facts, settings))
    host = _host(collection.facts)
    if capture:
        write_capture(capture, new_capture(level.value, host.hostname, collection.records))
    return Report(
        host=host,
        level=level.value,
        origin=origin,
        started_at=started_at,
        duration_s=time.monotonic() - start,
        findings=findings,
        exit_code=exit_code(findings, fail_on),
        llmtune_version=__version__,
    )
