"""Re-measuring the finalists of a tune: which configurations, in what order, and what they
measured. Pure.

One llama-bench run's number is not enough to rank configurations on a host where the same
configuration measures several percent apart from run to run (16 threads on the 16 vCPUs of the
H100 VM: 9-21% apart under a VRAM budget), and the fastest of many noisy measurements is biased
upwards (the sweep's best is the luckiest of 27). ``llmtune tune --confirm`` therefore measures
the finalists again: each in a llama-bench run of its own, the finalists in turn, for several
rounds (each round in a rotated order, so none always runs first after a model load of
another), and ranks them by the median of their rounds.

The finalists come from earlier tune files: their references (``ref:*``: llama.cpp's defaults,
the seed recipe, the plan) under their own names, the winner of a tune as ``tune`` and the
winner of an exhaustive sweep as ``sweep best``. A configuration with several names is measured
once per round; its trials carry every name (``confirm:plan,sweep best``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from llmtune.tune.config import Config
from llmtune.tune.search import winner
from llmtune.tune.trial import NOT_SEARCH, SCHEMA, Trial, parse_trials

PREFIX = "confirm:"
TUNE_NAME, SWEEP_NAME = "tune", "sweep best"
# The order finalists are listed and measured in (the references first, as in the report).
ORDER = ("llama.cpp defaults", "seed recipe", "plan", TUNE_NAME, SWEEP_NAME)


class ConfirmError(ValueError):
    """The files name no configuration to confirm; the message says which file and why."""


def finalists(files: Sequence[tuple[str, Sequence[str]]]) -> dict[Config, tuple[str, ...]]:
    """Config -> its names, from ``(path, lines)`` of earlier tune files.

    A file's ``ref:NAME`` trials give NAME; the configuration its tune chose gives ``tune``,
    or ``sweep best`` when it is an exhaustive sweep: the last summary's ``winner`` (after
    tune's end-of-search check), else the winner of its search trials (an interrupted run).
    Later files' names are added to earlier ones; a name given twice keeps the first file's
    configuration.
    """
    named: dict[str, Config] = {}
    for path, lines in files:
        rows = parse_trials(lines)
        found = False
        refs = {
            t.label.removeprefix("ref:"): t.config for _, t in rows if t.label.startswith("ref:")
        }
        for name, config in refs.items():
            named.setdefault(name, config)
            found = True
        search = [(d, t) for d, t in rows if not t.label.startswith((*NOT_SEARCH, PREFIX))]
        best = _chosen(lines) or winner({t.config: t.score for _, t in search if t.score})
        if best is not None:
            exhaustive = any(bool(d.get("exhaustive")) for d, _ in search)
            named.setdefault(SWEEP_NAME if exhaustive else TUNE_NAME, best)
            found = True
        if not found:
            raise ConfirmError(f"{path}: no measured configuration (no ref:* or search trial)")
    rank = {name: i for i, name in enumerate(ORDER)}
    out: dict[Config, tuple[str, ...]] = {}
    for name in sorted(named, key=lambda n: (rank.get(n, len(ORDER)), n)):
        out[named[name]] = (*out.get(named[name], ()), name)
    return out


def _chosen(lines: Sequence[str]) -> Config | None:
    """The ``winner`` of the last summary line of a tune (not of a --confirm) file."""
    for line in reversed(lines):
        if '"summary"' not in line:
            continue
        data = json.loads(line)
        if data.get("schema") == SCHEMA and data.get("kind") == "summary" and data.get("winner"):
            return Config.from_dict(dict(data["winner"]))
    return None


def label(names: Sequence[str]) -> str:
    return PREFIX + ",".join(names)


def names_of(trial_label: str) -> tuple[str, ...]:
    """The finalist names of a confirm trial's label; () for any other trial."""
    if not trial_label.startswith(PREFIX):
        return ()
    return tuple(trial_label.removeprefix(PREFIX).split(","))


def schedule(configs: Sequence[Config], rounds: int) -> list[Config]:
    """Every configuration once per round, round r starting r places further along the list."""
    n = len(configs)
    return [configs[(r + i) % n] for r in range(rounds) for i in range(n)] if n else []


@dataclass(frozen=True)
class Confirmed:
    """A finalist's rounds: each round's llama-bench average (t/s)."""

    config: Config
    tg: tuple[float, ...]
    pp: tuple[float, ...]
    # Rounds that could not run (a --fit failure, a llama-bench error).
    failed: int = 0

    @property
    def rounds(self) -> int:
        return len(self.tg)

    @property
    def tg_median(self) -> float | None:
        return statistics.median(self.tg) if self.tg else None

    @property
    def pp_median(self) -> float | None:
        return statistics.median(self.pp) if self.pp else None

    @property
    def tg_spread(self) -> float | None:
        """(max - min) / median of the rounds' TG: the run-to-run noise of this finalist."""
        median = self.tg_median
        return (max(self.tg) - min(self.tg)) / median if median else None


def confirmed(trials: Iterable[Trial]) -> dict[str, Confirmed]:
    """Name -> its rounds, from the confirm trials of a file (in file order)."""
    tg: dict[str, list[float]] = {}
    pp: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    configs: dict[str, Config] = {}
    for trial in trials:
        for name in names_of(trial.label):
            configs[name] = trial.config
            tg.setdefault(name, [])
            pp.setdefault(name, [])
            if trial.tg is None or trial.pp is None:
                failed[name] = failed.get(name, 0) + 1
                continue
            tg[name].append(trial.tg.avg_ts)
            pp[name].append(trial.pp.avg_ts)
    return {n: Confirmed(configs[n], tuple(tg[n]), tuple(pp[n]), failed.get(n, 0)) for n in configs}


def summary(found: Mapping[str, Confirmed], reference: str = "plan") -> list[str]:
    """One line per finalist: median TG and PP over its rounds, the rounds' TG range, and the
    median TG against ``reference``'s."""
    base = found.get(reference)
    base_tg = base.tg_median if base else None
    out = []
    for name, c in found.items():
        if c.tg_median is None or c.pp_median is None:
            out.append(f"  {name:<20} not measured ({c.failed} round(s) failed)")
            continue
        vs = ""
        if base_tg and name != reference:
            vs = f"  ({(c.tg_median / base_tg - 1) * 100:+.1f}% tg vs the {reference})"
        out.append(
            f"  {name:<20} tg {c.tg_median:8.1f} t/s (rounds {min(c.tg):.1f}-{max(c.tg):.1f}, "
            f"{c.rounds} of them)   pp {c.pp_median:8.1f} t/s   {c.config.brief()}{vs}"
        )
    return out
