"""``llmtune tune``: find the fastest llama-server configuration for this host and model at the
serving context, and write it to the host's settings with the numbers that chose it.

Runs here or on one inventory host (``-i INVENTORY --limit HOST``) through pyinfra's connector.
Every measured configuration is appended to ``-o`` (JSON lines, ``llmtune.tune/v1``) as it is
measured, so an interrupted tune keeps what it measured.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO

import click

from llmtune.bench.target import LocalTarget, PyinfraTarget, Target
from llmtune.facts.llama import SERVER_BINARY
from llmtune.settings import HostSettings, SettingsError, load_settings
from llmtune.tune import confirm, host_vars, search
from llmtune.tune.run import (
    DEFAULT_REPETITIONS,
    TuneError,
    TuneResult,
    run_confirm,
    run_tune,
)
from llmtune.tune.trial import NOT_SEARCH, SCHEMA, Trial, parse_trials

EXIT_USAGE = 2


def _say(line: str) -> None:
    click.echo(f"llmtune: {line}", err=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def _row(trial: Trial | None, name: str, ref: Trial | None = None) -> str:
    if trial is None or trial.score is None or trial.tg is None or trial.pp is None:
        return f"  {name:<20} not measured"
    gain = ""
    if ref is not None and ref.score is not None and ref is not trial:
        gain = f"  ({(trial.score.tg / ref.score.tg - 1) * 100:+.1f}% tg vs the plan)"
    return (
        f"  {name:<20} {trial.tg.test} {trial.tg.avg_ts:8.1f} t/s   {trial.pp.test} "
        f"{trial.pp.avg_ts:8.1f} t/s   {trial.config.brief()}{gain}"
    )


def summary(result: TuneResult) -> list[str]:
    """What tune found, as the user reads it (also the evidence lines of the host_vars block)."""
    winner = result.trial(result.winner)
    plan = next((t for t in result.trials if t.label == "plan" and t.score), None)
    measured = [t for t in result.trials if not t.label.startswith(NOT_SEARCH)]
    failed = sum(t.score is None for t in measured)
    what = "exhaustive sweep" if result.exhaustive else "tune"
    lines = [
        f"{what} on {result.host}: {len(measured)} configuration(s) in "
        f"{_minutes(result.wall_s)}"
        + (f" ({failed} could not run)" if failed else "")
        + f"; serving context {result.ctx} tokens, measured at depth {result.depth}",
    ]
    for ref in (t for t in result.trials if t.label.startswith("ref:")):
        name = ref.label.removeprefix("ref:")
        # The plan's reference run is a separate measurement of the search's start.
        lines.append(_row(ref, "plan (reference)" if name == "plan" else name, plan))
    lines.append(_row(plan, "plan"))
    lines.append(_row(winner, "winner", plan))
    if not result.exhaustive:
        lines += [f"  {line}" for line in search.path(result.space, result.measured)]
    if result.check is not None:
        lines.append(f"  check: {result.check.reason()}")
    return lines


class _Log:
    """The JSON lines of one invocation in ``-o``: its start line, every trial as it is
    measured (an interrupted run keeps them), its summary. ``kind`` marks every line
    (``exhaustive`` or ``confirm``), so --resume and the report tell the runs apart."""

    def __init__(self, sink: TextIO, host: str, **kind: bool) -> None:
        self.sink, self.host, self.kind = sink, host, kind
        self.line("start")

    def line(self, what: str, **fields: object) -> None:
        head = {"schema": SCHEMA, "kind": what, "host": self.host, **self.kind}
        self.sink.write(json.dumps({**head, "time": time.time(), **fields}) + "\n")
        self.sink.flush()

    def record(self, trial: Trial) -> None:
        self.sink.write(trial.to_json(host=self.host, **self.kind, time=time.time()) + "\n")
        self.sink.flush()


def _confirm(
    target: Target,
    settings: HostSettings,
    files: tuple[Path, ...],
    rounds: int,
    repetitions: int,
    output: Path,
    binary: str,
) -> None:
    try:
        found = confirm.finalists([(str(f), f.read_text().splitlines()) for f in files])
    except (confirm.ConfirmError, ValueError, KeyError) as exc:
        _say(f"--confirm: {exc}")
        sys.exit(EXIT_USAGE)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a") as sink:
        log = _Log(sink, target.name, confirm=True)
        try:
            result = run_confirm(
                target,
                settings,
                found,
                rounds=rounds,
                repetitions=repetitions,
                server=binary,
                progress=lambda line: _say(f"[{target.name}] {line}"),
                record=log.record,
            )
        except TuneError as exc:
            _say(f"{target.name}: {exc}")
            sys.exit(1)
        medians = confirm.confirmed(result.trials)
        lines = [
            f"confirm on {result.host}: {len(found)} configuration(s) x {rounds} round(s) in "
            f"{_minutes(result.wall_s)}; medians at depth {result.depth}",
            *confirm.summary(medians),
        ]
        log.line("summary", wall_s=round(result.wall_s, 1), rounds=rounds, ctx=result.ctx,
                 depth=result.depth, lines=lines)  # fmt: skip
    click.echo("\n".join(lines))
    click.echo(f"raw: {output}")
    if not any(c.tg for c in medians.values()):
        _say("no configuration could be measured")
        sys.exit(1)


def _earlier(output: Path, host: str, exhaustive: bool) -> list[Trial]:
    """The measured trials of the same kind of run on the same host in ``output``."""
    if not output.exists():
        return []
    return [
        trial
        for data, trial in parse_trials(output.read_text().splitlines())
        if data.get("host") == host
        and bool(data.get("exhaustive")) == exhaustive
        and not data.get("confirm")
        and trial.score
    ]


def _write_target(
    write: Path | None, inventory: Path | None, limit: str | None, settings_path: Path | None
) -> Path | None:
    if write is not None:
        return write
    if inventory is not None and limit:
        from llmtune.inventory import _host_file_name

        return inventory.resolve().parent / "host_vars" / f"{_host_file_name(limit)}.yaml"
    return settings_path


def _open_target(inventory: Path | None, limit: str | None):
    if inventory is None:
        return LocalTarget(), None
    from llmtune.doctor.inventory_run import load_inventory
    from llmtune.inventory import settings_of

    hosts = load_inventory(inventory, (limit,) if limit else ())
    if len(hosts) != 1:
        names = ", ".join(h.name for h in hosts)
        raise click.UsageError(f"tune runs on one host: --limit one of {names}")
    host = hosts[0]
    host.connect(show_errors=False, raise_exceptions=True)
    return PyinfraTarget(host), settings_of(host.data)


@click.command()
@click.option("--settings", "settings_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Host settings YAML (model_path, context_size, fit_target_mib...).")  # fmt: skip
@click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False),
              help="Tune a host of this pyinfra inventory, with its settings.")  # fmt: skip
@click.option("--limit", help="The inventory host to tune (with -i).")
@click.option("--exhaustive", is_flag=True,
              help="Measure every valid configuration (no pruning, no search).")  # fmt: skip
@click.option("--references", is_flag=True,
              help="Also measure llama.cpp's defaults and the seed recipe.")  # fmt: skip
@click.option("-r", "--repetitions", type=click.IntRange(1, 20), default=DEFAULT_REPETITIONS,
              show_default=True)  # fmt: skip
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("llmtune-tune.jsonl"), show_default=True,
              help="Every measured configuration, appended as JSON lines.")  # fmt: skip
@click.option("--write", "write_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Settings file to write the winner to (default: the host's host_vars file "
                   "with -i, else --settings).")  # fmt: skip
@click.option("--no-write", is_flag=True, help="Measure and report only.")
@click.option("--resume", is_flag=True,
              help="Keep the configurations an interrupted run of the same tune wrote to -o "
                   "and measure only the rest.")  # fmt: skip
@click.option("--confirm", "confirm_files", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Measure again, in separate interleaved llama-bench runs, the references and "
                   "the winner of these earlier tune (or --exhaustive) files; repeatable. "
                   "Ranks by the rounds' median; writes nothing to settings.")  # fmt: skip
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True,
              help="With --confirm: how many times each configuration is measured.")  # fmt: skip
@click.option("--binary", default=SERVER_BINARY, show_default=True,
              help="llama-server of the build to measure (llama-bench and llama-fit-params "
                   "beside it).")  # fmt: skip
def tune(
    settings_path: Path | None,
    inventory: Path | None,
    limit: str | None,
    exhaustive: bool,
    references: bool,
    repetitions: int,
    output: Path,
    write_path: Path | None,
    no_write: bool,
    resume: bool,
    confirm_files: tuple[Path, ...],
    rounds: int,
    binary: str,
) -> None:
    """Measure threads, KV type, physical batch, flash attention and placement at the serving
    context (llama-bench at half the context's depth), skipping what the planner rules out, and
    write the fastest configuration to the host's settings."""
    try:
        if inventory is None:
            settings: HostSettings | None = load_settings(settings_path)
        target: Target
        target, remote_settings = _open_target(inventory, limit)
        if remote_settings is not None:
            settings = remote_settings
    except SettingsError as exc:
        _say(str(exc))
        sys.exit(EXIT_USAGE)
    assert settings is not None
    if confirm_files:
        if exhaustive or references or resume:
            raise click.UsageError("--confirm measures the files' finalists only: leave out "
                                   "--exhaustive, --references and --resume")  # fmt: skip
        _confirm(target, settings, confirm_files, rounds, repetitions, output, binary)
        return
    destination = None if no_write else _write_target(write_path, inventory, limit, settings_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    known = _earlier(output, target.name, exhaustive) if resume else []
    with output.open("a") as sink:
        log = _Log(sink, target.name, exhaustive=exhaustive)
        try:
            result = run_tune(
                target,
                settings,
                exhaustive=exhaustive,
                references=references,
                repetitions=repetitions,
                server=binary,
                progress=lambda line: _say(f"[{target.name}] {line}"),
                record=log.record,
                known=known,
            )
        except TuneError as exc:
            _say(f"{target.name}: {exc}")
            sys.exit(1)
        lines = summary(result)
        log.line(
            "summary",
            wall_s=round(result.wall_s, 1),
            refs_s=round(result.refs_s, 1),
            resumed=result.resumed,
            ctx=result.ctx,
            depth=result.depth,
            start=result.space.start.to_dict(),
            winner=result.winner.to_dict() if result.winner else None,
            lines=lines,
        )
    click.echo("\n".join(lines))
    click.echo(f"raw: {output}")
    if result.winner is None:
        _say("no configuration could be measured")
        sys.exit(1)
    if destination is None:
        click.echo("not written (no settings file: pass --write PATH or --settings)")
        return
    margin_knob = not result.space.knob("fit_target").fixed
    try:
        keys = host_vars.settings_for(result.winner, margin_is_a_knob=margin_knob)
        backup = host_vars.write(destination, keys, [*lines, f"raw: {output}"])
    except (host_vars.HostVarsError, SettingsError) as exc:
        _say(f"{destination}: {exc}")
        sys.exit(1)
    where = f" (previous file kept as {backup})" if backup else ""
    click.echo(f"written to {destination}: {', '.join(f'{k}={v}' for k, v in keys.items())}{where}")
