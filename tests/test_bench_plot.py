"""The before/after chart: a real PNG of the runs' panels, regressions in red."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_bench_compare import later, recorded, scaled
from test_bench_snapshot import debian_snapshot, h100_snapshot

from llmtune.bench.plot import AFTER_COLOR, REGRESSION_COLOR, plot_compare
from llmtune.bench.results import BenchRun

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must start with."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def has_color(path: Path, color: str) -> bool:
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    pixels = imread(str(path))[..., :3]
    return bool((np.abs(pixels - rgb) < 0.02).all(axis=-1).any())


@pytest.fixture
def cpu_runs(tmp_path: Path) -> tuple[BenchRun, BenchRun]:
    """The CPU VM's planned run (-t 2) and the one-thread run recorded after it."""
    snapshot = debian_snapshot(tmp_path)
    before = BenchRun(
        "vm", "2026-11-23T14:19:42Z", snapshot, recorded("llama-bench-tiny-f32-cpu-0c1e570.jsonl")
    )
    after = BenchRun(
        "vm",
        "2026-11-23T14:25:10Z",
        snapshot,
        recorded("llama-bench-tiny-f32-cpu-0c1e570-t1.jsonl"),
    )
    return before, after


def test_a_png_with_one_panel_per_test(tmp_path: Path, cpu_runs) -> None:
    before, after = cpu_runs
    out = plot_compare(before, after, tmp_path / "cmp.png")
    assert out == tmp_path / "cmp.png"
    # Four tests: four 2.4-inch panels at 100 dpi, 4.2 inches high.
    assert png_size(out) == (960, 420)
    assert 10_000 < out.stat().st_size < 1_000_000
    # Every test regressed (one thread instead of two): the after bars are red.
    assert has_color(out, REGRESSION_COLOR) and not has_color(out, AFTER_COLOR)


def test_no_regression_draws_no_red(tmp_path: Path) -> None:
    base = BenchRun(
        "gpu1",
        "2026-11-23T10:13:40Z",
        h100_snapshot(tmp_path),
        recorded("llama-bench-8b-q4km-h100-default.jsonl"),
        baseline=True,
    )
    fine = plot_compare(base, later(base, scaled(base.results, "tg128", 0.97)), tmp_path / "a.png")
    # Two tests: the figure keeps its least width.
    assert png_size(fine) == (480, 420)
    assert has_color(fine, AFTER_COLOR) and not has_color(fine, REGRESSION_COLOR)
    slow = plot_compare(base, later(base, scaled(base.results, "tg128", 0.71)), tmp_path / "b.png")
    assert has_color(slow, REGRESSION_COLOR) and has_color(slow, AFTER_COLOR)


def test_nothing_to_plot_is_an_error(tmp_path: Path, cpu_runs) -> None:
    before, _ = cpu_runs
    empty = BenchRun("vm", "2026-11-23T14:30:00Z", before.snapshot, ())
    with pytest.raises(ValueError, match="neither run has a result"):
        plot_compare(empty, empty, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
