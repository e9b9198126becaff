"""``llmtune bench --compare A B --plot`` on real llama-bench runs: the tiny model on this VM's
CPU build with 2 threads and with 1 (recorded, tests/fixtures/llama.cpp/SOURCE.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES

from llmtune.bench.results import BenchRun, parse_jsonl
from llmtune.bench.snapshot import Snapshot


def store(path: Path, recording: str, **snapshot: str) -> Path:
    lines = (FIXTURES / "llama.cpp" / recording).read_text().splitlines()
    run = BenchRun(
        host="vm",
        time="2026-11-23T14:00:00Z",
        snapshot=Snapshot(**snapshot),
        results=parse_jsonl(lines),
    )
    path.write_text(run.to_json() + "\n")
    return path


def test_compare_two_runs_and_plot(tmp_path: Path) -> None:
    before = store(tmp_path / "a.jsonl", "llama-bench-tiny-f32-cpu-0c1e570.jsonl",
                   llama_commit="0c1e570", driver="")  # fmt: skip
    after = store(tmp_path / "b.jsonl", "llama-bench-tiny-f32-cpu-0c1e570-t1.jsonl",
                  llama_commit="0c1e570", driver="")  # fmt: skip
    chart = tmp_path / "out.png"
    proc = subprocess.run(
        [sys.executable, "-m", "llmtune", "bench", "--compare", str(before), str(after),
         "--plot", str(chart)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tg128" in proc.stdout and "llama.cpp unchanged" in proc.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000


def test_the_h100_runs_read_back_and_compare() -> None:
    """The runs `llmtune bench` collected on the H100 (tests/fixtures/recorded/bench-h100)."""
    from llmtune.bench.compare import compare
    from llmtune.bench.results import parse_store

    def load(name: str) -> BenchRun:
        path = FIXTURES / "recorded" / "bench-h100" / f"bench-{name}.jsonl"
        runs, errors = parse_store(path.read_text().splitlines())
        assert not errors and len(runs) == 1 and runs[0].baseline
        return runs[0]

    plenty, budget = load("plenty"), load("budget")
    assert plenty.tests == ("pp512", "tg128", "pp512@d16384", "tg128@d16384")
    assert plenty.snapshot.driver == "580.159.04"
    tg = plenty.result("tg128")
    assert tg is not None and 270 < tg.median_ts < 290  # the anchors' llama.cpp defaults: 274.7
    verdict = compare(plenty, budget)
    assert not verdict.ok and "tg128 -84%" in verdict.summary()
