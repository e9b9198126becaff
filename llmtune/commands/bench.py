"""``llmtune bench``, ``llmtune verify``: measure a host with its service's flags, keep a baseline,
and prove after an upgrade that nothing got slower.

Both run here or on inventory hosts (``-i INVENTORY [--limit HOST]``) through pyinfra's
connectors, one host after another (a bench loads the host; benches of several hosts would not
disturb each other, but their progress lines would interleave).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from llmtune.bench.compare import PP_THRESHOLD_PCT, TG_THRESHOLD_PCT, compare
from llmtune.bench.results import BenchRun, parse_store
from llmtune.bench.run import BenchError, run_bench
from llmtune.bench.target import LocalTarget, PyinfraTarget, Target
from llmtune.bench.verify import HostVerification, verify_target
from llmtune.checks.registry import Level
from llmtune.doctor.run import SelectionError
from llmtune.findings import Status
from llmtune.settings import load_settings

EXIT_USAGE = 2


def _say(line: str) -> None:
    click.echo(f"llmtune: {line}", err=True)


@contextmanager
def _targets(inventory: Path | None, limit: tuple[str, ...]) -> Iterator[list[Target]]:
    if inventory is None:
        yield [LocalTarget()]
        return
    from llmtune.doctor.inventory_run import load_inventory

    hosts = load_inventory(inventory, limit)
    targets: list[Target] = []
    for host in hosts:
        host.connect(show_errors=False, raise_exceptions=True)
        targets.append(PyinfraTarget(host))
    try:
        yield targets
    finally:
        for host in hosts:
            host.disconnect()


def _result_table(run: BenchRun) -> str:
    rows = [f"  {r.test:<16} {r.median_ts:10.1f} t/s" for r in run.results]
    return f"{run.host} ({run.time}{', baseline' if run.baseline else ''}):\n" + "\n".join(rows)


def _last_run(path: Path) -> BenchRun:
    runs, _ = parse_store(path.read_text().splitlines())
    if not runs:
        raise click.UsageError(f"{path}: no bench run in it")
    return runs[-1]


def _append(output: Path, run: BenchRun) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a") as f:
        f.write(run.to_json() + "\n")


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--limit", multiple=True, help="Host or group names of the inventory.")
@click.option("--save-baseline", is_flag=True, help="Mark this run as the host's reference.")
@click.option("-r", "--repetitions", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("llmtune-bench.jsonl"), show_default=True,
              help="Where the runs are collected here (appended, one JSON line each).")  # fmt: skip
@click.option("--compare", "compare_files", nargs=2,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Compare the last runs of two JSONL files.")  # fmt: skip
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
              help="With --compare: write a before/after chart (PNG).")  # fmt: skip
def bench(
    inventory: Path | None,
    limit: tuple[str, ...],
    save_baseline: bool,
    repetitions: int,
    output: Path,
    compare_files: tuple[Path, Path] | None,
    plot: Path | None,
) -> None:
    """Run llama-bench with the service's planned flags (pp512, tg128, and both at the serving
    context depth) and record it with a snapshot of what changes speed."""
    if compare_files:
        before, after = (_last_run(p) for p in compare_files)
        verdict = compare(before, after)
        for delta in verdict.deltas:
            click.echo(f"  {delta.brief()}")
        click.echo(verdict.summary())
        if plot:
            from llmtune.bench.plot import plot_compare

            plot_compare(before, after, plot)
            click.echo(f"chart: {plot}")
        return
    failed = 0
    try:
        with _targets(inventory, limit) as targets:
            for target in targets:
                try:
                    run = run_bench(
                        target,
                        baseline=save_baseline,
                        repetitions=repetitions,
                        progress=lambda line, t=target: _say(f"[{t.name}] {line}"),
                    )
                except BenchError as exc:
                    _say(str(exc))
                    failed += 1
                    continue
                _append(output, run)
                click.echo(_result_table(run))
    except SelectionError as exc:
        _say(str(exc))
        sys.exit(EXIT_USAGE)
    sys.exit(1 if failed else 0)


def _doctor_report(target: Target, inventory: Path | None, skip: tuple[str, ...]):
    from llmtune.doctor.run import select_checks

    checks = select_checks(Level.QUICK, (), skip)
    if isinstance(target, PyinfraTarget):
        from llmtune.doctor.inventory_run import doctor_host

        report = doctor_host(target.host, checks, Level.QUICK, Status.FAIL)
        target.host.connect(show_errors=False, raise_exceptions=True)  # doctor_host let it go
        return report
    from llmtune.doctor.session import run_doctor

    return run_doctor(level=Level.QUICK, only=(), skip=skip, settings=load_settings(None))


def verify_one(
    target: Target,
    inventory: Path | None,
    *,
    skip: tuple[str, ...] = (),
    tg_pct: float = TG_THRESHOLD_PCT,
    pp_pct: float = PP_THRESHOLD_PCT,
    repetitions: int = 5,
    say: Callable[[str], None] = _say,
) -> HostVerification:
    say(f"[{target.name}] doctor")
    report = _doctor_report(target, inventory, skip)
    return verify_target(
        target,
        report,
        tg_pct=tg_pct,
        pp_pct=pp_pct,
        repetitions=repetitions,
        progress=lambda line: say(f"[{target.name}] {line}"),
    )


def render_verification(result: HostVerification) -> str:
    head = f"{result.host}: {'ok' if result.ok else 'FAILED'}: {result.summary()}"
    if result.verdict is None:
        return head
    lines = [head]
    for delta in result.verdict.deltas:
        before = f"{delta.before:.1f}" if delta.before is not None else "-"
        after = f"{delta.after:.1f}" if delta.after is not None else "-"
        mark = "  REGRESSION" if delta.regression else ""
        lines.append(f"  {delta.test:<16} {before:>10} -> {after:>10} t/s  {delta.brief()}{mark}")
    return "\n".join(lines)


@click.command()
@click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--limit", multiple=True, help="Host or group names of the inventory.")
@click.option("--tg-threshold", type=float, default=TG_THRESHOLD_PCT, show_default=True,
              help="Largest text-generation slowdown (%) that still passes.")  # fmt: skip
@click.option("--pp-threshold", type=float, default=PP_THRESHOLD_PCT, show_default=True,
              help="Largest prompt-processing slowdown (%) that still passes.")  # fmt: skip
@click.option("--skip", multiple=True, help="Doctor checks to leave out (ID, name, category).")
@click.option("-r", "--repetitions", type=click.IntRange(1, 50), default=5, show_default=True)
def verify(
    inventory: Path | None,
    limit: tuple[str, ...],
    tg_threshold: float,
    pp_threshold: float,
    skip: tuple[str, ...],
    repetitions: int,
) -> None:
    """After an upgrade: doctor + bench + comparison with the host's baseline. Exit 1 when a
    check fails or a test is slower than its threshold; the output says what changed."""
    failed = 0
    try:
        with _targets(inventory, limit) as targets:
            for target in targets:
                result = verify_one(
                    target,
                    inventory,
                    skip=skip,
                    tg_pct=tg_threshold,
                    pp_pct=pp_threshold,
                    repetitions=repetitions,
                )
                click.echo(render_verification(result))
                failed += not result.ok
    except SelectionError as exc:
        _say(str(exc))
        sys.exit(EXIT_USAGE)
    sys.exit(1 if failed else 0)
