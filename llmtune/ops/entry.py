"""Running a deploy module both ways: as pyinfra's deploy file, or imported as a function."""

from __future__ import annotations

import os
from collections.abc import Callable

from pyinfra.context import ctx_state


def run_if_deploy_file(module_file: str, deploy: Callable[[], object]) -> None:
    """Call ``deploy`` when pyinfra is executing ``module_file`` itself as its deploy file.

    pyinfra's CLI runs a deploy file with ``exec`` and records which file it executes; when a
    user's own deploy imports this module instead, the file executing is theirs, and nothing
    runs on import.
    """
    current = ctx_state.get().current_exec_filename if ctx_state.isset() else None
    if current and os.path.realpath(current) == os.path.realpath(module_file):
        deploy()
