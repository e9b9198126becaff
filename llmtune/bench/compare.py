"""A bench run against the baseline: per test before, after and the change; regressions beyond
the thresholds; what changed in the snapshot, for ``llmtune verify``.

The thresholds (settable): generation 5%, prompt processing 10%. Generation is the steadier of
the two (H100, -r 3: tg128 274.7 t/s with a 0.6% spread) and the one users feel; prompt
processing swings more between repetitions (pp512 7655 to 9929 t/s in the same run), hence the
wider margin and the median rather than the mean (``BenchResult.median_ts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmtune.bench.argv import server_options
from llmtune.bench.results import BenchResult, BenchRun
from llmtune.bench.snapshot import diff

TG_THRESHOLD_PCT = 5.0
PP_THRESHOLD_PCT = 10.0


@dataclass(frozen=True)
class BenchDelta:
    """One test in both runs. Example::

    BenchDelta(test="tg128", kind="tg", before=274.7, after=195.0, threshold_pct=5.0)

    ``before`` is None for a test the baseline lacks (new, never a regression); ``after`` is None
    for one the run lacks (a regression: the test failed or no longer runs).
    """

    test: str
    kind: str
    before: float | None
    after: float | None
    threshold_pct: float

    @property
    def delta_pct(self) -> float | None:
        if self.before is None or self.after is None or self.before <= 0:
            return None
        return (self.after - self.before) / self.before * 100.0

    @property
    def missing(self) -> bool:
        return self.before is not None and self.after is None

    @property
    def regression(self) -> bool:
        delta = self.delta_pct
        return self.missing or (delta is not None and delta < -self.threshold_pct)

    def brief(self) -> str:
        """The test and its change: "tg128 -29%", "pp512 +0.4%", "tg128@d16384 missing"."""
        if self.missing:
            return f"{self.test} missing"
        delta = self.delta_pct
        if delta is None:
            return f"{self.test} new"
        return f"{self.test} {_percent(delta)}"


def _percent(delta: float) -> str:
    # Whole percents from 10% on (the thresholds' scale), one decimal below.
    shown = f"{delta:+.0f}" if abs(delta) >= 10 else f"{delta:+.1f}"
    return f"{shown}%"


@dataclass(frozen=True)
class Verdict:
    """The comparison. Example::

    Verdict(baseline=BenchRun(...), run=BenchRun(...), deltas=(BenchDelta("pp512", ...), ...),
            changes=("llama.cpp 0c1e570 -> abcdef1", "driver unchanged"),
            tg_pct=5.0, pp_pct=10.0)
    """

    baseline: BenchRun
    run: BenchRun
    deltas: tuple[BenchDelta, ...]
    # The snapshot's changes (snapshot.diff), then the bench command's, if it changed.
    changes: tuple[str, ...]
    tg_pct: float
    pp_pct: float

    @property
    def regressions(self) -> tuple[BenchDelta, ...]:
        return tuple(d for d in self.deltas if d.regression)

    @property
    def ok(self) -> bool:
        return not self.regressions

    def summary(self) -> str:
        """One line: what changed, then the regressions ("llama.cpp 0c1e570 -> abcdef1, driver
        unchanged, tg128 -29%"); without a regression, every test's change."""
        shown = self.regressions or self.deltas
        return ", ".join([*self.changes, *(d.brief() for d in shown)])


def _value(result: BenchResult | None) -> float | None:
    return None if result is None else result.median_ts


def _argv_changes(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """What differs between two bench commands ("bench -t 16 -> 8", "bench -C 0xff added"):
    after a new plan the numbers measure different settings, which the reader must know."""
    if not before or not after:
        return []
    old, new = dict(server_options(before[1:])), dict(server_options(after[1:]))
    changes: list[str] = []
    for flag in [*old, *(f for f in new if f not in old)]:
        a, b = old.get(flag, ""), new.get(flag, "")
        if flag not in new:
            changes.append(f"bench {flag} {a or ''}".rstrip() + " removed")
        elif flag not in old:
            changes.append(f"bench {flag} {b or ''}".rstrip() + " added")
        elif a != b:
            changes.append(f"bench {flag} {a} -> {b}")
    return changes


def compare(
    baseline: BenchRun,
    run: BenchRun,
    tg_pct: float = TG_THRESHOLD_PCT,
    pp_pct: float = PP_THRESHOLD_PCT,
) -> Verdict:
    """Every test of the baseline (in its order), then those only the run has."""
    tests = list(baseline.tests) + [t for t in run.tests if t not in baseline.tests]
    deltas = []
    for test in tests:
        before, after = baseline.result(test), run.result(test)
        known = before if before is not None else after
        assert known is not None  # the test comes from one of the two runs
        kind = known.kind
        deltas.append(
            BenchDelta(
                test=test,
                kind=kind,
                before=_value(before),
                after=_value(after),
                threshold_pct=pp_pct if kind == "pp" else tg_pct,
            )
        )
    changes = diff(baseline.snapshot, run.snapshot)
    changes += _argv_changes(baseline.argv, run.argv)
    return Verdict(baseline, run, tuple(deltas), tuple(changes), tg_pct, pp_pct)
