"""Post-upgrade verification of one host: doctor, bench, comparison with the saved baseline.

A host passes when the doctor finds no failure and no test fell beyond its threshold against the
latest baseline in the host's store. The summary names what changed next to the numbers
("llama.cpp 0c1e570 -> abcdef1, driver unchanged, tg128 -29%").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmtune.bench.compare import PP_THRESHOLD_PCT, TG_THRESHOLD_PCT, Verdict, compare
from llmtune.bench.results import BenchRun, latest_baseline
from llmtune.bench.run import BenchError, read_store, run_bench
from llmtune.bench.target import Target
from llmtune.doctor.report import Report
from llmtune.findings import Status


@dataclass(frozen=True)
class HostVerification:
    host: str
    doctor_failures: tuple[str, ...]
    run: BenchRun | None
    verdict: Verdict | None
    error: str = ""

    @property
    def ok(self) -> bool:
        passed = bool(self.verdict and self.verdict.ok)
        return passed and not self.error and not self.doctor_failures

    def summary(self) -> str:
        parts = []
        if self.doctor_failures:
            parts.append("doctor: " + ", ".join(self.doctor_failures))
        if self.error:
            parts.append(self.error)
        if self.verdict is not None:
            parts.append(self.verdict.summary())
        return "; ".join(parts) or "ok"


def failures(report: Report) -> tuple[str, ...]:
    if not report.findings and report.exit_code:
        return (report.origin,)  # unreachable
    return tuple(f.id for f in report.findings if f.status in (Status.FAIL, Status.ERROR))


def verify_target(
    target: Target,
    report: Report,
    *,
    tg_pct: float = TG_THRESHOLD_PCT,
    pp_pct: float = PP_THRESHOLD_PCT,
    repetitions: int = 5,
    progress: Callable[[str], None] = lambda _: None,
) -> HostVerification:
    """``report``: the doctor's report of the same host, taken just before."""
    doctor_failures = failures(report)
    baseline = latest_baseline(read_store(target), target.name)
    if baseline is None:
        return HostVerification(
            target.name,
            doctor_failures,
            None,
            None,
            error="no baseline: run `llmtune bench --save-baseline` on this host first",
        )
    try:
        run = run_bench(target, repetitions=repetitions, progress=progress)
    except BenchError as exc:
        return HostVerification(target.name, doctor_failures, None, None, error=str(exc))
    verdict = compare(baseline, run, tg_pct=tg_pct, pp_pct=pp_pct)
    return HostVerification(target.name, doctor_failures, run, verdict)
