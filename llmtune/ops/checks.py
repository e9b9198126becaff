"""Evaluating a doctor check on a pyinfra host during a deploy (the deploy's own guard rails)."""

from __future__ import annotations

from pyinfra import host

from llmtune.checks import all_checks
from llmtune.checks.registry import FactUnavailable, FactValues
from llmtune.doctor.run import evaluate
from llmtune.findings import Finding
from llmtune.settings import HostSettings


def check_on_host(check_id: str, settings: HostSettings) -> Finding:
    """Read the check's facts from the current host (at prepare time) and evaluate it."""
    check = next(c for c in all_checks() if c.id == check_id)
    values = {}
    problems = {}
    for fact in check.facts:
        try:
            values[fact] = host.get_fact(fact)
        except Exception as exc:  # reported by the check as an error, never a traceback
            problems[fact] = FactUnavailable(fact.__name__, str(exc))
    return evaluate(check, FactValues(values, problems), settings)
