"""Run a tune on a host: read it, plan, measure configurations as the search asks, restart the
service. All the host I/O of tune is here (through a ``Target``: this machine or a pyinfra
host); what to measure and what wins are the pure modules' (``space``, ``search``, ``argv``).

The service is stopped for the measurements (it holds VRAM, which --fit would see as taken,
and it would share the GPU and the cores) and started again afterwards, whatever happened.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from llmtune.bench.argv import serving_depth
from llmtune.bench.results import BenchOutputError, parse_jsonl
from llmtune.bench.target import Target, measuring_command, service_stopped
from llmtune.facts.cpu import CpuTopology
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.llama import SERVER_BINARY, LlamaServerHelp
from llmtune.facts.llama_bench import LlamaBenchHelp
from llmtune.facts.llama_service import LlamaService
from llmtune.facts.meminfo import MemInfo
from llmtune.facts.model import GgufModel
from llmtune.planner.serve import PlanError, ServePlan, host_resources, plan_server
from llmtune.planner.unit import DEFAULT_API_KEY_FILE
from llmtune.settings import HostSettings
from llmtune.tune import confirm, search
from llmtune.tune.argv import (
    BENCH_NAME,
    FIT_PARAMS_NAME,
    GEN_TOKENS,
    PROMPT_TOKENS,
    Placement,
    TuneArgvError,
    bench_argv,
    fit_params_argv,
    group_configs,
    parse_fit_output,
    placement_args,
    sibling,
)
from llmtune.tune.config import Config, from_plan, llama_defaults, seed_recipe
from llmtune.tune.space import SearchSpace, search_space
from llmtune.tune.trial import CHECK_LABEL, NOT_SEARCH, Trial, assign_results

# One llama-bench run: a model load, the depth's prompt and a few configurations. A CPU-bound
# configuration at depth 16384 takes minutes.
RUN_TIMEOUT_S = 3600.0
FIT_TIMEOUT_S = 300.0
DEFAULT_REPETITIONS = 2


class TuneError(RuntimeError):
    """Tune cannot run on this host; the message says why and what to do."""


@dataclass
class TuneResult:
    host: str
    plan: ServePlan
    space: SearchSpace
    ctx: int
    depth: int
    trials: list[Trial] = field(default_factory=list)
    wall_s: float = 0.0
    # Of wall_s, the time the reference configurations took (tune alone would not spend it).
    refs_s: float = 0.0
    exhaustive: bool = False
    # Configurations an earlier, interrupted run of the same tune measured (--resume).
    resumed: int = 0
    # The end-of-search check of the winner against the start (search.keeps_winner), and the
    # configuration it chose; None where no check was made (the start won, or a sweep).
    check: search.Check | None = None
    chosen: Config | None = None

    @property
    def measured(self) -> dict[Config, search.Score | None]:
        return {t.config: t.score for t in self.trials if not t.label.startswith(NOT_SEARCH)}

    @property
    def winner(self) -> Config | None:
        return self.chosen or search.winner(self.measured)

    def trial(self, config: Config | None) -> Trial | None:
        """The search's measurement of ``config`` (not a reference's or the check's)."""
        found = [t for t in self.trials if t.config == config and t.score]
        return next((t for t in found if not t.label.startswith(NOT_SEARCH)), None)


def _plan(target: Target, settings: HostSettings, server: str) -> tuple[ServePlan, object, object]:
    if not settings.model_path:
        raise TuneError("no model_path in the settings: tune measures the service's model")
    model = target.fact(GgufModel, path=settings.model_path)
    if not model.available:
        raise TuneError(f"model_path {settings.model_path}: {model.reason}")
    host = host_resources(target.fact(NvidiaGpus), target.fact(CpuTopology), target.fact(MemInfo))
    key = DEFAULT_API_KEY_FILE if settings.server_api_key == "file" else None
    try:
        plan = plan_server(host, model, settings, key)
    except PlanError as exc:
        raise TuneError(str(exc)) from exc
    return plan, host, model


class _Runner:
    """Measures configurations on the target, caching --fit placements."""

    def __init__(
        self,
        target: Target,
        result: TuneResult,
        server: str,
        repetitions: int,
        progress: Callable[[str], None],
        record: Callable[[Trial], None],
    ) -> None:
        self.target = target
        self.result = result
        self.model = str(result.plan.value("model"))
        self.fit_binary = sibling(server, FIT_PARAMS_NAME)
        self.bench_binary = sibling(server, BENCH_NAME)
        self.server_help = target.fact(LlamaServerHelp, binary=server)
        self.bench_help = target.fact(LlamaBenchHelp, binary=self.bench_binary)
        if not self.bench_help.available:
            raise TuneError(f"{self.bench_binary}: {self.bench_help.reason}")
        self.repetitions = repetitions
        self.progress = progress
        self.record = record
        self.fitted: dict[tuple[str, ...], Placement | str] = {}
        self.runs = 0
        cpus = result.plan.value("cpus")
        self.cpu_mask = (
            f"0x{sum(1 << c for c in set(cpus)):x}" if isinstance(cpus, tuple) and cpus else None
        )

    def _fit(self, config: Config) -> Placement | str:
        total = self.result.ctx * self.result.space.slots
        argv = fit_params_argv(self.fit_binary, self.model, config, total, self.server_help)
        key = tuple(argv)
        if key not in self.fitted:
            out = self.target.shell(f"cd /tmp && {shlex.join(argv)}", timeout_s=FIT_TIMEOUT_S)
            if not out.ok:
                tail = " ".join(out.stderr[-3:]) or "no output"
                self.fitted[key] = f"--fit found no placement: {tail}"
            else:
                try:
                    self.fitted[key] = parse_fit_output(out.stdout)
                except TuneArgvError as exc:
                    self.fitted[key] = str(exc)
        return self.fitted[key]

    def runs_for(self, configs: list[Config]) -> int:
        """How many llama-bench runs ``configs`` take (one where their placement allows)."""
        placed = []
        for config in configs:
            fitted = self._fit(config) if config.placement == "fit" else None
            if not isinstance(fitted, str):
                placed.append((config, placement_args(config, fitted)))
        return len(group_configs(placed))

    def measure(self, configs: list[Config], labels: dict[Config, str]) -> None:
        placed: list[tuple[Config, tuple[str, ...]]] = []
        for config in configs:
            fitted = self._fit(config) if config.placement == "fit" else None
            if isinstance(fitted, str):
                self._done(Trial(config, error=fitted, label=labels.get(config, "")))
                continue
            placed.append((config, placement_args(config, fitted)))
        for group in group_configs(placed):
            self.runs += 1
            argv = bench_argv(
                self.bench_binary,
                self.model,
                group,
                self.result.depth,
                self.repetitions,
                self.bench_help,
                self.cpu_mask,
            )
            members = group.configs
            threads = ",".join(str(t or "-") for t in group.threads)
            ubs = ",".join(str(u or "-") for u in group.ubatches)
            self.progress(
                f"run {self.runs}: {group.base.placement} {_brief(group.placement)} "
                f"{group.base.kv} fa {group.base.flash_attn} ub {ubs} t {threads} "
                f"({len(members)} configuration(s))"
            )
            started = time.monotonic()
            out = self.target.shell(measuring_command(argv), timeout_s=RUN_TIMEOUT_S)
            wall = time.monotonic() - started
            try:
                results = parse_jsonl(out.stdout)
            except BenchOutputError as exc:
                results, error = (), str(exc)
            else:
                error = "" if out.ok else "llama-bench failed: " + " ".join(out.stderr[-3:])
            for config, (tg, pp) in assign_results(members, results, self.result.depth).items():
                problem = error or ("" if tg and pp else "llama-bench printed no result for it")
                trial = Trial(
                    config,
                    group.placement,
                    tg,
                    pp,
                    wall,
                    problem if not (tg and pp) else "",
                    labels.get(config, ""),
                )
                self._done(trial)

    def _done(self, trial: Trial) -> None:
        self.result.trials.append(trial)
        self.record(trial)
        name = f"{trial.label}: " if trial.label else ""
        if trial.score is None:
            self.progress(f"  {name}{trial.config.brief()}: not measured ({trial.error})")
        else:
            assert trial.tg is not None and trial.pp is not None
            self.progress(
                f"  {name}{trial.config.brief()}: {trial.tg.test} {trial.tg.avg_ts:.1f} t/s, "
                f"{trial.pp.test} {trial.pp.avg_ts:.1f} t/s"
            )


def _brief(placement: tuple[str, ...]) -> str:
    """Placement flags for a progress line: --fit's tensor overrides (a regex per layer, pages
    of them for a MoE) as their count."""
    out: list[str] = []
    for flag, value in zip(placement[::2], placement[1::2], strict=False):
        out += [flag, f"<{len(value.split(';'))} tensor overrides>" if flag == "-ot" else value]
    return " ".join(out)


def run_tune(
    target: Target,
    settings: HostSettings,
    *,
    exhaustive: bool = False,
    references: bool = False,
    repetitions: int = DEFAULT_REPETITIONS,
    server: str = SERVER_BINARY,
    progress: Callable[[str], None] = lambda _: None,
    record: Callable[[Trial], None] = lambda _: None,
    known: list[Trial] | None = None,
) -> TuneResult:
    """Tune (or with ``exhaustive``, sweep every valid configuration) on ``target``.

    ``references``: also measure llama.cpp's defaults and the seed recipe (labelled ``ref:``),
    for a report; they never win. ``record`` gets every trial as it is measured. ``known``:
    trials of an interrupted run of the same tune (``--resume``), not measured again.
    """
    started = time.monotonic()
    plan, host, model = _plan(target, settings, server)
    start = from_plan(plan)
    ctx = int(str(plan.value("ctx")))
    space = search_space(host, model, settings, start, ctx)  # type: ignore[arg-type]
    result = TuneResult(target.name, plan, space, ctx, serving_depth(ctx), exhaustive=exhaustive)
    runner = _Runner(target, result, server, repetitions, progress, record)
    gpu = bool(host.gpus)  # type: ignore[attr-defined]
    if start.placement == "fit" or (references and gpu):
        check = target.shell(f"test -x {shlex.quote(runner.fit_binary)}")
        if not check.ok:
            raise TuneError(
                f"{runner.fit_binary} is missing: --fit placements are read from it (the "
                "llama_cpp deploy builds it with llama-server)"
            )
    progress(
        f"serving context {ctx} tokens x {space.slots} slot(s): measuring "
        f"pp{PROMPT_TOKENS} and tg{GEN_TOKENS} at depth {result.depth}, llama-bench -r "
        f"{repetitions}"
    )
    for knob in space.knobs:
        values = knob.values if exhaustive else knob.for_tune()
        line = f"{knob.name}: {', '.join(str(v) for v in values)}"
        if knob.fixed:
            line += f" ({knob.fixed})"
        progress(line)
        if not exhaustive:
            for value, why in knob.pruned:
                progress(f"  pruned {knob.name} {value}: {why}")

    service = target.fact(LlamaService)
    name = service.record.service if service.record else "llama-server.service"
    labels = {start: "plan"}
    measured: dict[Config, search.Score | None] = {}
    earlier = [t for t in known or () if t.score is not None]
    result.trials += earlier
    result.resumed = len(earlier)
    measured.update({t.config: t.score for t in earlier if not t.label.startswith(NOT_SEARCH)})
    if earlier:
        progress(f"resuming: {len(earlier)} configuration(s) measured before are kept")
    why = "the measurements (it holds VRAM and cores)"
    with service_stopped(target, name, bool(service.active), why, progress):
        if references:
            budget = settings.fit_target_mib
            refs = {
                llama_defaults(budget, gpu): "ref:llama.cpp defaults",
                seed_recipe(budget, gpu): "ref:seed recipe",
                start: "ref:plan",
            }
            done = {t.label for t in earlier}
            todo = [c for c, label in refs.items() if label not in done]
            refs_started = time.monotonic()
            if todo:
                runner.measure(todo, refs)
            result.refs_s = time.monotonic() - refs_started
        while batch := search.next_batch(space, measured, exhaustive=exhaustive):
            runner.measure(batch, labels)
            for config in batch:
                trial = next((t for t in reversed(result.trials) if t.config == config), None)
                measured[config] = trial.score if trial else None
            if exhaustive:
                break
        if not exhaustive:
            _check(runner, result, start, progress)
    result.wall_s = time.monotonic() - started
    return result


def _check(
    runner: _Runner, result: TuneResult, start: Config, progress: Callable[[str], None]
) -> None:
    """Measure the start again after the search and keep the winner only if it beats the
    start beyond the noise that shows (search.keeps_winner). The winner is measured in the same
    run where the placement allows it (no extra model load)."""
    found = search.winner(result.measured)
    if found is None or found == start or result.measured.get(start) is None:
        return
    batch = [start, found] if runner.runs_for([start, found]) == 1 else [start]
    progress(
        "check: the start measured again"
        + (" with the winner" if len(batch) == 2 else "")
        + " (a winner must beat the start by more than the run-to-run noise)"
    )
    runner.measure(batch, {c: CHECK_LABEL for c in batch})

    def scores(config: Config) -> list[search.Score]:
        return [
            t.score
            for t in result.trials
            if t.config == config and t.score and not t.label.startswith("ref:")
        ]

    if len(scores(start)) < 2:
        progress("check: the start could not be measured again; the search's winner stands")
        return
    result.check = search.keeps_winner(scores(start), scores(found))
    result.chosen = found if result.check.keep else start
    progress(f"check: {result.check.reason()}")


def run_confirm(
    target: Target,
    settings: HostSettings,
    finalists: Mapping[Config, tuple[str, ...]],
    *,
    rounds: int,
    repetitions: int = DEFAULT_REPETITIONS,
    server: str = SERVER_BINARY,
    progress: Callable[[str], None] = lambda _: None,
    record: Callable[[Trial], None] = lambda _: None,
) -> TuneResult:
    """Measure ``finalists`` (config -> names, ``confirm.finalists``) again: each in a
    llama-bench run of its own, in turn, for ``rounds`` rounds (``confirm.schedule``). The
    trials are labelled with their names (``confirm.label``)."""
    started = time.monotonic()
    plan, host, model = _plan(target, settings, server)
    ctx = int(str(plan.value("ctx")))
    space = search_space(host, model, settings, from_plan(plan), ctx)  # type: ignore[arg-type]
    result = TuneResult(target.name, plan, space, ctx, serving_depth(ctx))
    runner = _Runner(target, result, server, repetitions, progress, record)
    labels = {config: confirm.label(names) for config, names in finalists.items()}
    order = confirm.schedule(list(finalists), rounds)
    progress(
        f"confirming {len(finalists)} configuration(s) in {rounds} round(s) of separate "
        f"llama-bench runs (-r {repetitions}) at depth {result.depth}: "
        + "; ".join(", ".join(names) for names in finalists.values())
    )
    service = target.fact(LlamaService)
    name = service.record.service if service.record else "llama-server.service"
    why = "the measurements (it holds VRAM and cores)"
    with service_stopped(target, name, bool(service.active), why, progress):
        for i, config in enumerate(order):
            if i % len(finalists) == 0:
                progress(f"round {i // len(finalists) + 1} of {rounds}")
            runner.measure([config], labels)
    result.wall_s = time.monotonic() - started
    return result
