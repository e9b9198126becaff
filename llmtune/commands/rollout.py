"""``llmtune rollout -i INVENTORY``: apply deploys/all.py to the canaries, verify them, then the
other hosts in batches; stop at the first failed verify and roll the llama.cpp build back on the
hosts that regressed (the later batches stay untouched)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmtune.bench.compare import PP_THRESHOLD_PCT, TG_THRESHOLD_PCT
from llmtune.rollout.run import VerifyResult
from llmtune.rollout.run import rollout as run_rollout

EXIT_USAGE = 2


@click.command()
@click.option("-i", "--inventory", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--limit", multiple=True, help="Host or group names of the inventory.")
@click.option("--canary", multiple=True,
              help="Canary hosts or groups (default: group canary, else the first).")  # fmt: skip
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Hosts per batch after the canaries.")  # fmt: skip
@click.option("--deploy", "deploy_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The deploy to roll out (default: deploys/all.py).")  # fmt: skip
@click.option("--tg-threshold", type=float, default=TG_THRESHOLD_PCT, show_default=True)
@click.option("--pp-threshold", type=float, default=PP_THRESHOLD_PCT, show_default=True)
@click.option("--verify-skip", multiple=True, help="Doctor checks verify leaves out.")
@click.option("-r", "--repetitions", type=click.IntRange(1, 50), default=5, show_default=True)
def rollout(
    inventory: Path,
    limit: tuple[str, ...],
    canary: tuple[str, ...],
    batch_size: int,
    deploy_file: Path | None,
    tg_threshold: float,
    pp_threshold: float,
    verify_skip: tuple[str, ...],
    repetitions: int,
) -> None:
    """Canary first, then batches; each host verified (doctor + bench against its baseline)."""
    from llmtune.bench.target import PyinfraTarget
    from llmtune.commands.bench import verify_one
    from llmtune.doctor.inventory_run import load_inventory
    from llmtune.doctor.run import SelectionError
    from llmtune.rollout.plan import PlanError, plan_batches
    from llmtune.rollout.pyinfra_ops import ALL_DEPLOY, pyinfra_apply, pyinfra_rollback
    from llmtune.rollout.summary import render_summary

    def say(line: str) -> None:
        click.echo(f"llmtune: {line}", err=True)

    try:
        hosts = {h.name: h for h in load_inventory(inventory, limit)}
        groups = {n: [getattr(g, "name", g) for g in h.groups] for n, h in hosts.items()}
        batches = plan_batches(list(hosts), batch_size, groups=groups, canary=canary)
    except (SelectionError, PlanError) as exc:
        say(str(exc))
        sys.exit(EXIT_USAGE)

    def verify(name: str) -> VerifyResult:
        host = hosts[name]
        host.connect(show_errors=False, raise_exceptions=True)
        try:
            result = verify_one(
                PyinfraTarget(host),
                inventory,
                skip=verify_skip,
                tg_pct=tg_threshold,
                pp_pct=pp_threshold,
                repetitions=repetitions,
                say=say,
            )
        finally:
            host.disconnect()
        say(f"[{name}] verify: {'ok' if result.ok else 'FAILED'}: {result.summary()}")
        return VerifyResult(name, result.ok, result.summary())

    summary = run_rollout(
        batches,
        apply=pyinfra_apply(inventory, deploy_file or ALL_DEPLOY, on_line=say),
        verify=verify,
        rollback=pyinfra_rollback(inventory, on_line=say),
        progress=say,
    )
    click.echo(render_summary(summary))
    sys.exit(summary.exit_code)
