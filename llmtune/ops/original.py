"""Recording the host's state before llmtune's first change, so that a revert can restore it."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.operations import files

from llmtune.facts.llmtune_state import ORIGINAL_DIR, OriginalState


def record_original(section: str, data: dict[str, Any]) -> None:
    """Write ``original/<section>.json`` once: only when no earlier apply recorded it.

    ``data`` is taken from facts read before this run changes anything; a later apply must not
    overwrite it with a state llmtune itself produced.
    """
    if section in host.get_fact(OriginalState).sections:
        return
    files.put(
        name=f"Record the state before llmtune's first change ({section})",
        src=StringIO(json.dumps(data, sort_keys=True) + "\n"),
        dest=f"{ORIGINAL_DIR}/{section}.json",
        mode="600",
        create_remote_dir=True,
    )
