"""``llmtune tune --confirm``'s pure part (llmtune/tune/confirm.py): which configurations are
finalists and under which names, the interleaved order, and the medians, on real files: the CPU
VM's recordings (tests/fixtures/recorded/tune-report/SOURCE.md) and the H100 run 4 files
committed with docs/benchmarks.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from llmtune.tune import confirm
from llmtune.tune.config import Config
from llmtune.tune.trial import parse_trials

FIXTURES = Path(__file__).parent / "fixtures" / "recorded" / "tune-report"
H100 = Path(__file__).parent.parent / "docs" / "benchmarks" / "h100"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def summary_winner(path: Path) -> Config:
    last = [json.loads(x) for x in lines(path) if '"summary"' in x][-1]
    return Config.from_dict(last["winner"])


def test_finalists_of_a_tune_and_a_sweep_file() -> None:
    tune, sweep = FIXTURES / "c-tune.jsonl", FIXTURES / "c-sweep.jsonl"
    found = confirm.finalists([(str(tune), lines(tune)), (str(sweep), lines(sweep))])
    names = list(found.values())
    assert names == [
        ("llama.cpp defaults",),
        ("seed recipe",),
        ("plan",),
        ("tune",),
        ("sweep best",),
    ]
    by_name = {n[0]: c for c, n in found.items()}
    # tune: the configuration its summary chose after the check (ubatch 512), not a search row.
    assert by_name["tune"] == summary_winner(tune)
    assert by_name["tune"].ubatch == 512
    # sweep best: the fastest TG of the sweep's trials (6184.1 t/s at ubatch 256).
    rows = [t for _, t in parse_trials(lines(sweep)) if t.score]
    fastest = max(rows, key=lambda t: t.score.tg)
    assert by_name["sweep best"] == fastest.config and fastest.config.ubatch == 256


def test_one_configuration_with_several_names_is_one_finalist() -> None:
    # H100 run 4, all VRAM: the check kept the plan, so "plan" and "tune" are one configuration.
    tune, sweep = H100 / "s1-tune.jsonl", H100 / "s1-sweep.jsonl"
    found = confirm.finalists([(str(tune), lines(tune)), (str(sweep), lines(sweep))])
    assert ("plan", "tune") in found.values()
    assert len(found) == 4
    assert confirm.label(("plan", "tune")) == "confirm:plan,tune"
    assert confirm.names_of("confirm:plan,tune") == ("plan", "tune")


def test_a_name_given_twice_keeps_the_first_files_configuration() -> None:
    first, second = FIXTURES / "c-tune.jsonl", FIXTURES / "s1-tune.jsonl"
    found = confirm.finalists([(str(first), lines(first)), (str(second), lines(second))])
    by_name = {n: c for c, names in found.items() for n in names}
    assert by_name["tune"] == summary_winner(first)
    assert by_name["plan"].ubatch == 1024  # c-tune's plan (the settings then held ubatch 1024)


def test_a_file_without_measurements_is_refused_with_its_name(tmp_path: Path) -> None:
    empty = tmp_path / "started-only.jsonl"
    empty.write_text(lines(FIXTURES / "s1-sweep.jsonl")[0] + "\n")
    with pytest.raises(confirm.ConfirmError, match=r"started-only\.jsonl"):
        confirm.finalists([(str(empty), lines(empty))])


def test_schedule_rotates_the_rounds() -> None:
    a, b, c = (Config("cpu", threads=t) for t in (1, 2, 3))
    assert confirm.schedule([a, b, c], 3) == [a, b, c, b, c, a, c, a, b]
    assert confirm.schedule([a], 2) == [a, a]
    assert confirm.schedule([], 3) == []


def test_names_of_other_trials_is_empty() -> None:
    assert confirm.names_of("ref:plan") == ()
    assert confirm.names_of("plan") == ()


def test_the_medians_of_a_recorded_confirm_run() -> None:
    rows = [t for _, t in parse_trials(lines(FIXTURES / "c-confirm.jsonl"))]
    found = confirm.confirmed(rows)
    assert list(found) == ["llama.cpp defaults", "seed recipe", "plan", "tune", "sweep best"]
    plan_tg = [t.tg.avg_ts for t in rows if t.label == "confirm:plan" and t.tg]
    plan_pp = [t.pp.avg_ts for t in rows if t.label == "confirm:plan" and t.pp]
    plan = found["plan"]
    assert plan.rounds == 3 and plan.failed == 0
    assert plan.tg_median == pytest.approx(statistics.median(plan_tg))
    assert plan.pp_median == pytest.approx(statistics.median(plan_pp))
    assert plan.tg_spread == pytest.approx((max(plan_tg) - min(plan_tg)) / plan.tg_median)
    # The seed recipe's q8_0 cache fails on this model in every round: no numbers, 3 failures.
    seed = found["seed recipe"]
    assert seed.rounds == 0 and seed.failed == 3 and seed.tg_median is None
    text = "\n".join(confirm.summary(found))
    assert "seed recipe          not measured (3 round(s) failed)" in text
    tune = found["tune"]
    change = (tune.tg_median / plan.tg_median - 1) * 100
    assert f"({change:+.1f}% tg vs the plan)" in text
