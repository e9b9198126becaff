"""The ``llmtune`` command: a click group; each subcommand lives in llmtune/commands/."""

from __future__ import annotations

import click

from llmtune import __version__
from llmtune.commands.bench import bench, verify
from llmtune.commands.doctor import doctor
from llmtune.commands.plan import plan
from llmtune.commands.rollout import rollout
from llmtune.commands.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmtune")
def main() -> None:
    """Provision, tune and verify Linux hosts that serve LLMs with llama.cpp's llama-server."""


main.add_command(doctor)
main.add_command(plan)
main.add_command(bench)
main.add_command(verify)
main.add_command(rollout)
main.add_command(tune)
