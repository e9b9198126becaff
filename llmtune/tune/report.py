"""The benchmark report of ``llmtune tune``: per scenario, what the references, the plan, the tune
and the exhaustive sweep measured, whether the acceptance criteria hold, and charts. Pure
functions over the ``llmtune.tune/v1`` JSON lines, plus a small CLI::

    python -m llmtune.tune.report --scenario "H100 plenty=bench/s1" [--scenario ...] \\
        [--roofline roofline.json] --out-md report.md --out-png-dir charts/

Each scenario ``DIR/sN`` has two files: ``DIR/sN-tune.jsonl`` (``llmtune tune --references``:
the ``ref:*`` trials, then the search's) and ``DIR/sN-sweep.jsonl`` (``llmtune tune
--exhaustive``, maybe resumed over several sessions), and may have a third,
``DIR/sN-confirm.jsonl`` (``llmtune tune --confirm`` of the first two: the five columns measured
again in interleaved rounds). Where it is there, the columns' numbers and the criteria are its
medians, and a criterion missed by less than the rounds' own spread is reported as "within
noise" rather than pass or fail; the tune and sweep runs' own numbers are shown beside them.

Times come from the lines' wall-clock ``time`` stamps, per session (a ``start`` line opens one):
an interrupted session has no summary, but its last line says how far it got. The tune's time
leaves out the references (``refs_s`` of its summary): a tune without ``--references`` would not
spend it.

The roofline part bounds generation speed by memory bandwidth: every weight a token touches is
read once per token, from the memory of the device it is placed on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtune.tune import confirm
from llmtune.tune.config import Config
from llmtune.tune.search import Score, winner
from llmtune.tune.trial import NOT_SEARCH, SCHEMA, Trial, parse_trials

# The five columns of the report, in order.
DEFAULTS, SEED, PLAN, TUNE, BEST = (
    "llama.cpp defaults",
    "seed recipe",
    "llmtune plan",
    "llmtune tune",
    "sweep best",
)
COLUMNS = (DEFAULTS, SEED, PLAN, TUNE, BEST)
REF_LABELS = {DEFAULTS: "ref:llama.cpp defaults", SEED: "ref:seed recipe", PLAN: "ref:plan"}
# The columns' names in a --confirm file (confirm.ORDER).
CONFIRM_NAMES = dict(zip(COLUMNS, confirm.ORDER, strict=True))


# --- reading the files -------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """One invocation of ``llmtune tune`` in a file: from its start line to its last line."""

    start: float
    end: float
    trials: tuple[Trial, ...] = ()
    # The summary line; None when the session was interrupted before writing it.
    summary: Mapping[str, Any] | None = None

    @property
    def span_s(self) -> float:
        return self.end - self.start

    @property
    def refs_s(self) -> float:
        """Time the references took. Unknown (0) without a summary: an interrupted session's
        time is then counted whole, which can only make tune look slower, never faster."""
        return float(self.summary.get("refs_s", 0.0)) if self.summary else 0.0


def sessions(text: str) -> list[Session]:
    """The sessions of a tune JSONL file, in file order. Lines before the first start line (a
    file that does not begin with one) open a session of their own."""
    out: list[Session] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            out.append(
                Session(
                    current["start"], current["end"], tuple(current["trials"]), current["summary"]
                )
            )

    for line in text.splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        if data.get("schema") != SCHEMA:
            continue
        when = float(data.get("time", 0.0))
        if data.get("kind") == "start" or current is None:
            close()
            current = {"start": when, "end": when, "trials": [], "summary": None}
            if data.get("kind") == "start":
                continue
        current["end"] = max(current["end"], when)
        if data.get("kind") == "trial":
            current["trials"] += [t for _, t in parse_trials([line])]
        elif data.get("kind") == "summary":
            current["summary"] = data
    close()
    return out


def all_trials(runs: Iterable[Session]) -> list[Trial]:
    return [t for s in runs for t in s.trials]


def search_trials(trials: Iterable[Trial]) -> list[Trial]:
    """The search's own trials (the references never win, as in ``TuneResult.measured``; nor do
    re-measurements: tune's end-of-search check, ``--confirm``)."""
    return [t for t in trials if not t.label.startswith((*NOT_SEARCH, confirm.PREFIX))]


def measured(trials: Iterable[Trial]) -> dict[Config, Score | None]:
    """Config -> score of the search's trials; a configuration measured again (a resumed run
    retries the ones that failed) keeps its last measurement, as tune does."""
    return {t.config: t.score for t in search_trials(trials)}


def latest(trials: Iterable[Trial], config: Config | None) -> Trial | None:
    """The last scored search trial of ``config``."""
    found = [t for t in search_trials(trials) if t.config == config and t.score]
    return found[-1] if found else None


def reference(trials: Iterable[Trial], label: str) -> Trial | None:
    """The last trial labelled ``label``, preferring one that has a score."""
    found = [t for t in trials if t.label == label]
    scored = [t for t in found if t.score]
    return (scored or found or [None])[-1]


# --- one scenario ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    title: str
    tune: tuple[Session, ...]
    sweep: tuple[Session, ...]
    columns: Mapping[str, Trial | None] = field(default_factory=dict)
    # Column -> its confirmed rounds (``--confirm``); empty without a confirm file.
    confirmed: Mapping[str, confirm.Confirmed] = field(default_factory=dict)

    def rounds(self, column: str) -> confirm.Confirmed | None:
        found = self.confirmed.get(column)
        return found if found is not None and found.tg else None

    def tg(self, column: str) -> float | None:
        """The column's TG: the median of its confirmed rounds, else its tune/sweep run's."""
        found = self.rounds(column)
        return found.tg_median if found else tg(self.columns.get(column))

    def pp(self, column: str) -> float | None:
        found = self.rounds(column)
        return found.pp_median if found else pp(self.columns.get(column))

    def noise(self, *names: str) -> float | None:
        """The largest relative TG range of the named columns' rounds; None unconfirmed."""
        spreads = [r.tg_spread for n in names if (r := self.rounds(n)) and r.tg_spread is not None]
        return max(spreads) if len(spreads) == len(names) else None

    @property
    def tune_s(self) -> float:
        return tune_seconds(self.tune)

    @property
    def sweep_s(self) -> float:
        return sweep_seconds(self.sweep)

    @property
    def tune_configs(self) -> int:
        return len(measured(all_trials(self.tune)))

    @property
    def sweep_configs(self) -> int:
        return len(measured(all_trials(self.sweep)))

    @property
    def sweep_ranking(self) -> list[Trial]:
        """The sweep's scored configurations (last measurement of each), fastest TG first."""
        last = {t.config: t for t in search_trials(all_trials(self.sweep)) if t.score}
        return sorted(last.values(), key=lambda t: t.tg.avg_ts if t.tg else 0.0, reverse=True)

    @property
    def sweep_of_tune(self) -> Trial | None:
        """The sweep's own measurement of the configuration tune chose (same run, same noise)."""
        chosen = self.columns.get(TUNE)
        return latest(all_trials(self.sweep), chosen.config) if chosen else None


def tune_seconds(runs: Sequence[Session]) -> float:
    """Tuning time: every session's span less the time its references took."""
    return sum(s.span_s - s.refs_s for s in runs)


def sweep_seconds(runs: Sequence[Session]) -> float:
    """Sweep time: every session's span (its start line to its last line)."""
    return sum(s.span_s for s in runs)


def chosen(runs: Sequence[Session]) -> Config | None:
    """The configuration the last finished tune session chose (its summary's ``winner``: after
    the end-of-search check it can be the start rather than the fastest search number)."""
    for run in reversed(runs):
        if run.summary and run.summary.get("winner"):
            return Config.from_dict(dict(run.summary["winner"]))
    return None


def columns(tune: Sequence[Session], sweep: Sequence[Session]) -> dict[str, Trial | None]:
    """The trial behind each of the five columns (None: not measured)."""
    tune_trials, sweep_trials = all_trials(tune), all_trials(sweep)
    out: dict[str, Trial | None] = {c: reference(tune_trials, r) for c, r in REF_LABELS.items()}
    out[TUNE] = latest(tune_trials, chosen(tune) or winner(measured(tune_trials)))
    out[BEST] = latest(sweep_trials, winner(measured(sweep_trials)))
    return out


def scenario(title: str, tune_text: str, sweep_text: str, confirm_text: str = "") -> Scenario:
    tune, sweep = tuple(sessions(tune_text)), tuple(sessions(sweep_text))
    rounds = confirm.confirmed(t for _, t in parse_trials(confirm_text.splitlines()))
    by_column = {c: rounds[n] for c, n in CONFIRM_NAMES.items() if n in rounds}
    return Scenario(title, tune, sweep, columns(tune, sweep), by_column)


def load_scenario(spec: str) -> Scenario:
    """``"TITLE=DIR/sN"`` -> the scenario of ``DIR/sN-tune.jsonl`` and ``DIR/sN-sweep.jsonl``
    (and ``DIR/sN-confirm.jsonl`` where there is one)."""
    title, sep, stem = spec.partition("=")
    if not sep or not title or not stem:
        raise ValueError(f"--scenario {spec!r}: expected TITLE=DIR/sN")
    tune = Path(f"{stem}-tune.jsonl").read_text()
    sweep = Path(f"{stem}-sweep.jsonl").read_text()
    confirmed = Path(f"{stem}-confirm.jsonl")
    return scenario(title, tune, sweep, confirmed.read_text() if confirmed.exists() else "")


def tg(trial: Trial | None) -> float | None:
    return trial.tg.avg_ts if trial is not None and trial.tg is not None else None


def pp(trial: Trial | None) -> float | None:
    return trial.pp.avg_ts if trial is not None and trial.pp is not None else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(s: Scenario) -> dict[str, float | None]:
    """The criteria's ratios (of confirmed medians where there are any) and two more."""
    best = s.tg(BEST)
    return {
        "plan / sweep best (TG)": ratio(s.tg(PLAN), best),
        "plan / defaults (TG)": ratio(s.tg(PLAN), s.tg(DEFAULTS)),
        "tune / sweep best (TG)": ratio(s.tg(TUNE), best),
        "sweep's tune config / sweep's best in the sweep run (TG)": ratio(
            tg(s.sweep_of_tune), tg(s.columns.get(BEST))
        ),
        "tune time / sweep time": ratio(s.tune_s, s.sweep_s),
    }


# --- acceptance criteria -----------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The issue's acceptance criteria, as ratios."""

    plan_vs_best: float = 0.97  # plan TG >= 0.97 x sweep best TG
    plan_vs_defaults: float = 1.0  # plan TG >= llama.cpp defaults TG
    tune_vs_best: float = 0.99  # tune TG within 1% of the sweep best
    time_vs_sweep: float = 0.25  # tune time <= 1/4 of the sweep's


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    # "at least" (value >= threshold) or "at most".
    bound: str
    threshold: float
    # The relative run-to-run range of the measurements behind ``value`` (confirmed rounds);
    # None where they were measured once.
    noise: float | None = None

    @property
    def passed(self) -> bool | None:
        """None when a number it needs was not measured."""
        if self.value is None:
            return None
        if self.bound == "at least":
            return self.value >= self.threshold
        return self.value <= self.threshold

    @property
    def within_noise(self) -> bool:
        """Missed, but by less than the spread of the rounds behind it: the measurements cannot
        tell the two apart."""
        if self.passed is not False or self.noise is None or self.value is None:
            return False
        return self.value >= self.threshold * (1 - self.noise)


def criteria(s: Scenario, limits: Thresholds = Thresholds()) -> list[Check]:
    r = ratios(s)
    return [
        Check(
            "plan TG / sweep best TG",
            r["plan / sweep best (TG)"],
            "at least",
            limits.plan_vs_best,
            s.noise(PLAN, BEST),
        ),
        Check(
            "plan TG / defaults TG",
            r["plan / defaults (TG)"],
            "at least",
            limits.plan_vs_defaults,
            s.noise(PLAN, DEFAULTS),
        ),
        Check(
            "tune TG / sweep best TG",
            r["tune / sweep best (TG)"],
            "at least",
            limits.tune_vs_best,
            s.noise(TUNE, BEST),
        ),
        Check(
            "tune time / sweep time", r["tune time / sweep time"], "at most", limits.time_vs_sweep
        ),
    ]


# --- Markdown ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _verdict(check: Check) -> str:
    if check.within_noise:
        return "within noise"
    return {True: "pass", False: "**FAIL**", None: "n/a"}[check.passed]


def markdown(
    scenarios: Sequence[Scenario],
    limits: Thresholds = Thresholds(),
    rooflines: Mapping[str, Mapping[str, float]] | None = None,
    charts: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The report fragment: per scenario the five columns, the ratios, the checks; then one
    table of all checks. ``rooflines``: title -> column -> t/s bound; ``charts``: title -> image
    paths to link (relative to the Markdown file)."""
    out: list[str] = []
    for s in scenarios:
        bound = (rooflines or {}).get(s.title, {})
        out += [f"### {s.title}", ""]
        confirmed = any(s.rounds(c) for c in COLUMNS)
        if confirmed:
            n = max(r.rounds for c in COLUMNS if (r := s.rounds(c)))
            out += [
                f"TG and PP: medians of {n} interleaved rounds (`llmtune tune --confirm`), "
                "each a llama-bench run of its own; the TG range of the rounds; the TG the "
                "tune or sweep run measured.",
                "",
            ]
            head = "| | TG t/s | TG range | PP t/s | TG in its run | configuration |"
            rule = "|---|---:|---:|---:|---:|---|"
        else:
            head = "| | TG t/s | PP t/s | configuration |"
            rule = "|---|---:|---:|---|"
        if bound:
            head, rule = head + " roofline TG t/s | TG / roofline |", rule + "---:|---:|"
        out += [head, rule]
        for name in COLUMNS:
            t = s.columns.get(name)
            brief = "not measured" if t is None or t.score is None else t.config.brief()
            if confirmed:
                r = s.rounds(name)
                spread = f"{min(r.tg):,.1f}-{max(r.tg):,.1f}" if r else "-"
                row = (
                    f"| {name} | {_num(s.tg(name))} | {spread} | {_num(s.pp(name))} | "
                    f"{_num(tg(t))} | {brief} |"
                )
            else:
                row = f"| {name} | {_num(tg(t))} | {_num(pp(t))} | {brief} |"
            if bound:
                b = bound.get(name)
                row += f" {_num(b)} | {_num(ratio(s.tg(name), b), 2)} |"
            out.append(row)
        out += [
            "",
            f"Configurations measured: tune {s.tune_configs}, sweep {s.sweep_configs}. "
            f"Time: tune {s.tune_s:,.1f} s (references left out), sweep {s.sweep_s:,.1f} s.",
            "",
            "| ratio | value |",
            "|---|---:|",
        ]
        out += [f"| {k} | {_num(v, 3)} |" for k, v in ratios(s).items()]
        out.append("")
        for path in (charts or {}).get(s.title, ()):
            out += [f"![{s.title}]({path})", ""]
    out += [
        "### Acceptance criteria",
        "",
        "noise: the larger TG range (max - min over median) of the two columns' confirmed "
        'rounds; a ratio that misses its bound by less is "within noise".',
        "",
        "| scenario | criterion | value | noise | required | result |",
        "|---|---|---:|---:|---|---|",
    ]
    for s in scenarios:
        for c in criteria(s, limits):
            need = f"{c.bound} {c.threshold:g}"
            noise = "-" if c.noise is None else f"{c.noise * 100:.1f}%"
            out.append(
                f"| {s.title} | {c.name} | {_num(c.value, 3)} | {noise} | {need} | {_verdict(c)} |"
            )
    return "\n".join(out) + "\n"


# --- charts ------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_columns(s: Scenario, path: Path) -> Path:
    """Grouped bars: TG and PP (t/s) of the five columns, one subplot each."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = ["#9e9e9e", "#bdbdbd", "#4c78a8", "#f58518", "#54a24b"]
    for ax, what in zip(axes, ("TG", "PP"), strict=True):
        values = [s.tg(c) if what == "TG" else s.pp(c) for c in COLUMNS]
        low, high = [], []
        for c, v in zip(COLUMNS, values, strict=True):
            r = s.rounds(c)
            got = (r.tg if what == "TG" else r.pp) if r else ()
            low.append(v - min(got) if got and v is not None else 0.0)
            high.append(max(got) - v if got and v is not None else 0.0)
        bars = ax.bar(
            range(len(COLUMNS)),
            [v or 0.0 for v in values],
            color=colors,
            yerr=[low, high] if any(low) or any(high) else None,
            capsize=4,
        )
        for bar, v in zip(bars, values, strict=True):
            label = "n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
            # Inside the bar, half-way up: clear of the range whiskers on its top.
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height() / 2),
                ha="center",
                va="center",
                fontsize=8,
                color="black",
            )
        test = next(
            (
                getattr(t, what.lower()).test
                for t in s.columns.values()
                if t is not None and getattr(t, what.lower()) is not None
            ),
            "",
        )
        how = " (median, range of rounds)" if any(s.rounds(c) for c in COLUMNS) else ""
        ax.set_title(f"{what} {test}{how}".strip())
        ax.set_ylabel(f"{what} (t/s)")
        ax.set_xticks(range(len(COLUMNS)))
        ax.set_xticklabels([c.replace(" ", "\n", 1) for c in COLUMNS], fontsize=8)
    fig.suptitle(s.title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sweep(s: Scenario, path: Path) -> Path:
    """Every sweep configuration sorted by TG, the plan's, tune's and the best highlighted."""
    plt = _pyplot()
    ranking = s.sweep_ranking
    marks = {
        BEST: (s.columns.get(BEST), "#54a24b"),
        TUNE: (s.columns.get(TUNE), "#f58518"),
        PLAN: (s.columns.get(PLAN), "#4c78a8"),
    }
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(ranking) + 2), 4.2))
    colors = ["#bdbdbd"] * len(ranking)
    for _, (trial, color) in reversed(marks.items()):  # the best's colour wins a shared bar
        for i, t in enumerate(ranking):
            if trial is not None and t.config == trial.config:
                colors[i] = color
    ax.bar(range(len(ranking)), [tg(t) or 0.0 for t in ranking], color=colors)
    for name, (_, color) in marks.items():
        ax.bar([0], [0], color=color, label=name)  # legend entries only
    ax.legend(fontsize=8)
    ax.set_xlabel("sweep configuration (sorted by TG)")
    ax.set_ylabel("TG (t/s)")
    ax.set_title(f"{s.title}: {len(ranking)} sweep configurations")
    ax.set_xticks(range(len(ranking)))
    ax.set_xticklabels([t.config.brief() for t in ranking], rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "scenario"


# --- roofline ----------------------------------------------------------------------------------


def roofline_tg(
    bytes_per_token_gpu: float, bytes_per_token_cpu: float, gpu_bw: float, cpu_bw: float
) -> float:
    """Upper bound of generation speed (t/s): a token cannot take less than the time to read
    its bytes from each memory, one after the other (the layers run in sequence)."""
    seconds = 0.0
    if bytes_per_token_gpu:
        seconds += bytes_per_token_gpu / gpu_bw
    if bytes_per_token_cpu:
        seconds += bytes_per_token_cpu / cpu_bw
    return math.inf if seconds == 0 else 1.0 / seconds


_LAYER = re.compile(r"^blk\.(\d+)\.")
# llama.cpp's --n-cpu-moe N: the expert tensors of the first N layers stay in RAM, added after
# the -ot overrides (llm_ffn_exps_block_regex in common/common.h).
_NCMOE = r"blk\.{}\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def parse_overrides(text: str | Sequence[str]) -> list[tuple[str, str]]:
    """``-ot`` text (``"re=CPU;re2=CUDA0"``, llama-bench's "none" or llama-server's ","
    separators) -> [(regex, buffer)], in order (the first match wins in llama.cpp)."""
    items = re.split(r"[;,]", text) if isinstance(text, str) else list(text)
    out = []
    for item in items:
        pattern, sep, buffer = item.strip().rpartition("=")
        if sep and pattern:
            out.append((pattern, buffer))
    return out


def _on_cpu(buffer: str) -> bool:
    # "CPU" and the CPU's repacked / pinned variants are host memory.
    return buffer.upper().startswith("CPU") or buffer.endswith("_Host")


def bytes_per_token(
    tensors: Sequence[Sequence[Any]],
    ngl: int,
    overrides: Sequence[tuple[str, str]] | str = (),
    n_layer: int = 0,
    n_expert: int = 0,
    n_expert_used: int = 0,
    kv_bytes_per_token: float = 0.0,
    depth: int = 0,
    ncmoe: int = 0,
) -> tuple[float, float]:
    """(GPU bytes, CPU bytes) read to generate one token at ``depth``.

    ``tensors``: [[name, type, n_bytes], ...] as gguf.GGUFReader lists them. Placement as
    llama.cpp does it (llama-model.cpp): the last ``min(ngl, n_layer)`` layers on the GPU, the
    output layer (output.weight, output_norm) on the GPU only when ``ngl > n_layer``; the input
    embedding on the CPU, and read one row per token (counted 0). An override or --n-cpu-moe
    match decides before the layer does. A token uses ``n_expert_used`` of ``n_expert``
    experts: the ``_exps`` tensors count that share. The KV cache of a layer (``
    kv_bytes_per_token`` over all layers, split evenly) is read in full up to ``depth``, on its
    layer's device. A model without output.weight reuses token_embd as its output (read whole).
    """
    rules = parse_overrides(overrides) if isinstance(overrides, str) else list(overrides)
    if ngl < 0:  # llama.cpp's -ngl -1 (its default, and --fit's answer with room): every layer
        ngl = n_layer + 1
    rules += [(_NCMOE.format(il), "CPU") for il in range(min(ncmoe, n_layer))]
    gpu_layers = min(max(ngl, 0), n_layer)
    first_gpu = n_layer - gpu_layers
    output_on_gpu = ngl > n_layer
    names = {str(t[0]) for t in tensors}
    gpu = cpu = 0.0
    for name, _type, n_bytes in tensors:
        name = str(name)
        size = float(n_bytes)
        if name == "token_embd.weight":
            if "output.weight" in names:
                continue
            on_gpu = output_on_gpu  # tied embeddings: the output matmul reads it all
        elif m := _LAYER.match(name):
            on_gpu = int(m[1]) >= first_gpu
        else:
            on_gpu = output_on_gpu
        for pattern, buffer in rules:
            if re.search(pattern, name):
                on_gpu = not _on_cpu(buffer)
                break
        if "_exps" in name and n_expert:
            size = size * n_expert_used / n_expert
        if on_gpu:
            gpu += size
        else:
            cpu += size
    if n_layer and kv_bytes_per_token and depth:
        per_layer = kv_bytes_per_token * depth / n_layer
        gpu += per_layer * gpu_layers
        cpu += per_layer * first_gpu
    return gpu, cpu


def tensor_table(path: str | Path) -> list[list[Any]]:
    """[[name, type, n_bytes], ...] of a GGUF file, as bytes_per_token takes it."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return [[t.name, t.tensor_type.name, int(t.n_bytes)] for t in reader.tensors]


@dataclass(frozen=True)
class RooflineModel:
    """What the roofline of one scenario needs besides a trial's placement. Bandwidths in
    bytes/s; ``gpu_bw`` 0: no GPU (llama.cpp then places everything on the CPU)."""

    tensors: tuple[tuple[str, str, int], ...]
    n_layer: int
    gpu_bw: float
    cpu_bw: float
    n_expert: int = 0
    n_expert_used: int = 0
    # KV bytes per token of context over all layers with an f16 cache; other types scale.
    kv_bytes_per_token_f16: float = 0.0


def trial_roofline(model: RooflineModel, trial: Trial | None) -> float | None:
    """The TG bound of ``trial``'s placement and KV type at its depth, from llama-bench's own
    record of what it ran (n_gpu_layers, tensor_buft_overrides, n_cpu_moe, type_k/type_v)."""
    from llmtune.facts.model import KV_TYPE_BYTES

    if trial is None or trial.tg is None:
        return None
    raw = trial.tg.raw
    ngl = int(raw.get("n_gpu_layers", 0)) if model.gpu_bw else 0
    ot = raw.get("tensor_buft_overrides", "none")
    kv_scale = sum(KV_TYPE_BYTES.get(str(raw.get(k, "f16")), 2.0) for k in ("type_k", "type_v"))
    # Generation runs from depth to depth + n_gen: the average token sees half the new ones.
    depth = int(raw.get("n_depth", 0)) + int(raw.get("n_gen", 0)) // 2
    gpu, cpu = bytes_per_token(
        model.tensors,
        ngl,
        "" if ot == "none" else str(ot),
        model.n_layer,
        model.n_expert,
        model.n_expert_used,
        model.kv_bytes_per_token_f16 * kv_scale / 4.0,
        depth,
        int(raw.get("n_cpu_moe", 0)),
    )
    return roofline_tg(gpu, cpu, model.gpu_bw or 1.0, model.cpu_bw)


def roofline_model(entry: Mapping[str, Any], base: Path = Path(".")) -> RooflineModel:
    """One entry of the --roofline JSON: ``gpu_bw`` and ``cpu_bw`` (bytes/s), and either
    ``gguf`` (a model file: its tensors and shape are read from it) or ``tensors``,
    ``n_layer``, ``n_expert``, ``n_expert_used``, ``kv_bytes_per_token_f16``."""
    values = dict(entry)
    if "gguf" in values:
        import gguf

        from llmtune.facts.model import model_value

        path = base / values["gguf"]
        # The reader maps the file: only the header and tensor table are read.
        shape = model_value(gguf.GGUFReader(str(path)), str(path), path.stat().st_size)
        if not shape.available:
            raise ValueError(f"{path}: {shape.reason}")
        values.setdefault("tensors", tensor_table(path))
        values.setdefault("n_layer", shape.block_count)
        values.setdefault("n_expert", shape.expert_count)
        values.setdefault("n_expert_used", shape.expert_used_count)
        values.setdefault("kv_bytes_per_token_f16", shape.kv_bytes_per_token())
    return RooflineModel(
        tensors=tuple((str(n), str(t), int(b)) for n, t, b in values["tensors"]),
        n_layer=int(values["n_layer"]),
        gpu_bw=float(values.get("gpu_bw") or 0.0),
        cpu_bw=float(values["cpu_bw"]),
        n_expert=int(values.get("n_expert", 0)),
        n_expert_used=int(values.get("n_expert_used", 0)),
        kv_bytes_per_token_f16=float(values.get("kv_bytes_per_token_f16", 0.0)),
    )


def scenario_rooflines(s: Scenario, model: RooflineModel) -> dict[str, float]:
    return {c: b for c in COLUMNS if (b := trial_roofline(model, s.columns.get(c))) is not None}


# --- CLI ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmtune.tune.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenario", action="append", required=True, metavar="TITLE=DIR/sN")
    parser.add_argument(
        "--roofline",
        type=Path,
        metavar="ROOFLINE.json",
        help="{TITLE or sN: {gpu_bw, cpu_bw, gguf | tensors, n_layer, ...}}",
    )
    parser.add_argument("--out-md", type=Path, required=True)
    parser.add_argument("--out-png-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        scenarios = [load_scenario(spec) for spec in args.scenario]
    except (OSError, ValueError) as exc:
        print(f"llmtune.tune.report: {exc}", file=sys.stderr)
        return 2
    stems = {
        s.title: Path(spec.partition("=")[2]).name
        for s, spec in zip(scenarios, args.scenario, strict=True)
    }
    rooflines: dict[str, dict[str, float]] = {}
    if args.roofline:
        entries = json.loads(args.roofline.read_text())
        for s in scenarios:
            entry = entries.get(s.title) or entries.get(stems[s.title])
            if entry:
                model = roofline_model(entry, args.roofline.parent)
                rooflines[s.title] = scenario_rooflines(s, model)
    args.out_png_dir.mkdir(parents=True, exist_ok=True)
    charts: dict[str, list[str]] = {}
    for s in scenarios:
        name = slug(s.title)
        paths = [
            plot_columns(s, args.out_png_dir / f"{name}-columns.png"),
            plot_sweep(s, args.out_png_dir / f"{name}-sweep.png"),
        ]
        md_dir = args.out_md.parent.resolve()
        charts[s.title] = [_relative(p.resolve(), md_dir) for p in paths]
    args.out_md.parent.mkdir(parents=True, exist_ok=True)
    args.out_md.write_text(markdown(scenarios, Thresholds(), rooflines, charts))
    print(f"wrote {args.out_md} and {2 * len(scenarios)} chart(s) in {args.out_png_dir}")
    return 0


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


if __name__ == "__main__":
    sys.exit(main())
