"""Everything: ``pyinfra inventories/home.py deploys/all.py`` turns a stock host into a tuned
inference host. Safe to run again at any time: an unchanged host reports no changes."""

from __future__ import annotations

from pyinfra.api import deploy

from llmtune.deploys.cpu import cpu
from llmtune.deploys.headless import headless
from llmtune.deploys.llama_cpp import llama_cpp
from llmtune.deploys.llama_server import llama_server
from llmtune.deploys.memory import memory
from llmtune.deploys.power import power
from llmtune.ops.entry import run_if_deploy_file


@deploy("llmtune all")
def apply_all() -> None:
    # power first: the memory and cpu deploys rely on its tuned profile for persistence.
    power()
    memory()
    cpu()
    headless()
    # Last: the build takes minutes and must not hold back the tuning of the OS.
    llama_cpp()
    # After the build: its --help decides the flags; a failed build stops the host before this.
    llama_server()


run_if_deploy_file(__file__, apply_all)
