"""``llmtune plan``: the llama-server command line the deploy would install, and why each flag.

Reads the same facts as deploys/llama_server.py (GPUs, CPU topology, RAM, the model's GGUF
header, the installed binary's --help) on this machine or on an inventory host over pyinfra's
connectors, and changes nothing.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llmtune.facts.cpu import CpuTopology
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.llama import SERVER_BINARY, LlamaServerHelp
from llmtune.facts.meminfo import MemInfo
from llmtune.facts.model import GgufModel
from llmtune.planner.serve import PlanError, ServePlan, host_resources, plan_server
from llmtune.planner.server_argv import ArgvError, explain, render_argv
from llmtune.planner.unit import DEFAULT_API_KEY_FILE
from llmtune.settings import HostSettings, SettingsError, load_settings

Reader = Callable[..., Any]


def read_local(fact: type, **kwargs: Any) -> Any:
    """Run a fact's command on this machine and parse it (as the local doctor does)."""
    instance = fact()
    proc = subprocess.run(
        ["/bin/sh", "-c", instance.command(**kwargs)],
        capture_output=True,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return instance.process(proc.stdout.splitlines())


def make_plan(
    read: Reader, settings: HostSettings, binary: str
) -> tuple[ServePlan, list[str] | None, str]:
    """The plan, the argv for the binary (None when its --help cannot be read) and a note."""
    if not settings.model_path:
        raise PlanError("model_path", "no model_path in the settings: nothing to plan")
    model = read(GgufModel, path=settings.model_path)
    if not model.available:
        raise PlanError("model_path", f"{settings.model_path}: {model.reason}")
    mmproj = None
    if settings.workload == "vision" and settings.mmproj_path:
        mmproj = read(GgufModel, path=settings.mmproj_path)
    host = host_resources(read(NvidiaGpus), read(CpuTopology), read(MemInfo))
    key = DEFAULT_API_KEY_FILE if settings.server_api_key == "file" else None
    plan = plan_server(host, model, settings, key, mmproj=mmproj)
    help_value = read(LlamaServerHelp, binary=binary)
    if not help_value.available:
        return plan, None, f"{binary}: {help_value.reason} (flags shown as planned, not rendered)"
    return plan, render_argv(plan, help_value, binary), ""


def _read_remote(inventory: Path, limit: str) -> tuple[Reader, HostSettings]:
    from pyinfra.api import Config, State
    from pyinfra.context import ctx_state
    from pyinfra_cli.inventory import make_inventory

    from llmtune.inventory import settings_of

    state = State(check_for_changes=False)
    with ctx_state.use(state):
        pyinfra_inventory = make_inventory(str(inventory))
        state.init(pyinfra_inventory, Config())
    host = next((h for h in pyinfra_inventory if h.name == limit), None)
    if host is None:
        names = ", ".join(h.name for h in pyinfra_inventory)
        raise click.UsageError(f"--limit {limit}: no such host in {inventory} ({names})")
    host.connect(raise_exceptions=True)

    def read(fact: type, **kwargs: Any) -> Any:
        return host.get_fact(fact, **kwargs)

    return read, settings_of(host.data)


@click.command()
@click.option("--settings", "settings_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Host settings YAML (model_path, workload, context_size...).")  # fmt: skip
@click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False),
              help="Plan for a host of this pyinfra inventory, with its settings.")  # fmt: skip
@click.option("--limit", help="The inventory host to plan for (with -i).")
@click.option("--model", "model_path", help="The GGUF model (overrides model_path).")
@click.option("--binary", default=SERVER_BINARY, show_default=True,
              help="The llama-server whose --help decides the spelling of each flag.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def plan(
    settings_path: Path | None,
    inventory: Path | None,
    limit: str | None,
    model_path: str | None,
    binary: str,
    fmt: str,
) -> None:
    """Show the llama-server command line planned for this host and the reason for every flag.

    Reads the host, changes nothing. Exit status 2 when the settings or the plan are wrong.
    """
    try:
        if inventory:
            if not limit:
                raise click.UsageError("-i needs --limit HOST (one host to plan for)")
            read, settings = _read_remote(inventory, limit)
        else:
            read, settings = read_local, load_settings(settings_path)
        if model_path:
            settings = HostSettings(**{**settings.__dict__, "model_path": model_path})
        the_plan, argv, note = make_plan(read, settings, binary)
    except (SettingsError, PlanError, ArgvError) as exc:
        click.echo(f"llmtune plan: {exc}", err=True)
        sys.exit(2)
    if fmt == "json":
        data = {
            "schema": "llmtune.plan/v1",
            "argv": argv,
            "note": note,
            "placement": the_plan.placement,
            "decisions": [
                {"setting": d.setting, "value": d.value, "reason": d.reason, "key": d.key}
                for d in the_plan.decisions
            ],
            "vram": the_plan.vram.__dict__ if the_plan.vram else None,
        }
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(explain(the_plan))
    click.echo("")
    if argv:
        click.echo(shlex.join(argv))
    if note:
        click.echo(f"note: {note}")
