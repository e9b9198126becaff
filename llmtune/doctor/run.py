"""Choosing checks and evaluating them into findings; exit codes. Pure: no host I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llmtune.checks import all_checks
from llmtune.checks.registry import Check, FactUnavailable, FactValues, Level
from llmtune.facts.probe import LlmtuneFact
from llmtune.findings import Finding, Outcome, Status
from llmtune.settings import HostSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERRORED = 3


class SelectionError(ValueError):
    pass


def _split(values: Iterable[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _matches(check: Check, token: str) -> bool:
    token = token.lower()
    return token in (check.id.lower(), check.name.lower(), check.category.lower())


def select_checks(level: Level, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Check]:
    """Checks of the level (full includes quick), narrowed by --only and --skip tokens.

    A token is a check ID (MEM001), name (ram-rated-speed) or category (memory); one that matches
    nothing is a usage error rather than a silently empty run.
    """
    checks = all_checks()
    only_tokens, skip_tokens = _split(only), _split(skip)
    for token in [*only_tokens, *skip_tokens]:
        if not any(_matches(c, token) for c in checks):
            raise SelectionError(f"no check or category matches {token!r}")
    chosen = [c for c in checks if level == Level.FULL or c.level == Level.QUICK]
    if only_tokens:
        chosen = [c for c in chosen if any(_matches(c, t) for t in only_tokens)]
    return [c for c in chosen if not any(_matches(c, t) for t in skip_tokens)]


def facts_needed(checks: Iterable[Check]) -> list[type[LlmtuneFact[Any]]]:
    return list(dict.fromkeys(f for c in checks for f in c.facts))


def _finding(check: Check, outcome: Outcome) -> Finding:
    return Finding(
        id=check.id,
        name=check.name,
        title=check.title,
        category=check.category,
        severity=check.severity,
        status=outcome.status,
        observed=outcome.observed,
        expected=outcome.expected,
        fix=outcome.fix,
        source=check.source,
        details=outcome.details,
    )


def evaluate(check: Check, facts: FactValues, settings: HostSettings) -> Finding:
    """Run one check; a missing fact or a crash becomes a finding, never a traceback."""
    try:
        outcome = check.func(facts, settings)
    except FactUnavailable as exc:
        status = Status.SKIP if exc.skip else Status.ERROR
        outcome = Outcome(status, f"fact {exc.fact} unavailable: {exc.reason}")
    except Exception as exc:
        outcome = Outcome(Status.ERROR, f"check crashed: {type(exc).__name__}: {exc}")
    return _finding(check, outcome)


def evaluate_all(
    checks: Iterable[Check], facts: FactValues, settings: HostSettings
) -> list[Finding]:
    return [evaluate(c, facts, settings) for c in checks]


@dataclass(frozen=True)
class Summary:
    passed: int
    warned: int
    failed: int
    skipped: int
    errored: int

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> Summary:
        statuses = [f.status for f in findings]
        return cls(
            statuses.count(Status.PASS),
            statuses.count(Status.WARN),
            statuses.count(Status.FAIL),
            statuses.count(Status.SKIP),
            statuses.count(Status.ERROR),
        )


def exit_code(findings: Iterable[Finding], fail_on: Status = Status.FAIL) -> int:
    """0 no failure; 1 a failure (or a warning with --fail-on warn); 3 an error and no failure."""
    summary = Summary.of(findings)
    if summary.failed or (fail_on == Status.WARN and summary.warned):
        return EXIT_FAILED
    if summary.errored:
        return EXIT_ERRORED
    return EXIT_OK
