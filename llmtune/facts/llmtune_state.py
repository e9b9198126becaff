"""What llmtune recorded on a host: the state before its first apply, per deploy (for revert)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmtune.facts.probe import LlmtuneFact, c_locale, parse_grep_h, read_files, sysroot

STATE_DIR = "/var/lib/llmtune"
ORIGINAL_DIR = f"{STATE_DIR}/original"


@dataclass(frozen=True)
class OriginalStateValue:
    """Example: ``OriginalStateValue(sections={"memory": {"thp": "madvise"}})``.

    ``broken`` names section files that exist but are not JSON: a revert must stop, not guess.
    """

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    broken: tuple[str, ...] = ()


class OriginalState(LlmtuneFact[OriginalStateValue]):
    """The ``/var/lib/llmtune/original/<deploy>.json`` files (one line of JSON each)."""

    def command(self, root: str = "") -> str:
        return c_locale(read_files([sysroot(root, f"{ORIGINAL_DIR}/*.json")]))

    def process(self, output: list[str]) -> OriginalStateValue:
        sections: dict[str, dict[str, Any]] = {}
        broken: list[str] = []
        for path, lines in parse_grep_h(output).values.items():
            name = path.rsplit("/", 1)[-1].removesuffix(".json")
            try:
                data = json.loads("\n".join(lines))
            except json.JSONDecodeError:
                broken.append(name)
                continue
            if isinstance(data, dict):
                sections[name] = data
            else:
                broken.append(name)
        return OriginalStateValue(sections, tuple(sorted(broken)))
