"""Which configurations to measure next, and which one wins. Pure.

Tune walks the knobs one at a time (coordinate descent), in the order of their measured effect:
threads, KV type, physical batch, flash attention, placement, --fit margin. At each knob it
measures the current best with each of the knob's values (the others held), keeps the winner
and goes on; one pass over the knobs is the whole search. The knobs interact little once the
placement is --fit's (which re-places layers for every KV type and batch), and what they do
interact through, VRAM, is re-fitted for each configuration.

The next batch is recomputed from the measurements each time (``next_batch``), so the search has
no state of its own: the same measurements give the same next step.

The winner: the highest generation speed at the serving depth (what a user of the server feels);
among configurations within ``TIE`` of it (the run-to-run noise of llama-bench on the H100), the
one with the fastest prompt processing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from llmtune.tune.config import Config
from llmtune.tune.space import KNOBS, SearchSpace

# Generation speeds this close are a tie: the spread of llama-bench's samples within one run
# on the H100 (the same configuration measured in separate runs differed by up to 3.5%).
TIE = 0.005


@dataclass(frozen=True)
class Score:
    """A measured configuration: generation and prompt speeds (t/s) at the serving depth."""

    tg: float
    pp: float


def best(scores: Mapping[Config, Score]) -> Config | None:
    """The winner among ``scores`` (see the module docstring); None when there is none."""
    if not scores:
        return None
    top = max(s.tg for s in scores.values())
    close = [c for c, s in scores.items() if s.tg >= top * (1 - TIE)]
    return max(close, key=lambda c: (scores[c].pp, scores[c].tg))


def _variants(space: SearchSpace, base: Config, knob: str, exhaustive: bool) -> list[Config]:
    out = [base]
    for value in space.values(knob, exhaustive=exhaustive):
        config = replace(base, **{knob: value})
        if config.placement != "fit":
            config = replace(config, fit_target=None)
        if config not in out and space.valid(config):
            out.append(config)
    return out


def next_batch(
    space: SearchSpace, measured: Mapping[Config, Score | None], *, exhaustive: bool = False
) -> list[Config]:
    """The configurations to measure next; [] when the search is over.

    ``measured`` maps every configuration measured so far to its score, or None when it could
    not run (--fit found no placement, llama-bench failed): such a one never wins.
    """
    if exhaustive:
        return [c for c in space.grid(exhaustive=True) if c not in measured]
    current = space.start
    waiting: list[Config] = []
    for knob in KNOBS:
        variants = _variants(space, current, knob, exhaustive=False)
        todo = [c for c in variants if c not in measured]
        if todo == [current]:
            # Only the start itself is new (a knob with one value): measure it with the next
            # knob's variants, in the same llama-bench run where their placement allows,
            # instead of paying a model load for it alone.
            waiting = todo
            continue
        if waiting and todo:
            return waiting + [c for c in todo if c not in waiting]
        if waiting:
            return waiting
        if todo:
            return todo
        scores = {c: s for c in variants if (s := measured[c]) is not None}
        current = best(scores) or current
    return waiting


def winner(measured: Mapping[Config, Score | None]) -> Config | None:
    return best({c: s for c, s in measured.items() if s is not None})


def path(space: SearchSpace, measured: Mapping[Config, Score | None]) -> Iterable[str]:
    """One line per knob: what tune chose there and from what (for the report)."""
    current = space.start
    for knob in KNOBS:
        variants = [c for c in _variants(space, current, knob, False) if c in measured]
        scores = {c: s for c in variants if (s := measured[c]) is not None}
        chosen = best(scores) or current
        if len(variants) > 1:
            tried = ", ".join(
                f"{getattr(c, knob)}: {scores[c].tg:.1f}"
                if c in scores
                else f"{getattr(c, knob)}: -"
                for c in variants
            )
            yield f"{knob}: {getattr(chosen, knob)} (tg t/s {tried})"
        current = chosen
