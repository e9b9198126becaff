"""llama-bench -o jsonl on real recordings (the H100 8B runs, the CPU tiny-model runs) and the
JSONL store of bench runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FIXTURES, fixture_text
from test_bench_snapshot import h100_snapshot

from llmtune.bench.results import (
    SCHEMA,
    STORE_PATH,
    BenchOutputError,
    BenchResult,
    BenchRun,
    latest_baseline,
    latest_run,
    parse_jsonl,
    parse_store,
)
from llmtune.bench.snapshot import Snapshot

H100_DEFAULT = "llama-bench-8b-q4km-h100-default.jsonl"
H100_CPU16 = "llama-bench-8b-q4km-h100-cpu16.jsonl"
TINY_CPU = "llama-bench-tiny-f32-cpu-0c1e570.jsonl"


def recorded(name: str) -> tuple[BenchResult, ...]:
    return parse_jsonl(fixture_text("llama.cpp", name).splitlines())


def test_h100_defaults() -> None:
    pp, tg = recorded(H100_DEFAULT)
    assert (pp.test, pp.kind, pp.n_prompt, pp.n_gen, pp.n_depth) == ("pp512", "pp", 512, 0, 0)
    assert (pp.avg_ts, pp.stddev_ts) == (9146.346061, 1292.40643)
    assert pp.samples_ts == (7654.62, 9855.12, 9929.3)
    # The median leaves out the slow first repetition the mean carries.
    assert pp.median_ts == 9855.12
    assert (tg.test, tg.kind, tg.avg_ts, tg.stddev_ts) == ("tg128", "tg", 274.654795, 1.612228)
    assert tg.median_ts == 273.751
    # Everything llama-bench printed stays readable.
    assert tg.get("gpu_info") == "NVIDIA H100 80GB HBM3"
    assert (tg.get("n_gpu_layers"), tg.get("flash_attn"), tg.get("build_commit")) == (
        -1,
        -1,
        "unknown",
    )


def test_h100_cpu_only_single_repetition() -> None:
    pp, tg = recorded(H100_CPU16)
    assert (pp.test, tg.test) == ("pp64", "tg16")
    assert (pp.avg_ts, tg.avg_ts) == (88.441174, 14.236409)
    # One sample: llama-bench prints a 0 spread; the median is that sample.
    assert tg.stddev_ts == 0.0 and tg.samples_ts == (14.2364,) and tg.median_ts == 14.2364


def test_tiny_cpu_run_with_depth() -> None:
    results = recorded(TINY_CPU)
    assert [r.test for r in results] == ["pp512", "tg128", "pp512@d1024", "tg128@d1024"]
    assert [r.kind for r in results] == ["pp", "tg", "pp", "tg"]
    assert results[3].n_depth == 1024 and results[3].avg_ts == 4153.724458
    assert results[3].get("build_commit") == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def test_merged_stderr_lines_are_skipped() -> None:
    # A CUDA build's start-up lines (recorded before llama-bench's help) ahead of the results.
    startup = fixture_text("llama.cpp", "llama-bench-help-0c1e570.txt").splitlines()[:2]
    lines = [*startup, "", *fixture_text("llama.cpp", H100_DEFAULT).splitlines()]
    assert parse_jsonl(lines) == recorded(H100_DEFAULT)


def test_a_broken_line_is_an_error_naming_it() -> None:
    good = fixture_text("llama.cpp", H100_DEFAULT).splitlines()
    cut = good[1][: len(good[1]) // 2]  # the run was killed mid-line
    with pytest.raises(BenchOutputError, match="line 2: not JSON"):
        parse_jsonl([good[0], cut])
    no_rate = good[0].replace('"avg_ts"', '"avg_tps"')
    with pytest.raises(BenchOutputError, match="line 1: avg_ts: expected a number, got None"):
        parse_jsonl([no_rate])


# --- the store ----------------------------------------------------------------------------------


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    return h100_snapshot(tmp_path)


def h100_run(snapshot: Snapshot, **changes: object) -> BenchRun:
    """The H100 defaults recording as a stored run."""
    run = BenchRun(
        host="gpu1",
        time="2026-11-23T10:13:40Z",
        snapshot=snapshot,
        results=recorded(H100_DEFAULT),
        argv=("/opt/llmtune/llama.cpp/current/bin/llama-bench", "-r", "3", "-o", "jsonl"),
    )
    return replace(run, **changes)  # type: ignore[arg-type]


def test_run_round_trips_through_one_json_line(snapshot: Snapshot) -> None:
    run = h100_run(snapshot, baseline=True)
    line = run.to_json()
    assert "\n" not in line and line.startswith('{"argv":')
    again = BenchRun.from_json(line)
    assert again == run and again.to_json() == line
    assert again.schema == SCHEMA and again.label == "gpu1 2026-11-23T10:13:40Z (baseline)"
    # The results are stored as llama-bench printed them.
    assert again.results[0].raw == run.results[0].raw
    assert again.result("tg128") is not None and again.result("tg512") is None


def test_other_schemas_and_garbage_are_refused(snapshot: Snapshot) -> None:
    line = h100_run(snapshot).to_json()
    with pytest.raises(BenchOutputError, match=r"schema 'llmtune\.bench/v2'"):
        BenchRun.from_json(line.replace(SCHEMA, "llmtune.bench/v2"))
    with pytest.raises(BenchOutputError, match="not a JSON object"):
        BenchRun.from_json("[1, 2]")


def test_store_keeps_the_runs_around_a_torn_line(snapshot: Snapshot) -> None:
    first = h100_run(snapshot, baseline=True)
    second = h100_run(snapshot, time="2026-11-24T09:00:00Z")
    torn = second.to_json()[:200]
    text = "\n".join([first.to_json(), torn, "", second.to_json()]) + "\n"
    runs, errors = parse_store(text.splitlines())
    assert runs == [first, second]
    assert len(errors) == 1 and errors[0].startswith(f"{STORE_PATH} line 2: not JSON")


def test_latest_baseline_and_run(snapshot: Snapshot) -> None:
    old_base = h100_run(snapshot, baseline=True, time="2026-11-20T00:00:00Z")
    run_1 = h100_run(snapshot, time="2026-11-21T00:00:00Z")
    base = h100_run(snapshot, baseline=True, time="2026-11-22T00:00:00Z")
    other_host = h100_run(snapshot, host="gpu2", time="2026-11-23T00:00:00Z")
    run_2 = h100_run(snapshot, time="2026-11-24T00:00:00Z")
    runs = [old_base, run_1, base, other_host, run_2]
    assert latest_baseline(runs, "gpu1") == base
    assert latest_baseline(runs, "gpu2") is None
    assert latest_run(runs, host="gpu1") == run_2
    assert latest_run(runs) == run_2
    assert latest_run(runs, host="gpu2") == other_host
    assert latest_run(runs[:3], host="gpu1", baseline=False) == run_1
    assert latest_run([], host="gpu1") is None


def test_fixture_files_are_real_recordings() -> None:
    # Each line as llama-bench writes it: "samples_ns" and "samples_ts" close the object.
    for name in (H100_DEFAULT, H100_CPU16, TINY_CPU):
        for line in (FIXTURES / "llama.cpp" / name).read_text().splitlines():
            assert line.startswith('{"build_commit": ') and '],"samples_ts": [ ' in line
