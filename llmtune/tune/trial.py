"""What one measured configuration is, as tune records it (``llmtune.tune/v1`` JSON lines).

One line per configuration: the knobs, the placement llama-bench ran with (and for --fit what
llama-fit-params answered), the two serving-depth results as llama-bench printed them, and the
wall time the llama-bench run took (shared by the configurations of one run). A configuration
that could not run has ``error`` instead of results. The last line of a tune is its summary
(``kind: "summary"``): the winner, the start, how long it all took.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmtune.bench.results import BenchResult
from llmtune.tune.argv import GEN_TOKENS, PROMPT_TOKENS
from llmtune.tune.config import Config
from llmtune.tune.search import Score

SCHEMA = "llmtune.tune/v1"
# Labels of trials that are not the search's own: the references (``ref:NAME``) and the
# end-of-search re-measurement of the start (and of the winner where one run holds both).
CHECK_LABEL = "check"
NOT_SEARCH = ("ref:", CHECK_LABEL)


@dataclass(frozen=True)
class Trial:
    """Example::

    Trial(config=Config("fit", "q8_0", "on", 512, 16, None, 77559, "mlock"),
          placement=("-ngl", "12"), tg=BenchResult("tg128@d16384", 23.9, ...),
          pp=BenchResult("pp512@d16384", 1801.2, ...), wall_s=41.3, label="plan")
    """

    config: Config
    placement: tuple[str, ...] = ()
    tg: BenchResult | None = None
    pp: BenchResult | None = None
    wall_s: float = 0.0
    error: str = ""
    label: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def score(self) -> Score | None:
        if self.tg is None or self.pp is None:
            return None
        return Score(tg=self.tg.avg_ts, pp=self.pp.avg_ts)

    def to_json(self, **extra: Any) -> str:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": "trial",
            **extra,
            "label": self.label,
            "config": self.config.to_dict(),
            "brief": self.config.brief(),
            "placement": list(self.placement),
            "wall_s": round(self.wall_s, 2),
        }
        if self.error:
            data["error"] = self.error
        for name, result in (("tg", self.tg), ("pp", self.pp)):
            if result is not None:
                data[name] = {
                    "test": result.test,
                    "avg_ts": result.avg_ts,
                    "stddev_ts": result.stddev_ts,
                    "samples_ts": list(result.samples_ts),
                    "llama_bench": dict(result.raw),
                }
        return json.dumps(data, sort_keys=False)


def _result(data: Mapping[str, Any] | None) -> BenchResult | None:
    if not data:
        return None
    return BenchResult.from_mapping(data["llama_bench"])


def parse_trials(lines: Iterable[str]) -> list[tuple[dict[str, Any], Trial]]:
    """The trial lines of a tune JSONL file, each with its whole JSON object (for the extra
    keys a caller wrote, e.g. the scenario)."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        data = json.loads(line)
        if data.get("schema") != SCHEMA or data.get("kind") != "trial":
            continue
        trial = Trial(
            config=Config.from_dict(data["config"]),
            placement=tuple(data.get("placement", ())),
            tg=_result(data.get("tg")),
            pp=_result(data.get("pp")),
            wall_s=float(data.get("wall_s", 0.0)),
            error=data.get("error", ""),
            label=data.get("label", ""),
            raw=data,
        )
        out.append((data, trial))
    return out


def assign_results(
    configs: Sequence[Config], results: Sequence[BenchResult], depth: int
) -> dict[Config, tuple[BenchResult | None, BenchResult | None]]:
    """Match llama-bench's results to the configurations of one run by the fields that differ
    between them (physical batch and threads, as llama-bench prints them)."""
    tg_name = f"tg{GEN_TOKENS}@d{depth}" if depth else f"tg{GEN_TOKENS}"
    pp_name = f"pp{PROMPT_TOKENS}@d{depth}" if depth else f"pp{PROMPT_TOKENS}"
    out: dict[Config, tuple[BenchResult | None, BenchResult | None]] = {}
    for config in configs:
        found: dict[str, BenchResult] = {}
        for result in results:
            raw = result.raw
            if config.ubatch is not None and raw.get("n_ubatch") != config.ubatch:
                continue
            if config.threads is not None and raw.get("n_threads") != config.threads:
                continue
            found[result.test] = result
        out[config] = (found.get(tg_name), found.get(pp_name))
    return out
