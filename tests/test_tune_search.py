"""tune's search on a hand-built space: the coordinate walk over the knobs, failed measurements,
the exhaustive sweep, the winner's tie rule, and the walk against a known speed function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from llmtune.tune.config import Config
from llmtune.tune.search import TIE, Score, best, next_batch, path, winner
from llmtune.tune.space import Knob, SearchSpace

Measure = Callable[[Config], Score | None]

# The 4 GB budget's plan, with --fit's margin a knob.
START = Config(placement="fit", kv="q8_0", flash_attn="on", ubatch=512, threads=16, fit_target=1024)
FEWER = "fewer than 3/4 of the cores"


def budget_space() -> SearchSpace:
    return SearchSpace(
        start=START,
        knobs=(
            Knob("threads", (8, 12, 16), ((8, FEWER),)),
            Knob("kv", ("f16", "q8_0")),
            Knob("ubatch", (256, 512, 2048)),
            Knob("flash_attn", ("on", "off")),
            Knob("placement", ("fit",), fixed="fit: the plan's placement"),
            Knob("fit_target", (1024, 512)),
        ),
        ctx=32768,
        slots=1,
        moe=False,
    )


# A known speed function: every knob adds its own share (none interact), steps well above TIE.
THREADS_TG = {8: 0.0, 12: 3.0, 16: 2.0}
KV_TG = {"f16": 0.0, "q8_0": 4.0}
UBATCH_TG = {256: 1.0, 512: 0.0, 2048: 2.5}
FA_TG = {"on": 1.5, "off": 0.0}
MARGIN_TG = {1024: 0.0, 512: 1.0}


def additive_tg(config: Config) -> float:
    assert config.threads is not None and config.ubatch is not None
    assert config.fit_target is not None
    return (
        20.0
        + THREADS_TG[config.threads]
        + KV_TG[config.kv]
        + UBATCH_TG[config.ubatch]
        + FA_TG[config.flash_attn]
        + MARGIN_TG[config.fit_target]
    )


def additive(config: Config) -> Score:
    return Score(tg=additive_tg(config), pp=1000.0)


def run_search(space: SearchSpace, measure: Measure) -> tuple[dict, list[list[Config]]]:
    """Measure every batch the search asks for until it says it is done."""
    measured: dict[Config, Score | None] = {}
    batches: list[list[Config]] = []
    while batch := next_batch(space, measured):
        assert len(batches) < 50, "the search does not end"
        assert not set(batch) & set(measured), "a configuration was asked for twice"
        batches.append(batch)
        measured.update({c: measure(c) for c in batch})
    return measured, batches


# --- the walk -----------------------------------------------------------------------------------


def test_first_batch_is_the_start_and_its_thread_variants() -> None:
    batch = next_batch(budget_space(), {})
    # 8 threads is pruned for tune.
    assert batch == [START, replace(START, threads=12)]


def test_a_start_with_nothing_to_vary_joins_the_next_knobs_batch() -> None:
    """All on the GPU: threads and KV pruned, so the start is measured in one llama-bench run
    with the ubatch variants instead of alone (a model load saved)."""
    start = Config(placement="gpu", kv="f16", flash_attn="on", ubatch=512, threads=16)
    space = SearchSpace(
        start=start,
        knobs=(
            Knob("threads", (8, 12, 16), ((8, "gpu"), (12, "gpu"))),
            Knob("kv", ("f16", "q8_0"), (("q8_0", "slower"),)),
            Knob("ubatch", (256, 512, 2048)),
            Knob("flash_attn", ("on", "off"), (("off", "slower"),)),
            Knob("placement", ("gpu",), fixed="gpu"),
            Knob("fit_target", (None,), fixed="--fit is off"),
        ),
        ctx=32768,
        slots=1,
        moe=False,
    )
    first = next_batch(space, {})
    assert first == [start, replace(start, ubatch=256), replace(start, ubatch=2048)]
    measured: dict[Config, Score | None] = {c: Score(200.0, 6000.0 + c.ubatch) for c in first}
    # Nothing left to vary after the ubatch: one run was the whole search.
    assert next_batch(space, measured) == []
    assert winner(measured) == replace(start, ubatch=2048)
    # A start with nothing to vary at all is measured alone.
    alone = tuple(replace(k, values=(getattr(start, k.name),), pruned=()) for k in space.knobs)
    lone = replace(space, knobs=alone)
    assert next_batch(lone, {}) == [start]
    assert next_batch(lone, {start: Score(200.0, 6000.0)}) == []


def test_next_batch_moves_to_kv_with_the_chosen_thread_count() -> None:
    space = budget_space()
    measured: dict[Config, Score | None] = {
        START: Score(tg=20.0, pp=1000.0),
        replace(START, threads=12): Score(tg=22.0, pp=1000.0),
    }
    assert next_batch(space, measured) == [replace(START, threads=12, kv="f16")]
    # The same measurements give the same next step: the search keeps no state.
    assert next_batch(space, dict(measured)) == next_batch(space, measured)


def test_a_batch_holds_only_valid_configurations() -> None:
    space = budget_space()
    measured, batches = run_search(space, additive)
    assert all(space.valid(c) for batch in batches for c in batch)
    # The flash attention step of a q8_0 configuration has nothing to try: off needs f16.
    assert not any(c.kv == "q8_0" and c.flash_attn == "off" for c in measured)


def test_failed_measurements_never_win() -> None:
    space = budget_space()
    failed = replace(START, threads=12)
    measured: dict[Config, Score | None] = {START: Score(tg=20.0, pp=1000.0), failed: None}
    # The walk goes on from the start, not from the configuration that could not run.
    assert next_batch(space, measured) == [replace(START, kv="f16")]
    assert winner(measured) == START
    assert winner({failed: None}) is None
    assert best({}) is None


def test_the_search_ends_after_one_pass_even_when_knobs_interact() -> None:
    """16 threads win only with an f16 cache: one pass never tries that pair."""
    interacting = {(12, "q8_0"): 30.0, (16, "q8_0"): 29.0, (12, "f16"): 28.0, (16, "f16"): 35.0}

    def measure(config: Config) -> Score:
        return Score(tg=interacting[(config.threads, config.kv)], pp=1000.0)

    space = budget_space()
    measured, _ = run_search(space, measure)
    assert next_batch(space, measured) == []
    assert replace(START, threads=16, kv="f16") not in measured
    chosen = winner(measured)
    assert chosen is not None and (chosen.threads, chosen.kv) == (12, "q8_0")


def test_the_walk_finds_the_maximum_of_a_separable_speed_function() -> None:
    space = budget_space()
    measured, batches = run_search(space, additive)
    pruned_grid = space.grid(exhaustive=False)
    expected = max(pruned_grid, key=additive_tg)
    assert expected == Config("fit", "q8_0", "on", 2048, 12, None, 512)
    assert winner(measured) == expected
    # threads (2), kv (1 new), ubatch (2 new), FA (none valid), margin (1 new).
    assert [len(b) for b in batches] == [2, 1, 2, 1]
    assert len(measured) == 6
    assert (len(pruned_grid), len(space.grid(exhaustive=True))) == (36, 54)


def test_path_says_what_each_knob_chose() -> None:
    space = budget_space()
    measured, _ = run_search(space, additive)
    lines = list(path(space, measured))
    # Knobs with one candidate (flash attention under q8_0, the placement) give no line.
    assert [line.split(":")[0] for line in lines] == ["threads", "kv", "ubatch", "fit_target"]
    assert lines[0] == "threads: 12 (tg t/s 16: 27.5, 12: 28.5)"
    assert lines[-1] == "fit_target: 512 (tg t/s 1024: 31.0, 512: 32.0)"


def test_path_marks_a_failed_variant() -> None:
    space = budget_space()
    measured: dict[Config, Score | None] = {
        START: Score(tg=20.0, pp=1000.0),
        replace(START, threads=12): None,
    }
    assert next(iter(path(space, measured))) == "threads: 16 (tg t/s 16: 20.0, 12: -)"


# --- the exhaustive sweep -----------------------------------------------------------------------


def test_exhaustive_asks_for_every_unmeasured_grid_configuration() -> None:
    space = budget_space()
    grid = space.grid(exhaustive=True)
    assert next_batch(space, {}, exhaustive=True) == grid
    done: dict[Config, Score | None] = {c: additive(c) for c in grid[::2]}
    done[grid[1]] = None  # a failed one counts as measured
    rest = next_batch(space, done, exhaustive=True)
    assert rest == [c for c in grid if c not in done]
    assert next_batch(space, {c: None for c in grid}, exhaustive=True) == []
    # The sweep includes what tune prunes.
    assert any(c.threads == 8 for c in rest)


# --- the winner ---------------------------------------------------------------------------------


def test_within_the_tie_the_faster_prompt_wins() -> None:
    a, b, c = (replace(START, threads=t) for t in (8, 12, 16))
    scores = {
        a: Score(tg=100.0, pp=1000.0),
        b: Score(tg=100.0 * (1 - TIE) + 0.01, pp=2000.0),  # within 0.5%: a tie
        c: Score(tg=100.0 * (1 - TIE) - 0.01, pp=9000.0),  # just outside it
    }
    assert best(scores) == b


def test_outside_the_tie_the_faster_generation_wins() -> None:
    a, b = replace(START, threads=12), replace(START, threads=16)
    assert best({a: Score(tg=100.0, pp=1000.0), b: Score(tg=98.0, pp=5000.0)}) == a
    # A tie with the same prompt speed: the higher generation speed.
    assert best({a: Score(tg=100.0, pp=1000.0), b: Score(tg=99.8, pp=1000.0)}) == a


@pytest.mark.parametrize("order", [0, 1])
def test_best_does_not_depend_on_the_order_of_the_measurements(order: int) -> None:
    a, b = replace(START, threads=12), replace(START, threads=16)
    pairs = [(a, Score(tg=50.0, pp=700.0)), (b, Score(tg=50.1, pp=600.0))]
    scores = dict(pairs if order == 0 else reversed(pairs))
    assert best(scores) == a
