"""Write tune's winner into a host's settings file (host_vars/<host>.yaml), with its evidence.

The winner goes in a marked block at the end of the file; the measured numbers go in the
block's comments (the settings keys stay the validated ones). A later tune replaces its own
block. A key the block sets that the user had set elsewhere in the file is commented out where
it was (``# llmtune tune sets this below: threads: 8``), so the file never holds two values
for one key. The previous file is kept beside it (``.bak-<time>``): nothing is lost.

Only knobs that settings can express are written: threads, kv_cache_type, ubatch_size,
flash_attn, and fit_target_mib when tune chose the margin (not when it was the user's budget).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from llmtune.settings import read_mapping
from llmtune.tune.config import Config

BEGIN = "# >>> llmtune tune"
END = "# <<< llmtune tune"


class HostVarsError(ValueError):
    pass


def settings_for(winner: Config, *, margin_is_a_knob: bool) -> dict[str, object]:
    """The settings keys that make the planner produce ``winner``."""
    if winner.placement == "cpu-moe":
        raise HostVarsError(
            "the winner keeps every expert in RAM (-cmoe), which settings cannot express "
            "beside --fit; nothing written"
        )
    keys: dict[str, object] = {}
    if winner.threads is not None:
        keys["threads"] = winner.threads
    keys["kv_cache_type"] = winner.kv
    if winner.ubatch is not None:
        keys["ubatch_size"] = winner.ubatch
    if winner.flash_attn != "auto":
        keys["flash_attn"] = winner.flash_attn
    if margin_is_a_knob and winner.placement == "fit" and winner.fit_target is not None:
        keys["fit_target_mib"] = winner.fit_target
    return keys


def render_block(keys: dict[str, object], evidence: Sequence[str]) -> str:
    lines = [f"{BEGIN} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"]
    lines += [f"# {line}" for line in evidence]
    for key, value in keys.items():
        # Strings quoted: a bare on/off is a boolean to YAML 1.1.
        lines.append(f'{key}: "{value}"' if isinstance(value, str) else f"{key}: {value}")
    lines.append(END)
    return "\n".join(lines) + "\n"


def merge(text: str, block: str, keys: Sequence[str]) -> str:
    """``text`` without its previous tune block, the keys of the new block commented out where
    the user had them, and the new block at the end."""
    kept = re.sub(rf"(?ms)^{re.escape(BEGIN)}.*?^{re.escape(END)}[^\n]*\n?", "", text)
    pattern = re.compile(rf"^({'|'.join(map(re.escape, keys))})\s*:")
    lines = [
        f"# llmtune tune sets this below: {line}" if keys and pattern.match(line) else line
        for line in kept.splitlines()
    ]
    body = "\n".join(lines).rstrip("\n")
    return (body + "\n\n" if body else "") + block


def write(path: Path, keys: dict[str, object], evidence: Sequence[str]) -> Path | None:
    """Write the block into ``path`` (created when missing); returns the backup's path (None for
    a new file). The result is validated as settings before it replaces the file."""
    old = path.read_text() if path.exists() else ""
    new = merge(old, render_block(keys, evidence), list(keys))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".llmtune-tmp")
    temp.write_text(new)
    try:
        read_mapping(temp)  # a file the inventory would refuse is never written
    except Exception:
        temp.unlink()
        raise
    backup = None
    if path.exists():
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.copy2(path, backup)
    temp.replace(path)
    return backup
