"""``llmtune doctor``: run the diagnostic checklist and report every finding with its fix."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from llmtune.checks import all_checks
from llmtune.checks.registry import Level
from llmtune.doctor.capture import CaptureError
from llmtune.doctor.collect import ProbeRecord
from llmtune.doctor.inventory_run import doctor_fleet, fleet_exit_code
from llmtune.doctor.render.fleet import render_fleet
from llmtune.doctor.render.machine import render_json, render_junit, render_prometheus
from llmtune.doctor.render.text import render_text
from llmtune.doctor.run import EXIT_USAGE, SelectionError
from llmtune.doctor.session import run_doctor
from llmtune.findings import Status
from llmtune.settings import SettingsError, load_settings

FORMATS = ("text", "json", "junit", "prometheus")
FLEET_SCHEMA = "llmtune.doctor.fleet/v1"


def _write_atomically(path: Path, text: str) -> None:
    # node_exporter's textfile collector may read the file at any moment: never a partial file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _doctor_inventory(
    inventory: Path,
    limit: tuple[str, ...],
    level: str | None,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    fail_on: Status,
    fmt: str,
    output: Path | None,
    verbose: bool,
) -> None:
    start = time.monotonic()
    try:
        by_name = doctor_fleet(
            inventory,
            limit=limit,
            level=Level(level or Level.QUICK.value),
            only=only,
            skip=skip,
            fail_on=fail_on,
        )
    except SelectionError as exc:
        click.echo(f"llmtune doctor: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    reports = list(by_name.values())
    if fmt == "json":
        documents = [json.loads(render_json(r)) for r in reports]
        text = json.dumps({"schema": FLEET_SCHEMA, "hosts": documents}, indent=2) + "\n"
    elif fmt == "text":
        took = time.monotonic() - start
        style = click.style if output is None and sys.stdout.isatty() else None
        text = render_fleet(by_name, fail_on=fail_on, verbose=verbose, duration_s=took, style=style)
    else:
        raise click.UsageError(f"--format {fmt} is not available with --inventory yet")
    if output:
        _write_atomically(output, text)
    else:
        click.echo(text, nl=False)
    sys.exit(fleet_exit_code(reports))


def _check_table() -> str:
    rows = [("ID", "NAME", "CATEGORY", "LEVEL", "TITLE")]
    rows += [(c.id, c.name, c.category, c.level.value, c.title) for c in all_checks()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4] + "\n"
        for r in rows
    )


def _progress(record: ProbeRecord) -> None:
    state = "done" if record.exit_status == 0 else "FAILED"
    click.echo(f"  probe {record.fact}: {state} in {record.duration_s:.1f} s", err=True)


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Output format; machine formats print nothing else on stdout.",
)
@click.option(
    "--level",
    type=click.Choice([lv.value for lv in Level]),
    default=None,
    help="quick (default, under a second) or full (adds load and bandwidth probes).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="ID|NAME|CATEGORY",
    help="Run only these checks (repeatable or comma-separated).",
)
@click.option("--skip", multiple=True, metavar="ID|NAME|CATEGORY", help="Leave these checks out.")
@click.option(
    "--fail-on",
    type=click.Choice(["fail", "warn"]),
    default="fail",
    show_default=True,
    help="Which status makes the exit code 1.",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(path_type=Path),
    default=None,
    help="YAML file of doctor settings (rated RAM speed, thresholds).",
)
@click.option(
    "--capture",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also save every raw probe output to this .tar.gz.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Evaluate a capture instead of this host.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to this file (atomically) instead of stdout.",
)
@click.option(
    "-i",
    "--inventory",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Check the hosts of this pyinfra inventory (over SSH).",
)
@click.option(
    "--limit",
    multiple=True,
    metavar="HOST|GROUP",
    help="With --inventory: only these hosts or groups.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the details of passing checks too.")
@click.option("--list", "list_checks", is_flag=True, help="List the checks and exit.")
def doctor(
    fmt: str,
    level: str | None,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    fail_on: str,
    settings_path: Path | None,
    capture: Path | None,
    replay: Path | None,
    output: Path | None,
    inventory: Path | None,
    limit: tuple[str, ...],
    verbose: bool,
    list_checks: bool,
) -> None:
    """Run the diagnostic checklist on this host.

    \b
    Exit codes: 0 no failure, 1 a check failed (or warned, with --fail-on warn),
    2 usage or configuration error, 3 a check errored and none failed.
    """
    if list_checks:
        click.echo(_check_table(), nl=False)
        return
    if capture and replay:
        raise click.UsageError("--capture and --replay cannot be combined")
    if inventory and (capture or replay or settings_path):
        raise click.UsageError(
            "--inventory reads each host's settings from the inventory; it takes no "
            "--settings, --capture or --replay"
        )
    fail_status = Status(fail_on)
    if inventory:
        _doctor_inventory(inventory, limit, level, only, skip, fail_status, fmt, output, verbose)
        return
    try:
        settings = load_settings(settings_path)
        report = run_doctor(
            level=Level(level) if level else None,
            only=only,
            skip=skip,
            settings=settings,
            fail_on=fail_status,
            replay=replay,
            capture=capture,
            on_probe=_progress if level == Level.FULL.value else None,
        )
    except (SettingsError, SelectionError, CaptureError) as exc:
        click.echo(f"llmtune doctor: {exc}", err=True)
        sys.exit(EXIT_USAGE)

    if fmt == "json":
        text = render_json(report)
    elif fmt == "junit":
        text = render_junit(report, fail_status)
    elif fmt == "prometheus":
        text = render_prometheus(report)
    else:
        style = click.style if output is None and sys.stdout.isatty() else None
        text = render_text(report, verbose, style) if style else render_text(report, verbose)
    if output:
        _write_atomically(output, text)
    else:
        click.echo(text, nl=False)
    sys.exit(report.exit_code)
