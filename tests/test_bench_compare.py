"""A bench run against its baseline: the thresholds on the H100's recorded run (its rates scaled
where a test needs a given drop), and a real slowdown recorded on the CPU VM (-t 2 -> -t 1)."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import fixture_text
from test_bench_argv import BENCH, HELP, recorded_plan
from test_bench_snapshot import debian_snapshot, h100_snapshot

from llmtune.bench.argv import bench_command
from llmtune.bench.compare import PP_THRESHOLD_PCT, TG_THRESHOLD_PCT, compare
from llmtune.bench.results import BenchResult, BenchRun, parse_jsonl

NEW_COMMIT = "abcdef1234567890abcdef1234567890abcdef12"


def recorded(name: str) -> tuple[BenchResult, ...]:
    return parse_jsonl(fixture_text("llama.cpp", name).splitlines())


def scaled(results: tuple[BenchResult, ...], test: str, factor: float) -> tuple[BenchResult, ...]:
    """The recorded results with one test's rates multiplied by ``factor`` (a slower run)."""
    out = []
    for result in results:
        raw = dict(result.raw)
        if result.test == test:
            raw["avg_ts"] = raw["avg_ts"] * factor
            raw["samples_ts"] = [s * factor for s in raw["samples_ts"]]
        out.append(BenchResult.from_mapping(json.loads(json.dumps(raw))))
    return tuple(out)


@pytest.fixture
def baseline(tmp_path: Path) -> BenchRun:
    return BenchRun(
        host="gpu1",
        time="2026-11-23T10:13:40Z",
        snapshot=h100_snapshot(tmp_path),
        results=recorded("llama-bench-8b-q4km-h100-default.jsonl"),
        baseline=True,
    )


def later(baseline: BenchRun, results: tuple[BenchResult, ...], **snapshot: str) -> BenchRun:
    return replace(
        baseline,
        time="2026-11-30T08:00:00Z",
        results=results,
        snapshot=replace(baseline.snapshot, **snapshot),
        baseline=False,
    )


def test_thresholds_default_to_5_and_10_percent() -> None:
    assert (TG_THRESHOLD_PCT, PP_THRESHOLD_PCT) == (5.0, 10.0)


def test_a_29_percent_generation_drop_after_a_new_llama_cpp(baseline: BenchRun) -> None:
    run = later(baseline, scaled(baseline.results, "tg128", 0.71), llama_commit=NEW_COMMIT)
    verdict = compare(baseline, run)
    assert not verdict.ok
    (tg,) = verdict.regressions
    assert (tg.test, tg.kind, tg.threshold_pct) == ("tg128", "tg", 5.0)
    assert tg.before == 273.751 and tg.after == pytest.approx(273.751 * 0.71)
    assert tg.delta_pct == pytest.approx(-29.0)
    assert verdict.summary() == "llama.cpp 0c1e570 -> abcdef1, driver unchanged, tg128 -29%"


def test_a_3_percent_drop_is_within_the_threshold(baseline: BenchRun) -> None:
    verdict = compare(baseline, later(baseline, scaled(baseline.results, "tg128", 0.97)))
    assert verdict.ok and verdict.regressions == ()
    assert verdict.summary() == "llama.cpp unchanged, driver unchanged, pp512 +0.0%, tg128 -3.0%"


@pytest.mark.parametrize(("factor", "ok"), [(0.91, True), (0.89, False)])
def test_prompt_processing_has_a_10_percent_threshold(
    baseline: BenchRun, factor: float, ok: bool
) -> None:
    verdict = compare(baseline, later(baseline, scaled(baseline.results, "pp512", factor)))
    assert verdict.ok is ok
    pp = verdict.deltas[0]
    assert (pp.test, pp.kind, pp.threshold_pct, pp.regression) == ("pp512", "pp", 10.0, not ok)


def test_thresholds_are_settable(baseline: BenchRun) -> None:
    run = later(baseline, scaled(baseline.results, "tg128", 0.71))
    assert compare(baseline, run, tg_pct=30.0).ok
    run = later(baseline, scaled(baseline.results, "pp512", 0.97))
    verdict = compare(baseline, run, pp_pct=2.0)
    assert not verdict.ok and verdict.summary().endswith(", pp512 -3.0%")


def test_a_missing_test_is_a_regression_a_new_one_is_not(baseline: BenchRun) -> None:
    pp_only = later(baseline, baseline.results[:1])
    verdict = compare(baseline, pp_only)
    assert not verdict.ok and verdict.summary().endswith(", tg128 missing")
    assert verdict.deltas[1].delta_pct is None and verdict.deltas[1].missing
    # The depth tests appear once the baseline is older than them.
    more = later(baseline, recorded("llama-bench-8b-q4km-h100-cpu16.jsonl") + baseline.results)
    verdict = compare(baseline, more)
    assert [d.test for d in verdict.deltas] == ["pp512", "tg128", "pp64", "tg16"]
    assert [d.brief() for d in verdict.deltas[2:]] == ["pp64 new", "tg16 new"]
    assert verdict.ok


def test_the_medians_are_compared(baseline: BenchRun) -> None:
    # pp512's mean (9146) carries a slow first repetition; its median (9855.12) does not.
    pp = compare(baseline, baseline).deltas[0]
    assert pp.before == pp.after == 9855.12 and pp.delta_pct == 0.0


def test_a_real_slowdown_on_the_cpu_vm(tmp_path: Path) -> None:
    # The same tiny model on the same VM, recorded one after the other: the planned -t 2, then
    # -t 1 (the commands are in the .cmd.txt fixture).
    commands = fixture_text("llama.cpp", "llama-bench-tiny-f32-cpu-0c1e570.cmd.txt").splitlines()
    bench_lines = [c for c in commands if c.startswith("/") and "/llama-bench " in c]
    planned, one_thread = (tuple(shlex.split(c)) for c in bench_lines)
    snapshot = debian_snapshot(tmp_path)
    before = BenchRun(
        host="vm",
        time="2026-11-23T14:19:42Z",
        snapshot=snapshot,
        results=recorded("llama-bench-tiny-f32-cpu-0c1e570.jsonl"),
        argv=planned,
        baseline=True,
    )
    after = BenchRun(
        host="vm",
        time="2026-11-23T14:25:10Z",
        snapshot=snapshot,
        results=recorded("llama-bench-tiny-f32-cpu-0c1e570-t1.jsonl"),
        argv=one_thread,
    )
    verdict = compare(before, after)
    assert not verdict.ok
    assert verdict.changes == ("llama.cpp unchanged", "bench -t 2 -> 1")
    assert verdict.summary() == (
        "llama.cpp unchanged, bench -t 2 -> 1, pp512 -59%, tg128 -33%, pp512@d1024 -46%, "
        "tg128@d1024 -32%"
    )


def test_a_new_plan_is_named_next_to_the_numbers(baseline: BenchRun) -> None:
    # The bench commands of the two plans recorded on the H100: plenty of VRAM, then 4 GB.
    plenty = bench_command(recorded_plan("plenty", "gpu"), HELP, BENCH).argv
    budget = bench_command(recorded_plan("budget", "fit"), HELP, BENCH).argv
    before = replace(baseline, argv=plenty)
    after = later(replace(baseline, argv=budget), baseline.results)
    assert compare(before, after).changes == (
        "llama.cpp unchanged",
        "driver unchanged",
        "bench -ngl 999 removed",
        "bench -ctk f16 -> q8_0",
        "bench -ctv f16 -> q8_0",
        "bench -fitt 77559 added",
        "bench -fitc 32768 added",
    )
