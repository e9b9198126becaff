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

The check (``keeps_winner``): the search compares numbers taken minutes apart, and on a host
whose speed drifts (the H100 VM's CPU-bound runs: the same configuration 18.2, 19.9 and 21.9
t/s in three runs) a winner can be an artefact of when it ran (the MoE under a budget: tune
chose q8_0 at 46.8 t/s over the plan's 43.0; re-measured in turn, q8_0 48.5, the plan 53.8). So
tune measures the start once more at the end; the two measurements of the start bracket the
search in time and their difference is this host's noise. The winner replaces the start only
where it is faster than the start's mean by more than that noise, or as fast within it and
faster at prompts by more than the prompt's noise; otherwise the start (the plan) stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _noise(values: Sequence[float]) -> float:
    """Relative range of repeated measurements of one configuration (0 for one)."""
    return (max(values) - min(values)) / _mean(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Check:
    """The end-of-search check of the winner against the start (see the module docstring)."""

    keep: bool
    start_tg: float
    winner_tg: float
    # The tie widths used: max(TIE, the measured relative range) for TG and PP.
    tg_tie: float
    pp_tie: float
    # PP means of the start and the winner.
    start_pp: float = 0.0
    winner_pp: float = 0.0

    def reason(self) -> str:
        change = (self.winner_tg / self.start_tg - 1) * 100 if self.start_tg else 0.0
        if self.keep and self.winner_tg > self.start_tg * (1 + self.tg_tie):
            return (
                f"the winner's TG {self.winner_tg:.1f} t/s vs the start's mean "
                f"{self.start_tg:.1f} ({change:+.1f}%) is beyond this host's noise "
                f"({self.tg_tie * 100:.1f}%): the winner stands"
            )
        if self.keep:
            pp_change = (self.winner_pp / self.start_pp - 1) * 100 if self.start_pp else 0.0
            return (
                f"the winner's TG {self.winner_tg:.1f} t/s ties with the start's "
                f"{self.start_tg:.1f} within this host's noise ({self.tg_tie * 100:.1f}%) and "
                f"its prompts are {pp_change:+.1f}% faster (noise {self.pp_tie * 100:.1f}%): "
                "the winner stands"
            )
        return (
            f"the winner's TG {self.winner_tg:.1f} t/s vs the start's mean {self.start_tg:.1f} "
            f"({change:+.1f}%) is within this host's noise ({self.tg_tie * 100:.1f}%, the start "
            "measured at the search's beginning and end) and its prompts are not faster "
            "beyond it: the start is kept"
        )


def keeps_winner(start: Sequence[Score], won: Sequence[Score]) -> Check:
    """Whether the search's winner (``won``: its measurements) replaces the start (``start``:
    its measurements, the first before the search and the last after it). Empty sequences are
    an error: the check is made only where both were measured."""
    if not start or not won:
        raise ValueError("keeps_winner needs measurements of both the start and the winner")
    s_tg, w_tg = _mean([s.tg for s in start]), _mean([s.tg for s in won])
    s_pp, w_pp = _mean([s.pp for s in start]), _mean([s.pp for s in won])
    tg_tie = max(TIE, _noise([s.tg for s in start]), _noise([s.tg for s in won]))
    pp_tie = max(TIE, _noise([s.pp for s in start]), _noise([s.pp for s in won]))
    faster = w_tg > s_tg * (1 + tg_tie)
    tie_faster_prompts = w_tg >= s_tg * (1 - tg_tie) and w_pp > s_pp * (1 + pp_tie)
    return Check(faster or tie_faster_prompts, s_tg, w_tg, tg_tie, pp_tie, s_pp, w_pp)


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
