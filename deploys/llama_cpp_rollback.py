"""Roll llama.cpp back: ``current`` to the newest other complete build (kept by llama_cpp.py),
then restart llama-server if it runs, so that it serves from the build rolled back to (BLD003)."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, server

from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.llama_build import DEFAULT_PREFIX, rollback_script


@deploy("llmtune llama.cpp rollback")
def llama_cpp_rollback() -> None:
    script = f"{DEFAULT_PREFIX}/rollback.sh"
    files.put(
        name="Write the rollback script",
        src=StringIO(rollback_script(DEFAULT_PREFIX)),
        dest=script,
        mode="755",
        create_remote_dir=True,
    )
    server.shell(name="Switch llama.cpp back to the previous build", commands=[f"bash {script}"])
    # try-restart: only a running service restarts; no systemd or no service is no error.
    server.shell(
        name="Restart llama-server on the build rolled back to",
        commands=[
            "if command -v systemctl >/dev/null && systemctl is-active --quiet llama-server; "
            "then systemctl try-restart llama-server; fi"
        ],
    )


run_if_deploy_file(__file__, llama_cpp_rollback)
