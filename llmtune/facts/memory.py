"""Memory facts: transparent hugepages (more facts of this area are added beside it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale, parse_grep_h, read_files, sysroot

THP_DIR = "/sys/kernel/mm/transparent_hugepage"


def selected_choice(line: str | None) -> str | None:
    """The bracketed choice of a sysfs selector line: ``always [madvise] never`` -> ``madvise``."""
    if line is None:
        return None
    match = re.search(r"\[([^\]]+)\]", line)
    return match.group(1) if match else line.strip() or None


@dataclass(frozen=True)
class ThpValue:
    """Example: ``ThpValue(enabled="madvise", defrag="madvise")``; None where the kernel has no THP."""

    enabled: str | None = None
    defrag: str | None = None


class Thp(LlmtuneFact[ThpValue]):
    """Transparent hugepage mode (enabled, defrag) from sysfs."""

    def command(self, root: str = "") -> str:
        files = [sysroot(root, f"{THP_DIR}/enabled"), sysroot(root, f"{THP_DIR}/defrag")]
        return c_locale(read_files(files))

    def process(self, output: list[str]) -> ThpValue:
        values = parse_grep_h(output)
        by_name = {path.rsplit("/", 1)[-1]: "\n".join(v) for path, v in values.values.items()}
        return ThpValue(
            enabled=selected_choice(by_name.get("enabled")),
            defrag=selected_choice(by_name.get("defrag")),
        )
