"""tune's record of a measured configuration (llmtune.tune/v1 JSON lines), with llama-bench
results recorded on the H100 (the 8B at llama.cpp's defaults) and on the Debian 12 VM (the
synthetic tiny model at 2 and at 1 thread, -p 512 -n 128 -d 0,1024)."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES

from llmtune.bench.results import BenchResult, parse_jsonl
from llmtune.tune import trial as trial_module
from llmtune.tune.config import Config
from llmtune.tune.search import Score
from llmtune.tune.trial import SCHEMA, Trial, assign_results, parse_trials

LLAMA = FIXTURES / "llama.cpp"
BUDGET = Config("fit", "q8_0", "on", 512, 16, None, 77559, "mlock")


def recorded(name: str) -> tuple[BenchResult, ...]:
    return parse_jsonl((LLAMA / name).read_text().splitlines())


def h100_defaults() -> tuple[BenchResult, BenchResult]:
    """pp512 9146 t/s and tg128 274.7 t/s: the H100, every layer on the GPU."""
    pp, tg = recorded("llama-bench-8b-q4km-h100-default.jsonl")
    assert (pp.test, tg.test) == ("pp512", "tg128")
    return pp, tg


# --- the JSON line ------------------------------------------------------------------------------


def test_trial_round_trips_through_its_json_line() -> None:
    pp, tg = h100_defaults()
    trial = Trial(BUDGET, ("-ngl", "12"), tg, pp, wall_s=41.3, label="plan")
    line = trial.to_json(host="gpu1", exhaustive=False)
    ((data, back),) = parse_trials([line])
    assert back == trial
    assert back.score == Score(tg=274.654795, pp=9146.346061)
    assert back.tg is not None and back.tg.samples_ts == tg.samples_ts
    assert back.tg.get("n_gpu_layers") == tg.get("n_gpu_layers")
    assert (data["schema"], data["kind"], data["host"]) == (SCHEMA, "trial", "gpu1")
    assert data["brief"] == "fit@77559 q8_0 fa on ub 512 t 16 lm mlock"
    # llama-bench's own object is kept whole.
    assert data["tg"]["llama_bench"] == dict(tg.raw)


def test_failed_trial_round_trips_without_results() -> None:
    trial = Trial(BUDGET, error="--fit found no placement: out of memory", label="")
    ((data, back),) = parse_trials([trial.to_json()])
    assert back == trial and back.score is None
    assert "tg" not in data and "pp" not in data


def test_parse_trials_skips_other_lines() -> None:
    pp, tg = h100_defaults()
    start = json.dumps({"schema": SCHEMA, "kind": "start", "host": "gpu1"})
    summary = json.dumps({"schema": SCHEMA, "kind": "summary", "winner": None})
    other = json.dumps({"schema": "llmtune.bench/v1", "kind": "trial"})
    line = Trial(Config("gpu", threads=16), ("-ngl", "999"), tg, pp, 12.5).to_json()
    found = parse_trials([start, "", line, other, summary])
    assert [t.config for _, t in found] == [Config("gpu", threads=16)]


def test_wall_time_is_kept_to_the_hundredth() -> None:
    ((_, back),) = parse_trials([Trial(BUDGET, wall_s=41.3333).to_json()])
    assert back.wall_s == 41.33


# --- matching llama-bench's results to configurations -------------------------------------------


@pytest.fixture
def tiny_runs() -> tuple[BenchResult, ...]:
    """The tiny model's two recorded runs: -t 2, then -t 1."""
    return recorded("llama-bench-tiny-f32-cpu-0c1e570.jsonl") + recorded(
        "llama-bench-tiny-f32-cpu-0c1e570-t1.jsonl"
    )


def test_assign_results_by_threads(
    tiny_runs: tuple[BenchResult, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The recordings generated 128 tokens; tune's runs generate GEN_TOKENS.
    monkeypatch.setattr(trial_module, "GEN_TOKENS", 128)
    two, one = Config("cpu", ubatch=512, threads=2), Config("cpu", ubatch=512, threads=1)
    got = assign_results([two, one], tiny_runs, 1024)
    assert {c: (tg and tg.test, pp and pp.test) for c, (tg, pp) in got.items()} == {
        two: ("tg128@d1024", "pp512@d1024"),
        one: ("tg128@d1024", "pp512@d1024"),
    }
    assert got[two][0] is not None and got[two][0].avg_ts == pytest.approx(4153.724458)
    assert got[one][0] is not None and got[one][0].avg_ts == pytest.approx(2799.971849)
    assert got[one][1] is not None and got[one][1].avg_ts == pytest.approx(21495.176381)
    # Depth 0: the runs' first two tests.
    at_zero = assign_results([two], tiny_runs, 0)[two]
    assert [r.avg_ts if r else None for r in at_zero] == [17144.883337, 106413.563409]


def test_assign_results_by_ubatch(
    tiny_runs: tuple[BenchResult, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trial_module, "GEN_TOKENS", 128)
    # Both runs used -ub 512: a configuration with another physical batch has no result.
    other = Config("cpu", ubatch=256, threads=2)
    assert assign_results([other], tiny_runs, 1024) == {other: (None, None)}
    # llama.cpp's default physical batch (None) matches on threads alone.
    default = Config("cpu", threads=1)
    tg, pp = assign_results([default], tiny_runs, 1024)[default]
    assert tg is not None and tg.get("n_threads") == 1 and tg.get("n_ubatch") == 512
    assert pp is not None and pp.get("n_threads") == 1


def test_results_of_other_tests_are_not_tunes(tiny_runs: tuple[BenchResult, ...]) -> None:
    """tune reads tg64@dD: the recorded -n 128 generation is not taken for it."""
    config = Config("cpu", ubatch=512, threads=2)
    tg, pp = assign_results([config], tiny_runs, 1024)[config]
    assert tg is None
    assert pp is not None and pp.test == "pp512@d1024" and pp.get("n_threads") == 2
    assert Trial(config, tg=tg, pp=pp).score is None
