"""RAM size and what is available now, from /proc/meminfo (what the service planner needs).

``MemAvailable`` (kernel >= 3.14) is the kernel's own estimate of what can be allocated without
swapping: free memory plus the page cache and reclaimable slabs it would drop. ``MemFree`` alone
undercounts on any machine that has read a file (a model!) since boot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale, sysroot

MEMINFO = "/proc/meminfo"
_KEYS = ("MemTotal", "MemAvailable")


@dataclass(frozen=True)
class MemInfoValue:
    """Example (the H100 VM, 128 GiB)::

    MemInfoValue(total_mib=128887, available_mib=128388)

    None where /proc/meminfo lacks the line (no /proc, or a kernel before 3.14 for
    ``available_mib``).
    """

    total_mib: int | None = None
    available_mib: int | None = None

    @property
    def available(self) -> bool:
        return self.total_mib is not None


def _kib_lines(lines: Iterable[str]) -> dict[str, int]:
    """``MemTotal:  131981020 kB`` -> ``{"MemTotal": 131981020}`` (the kernel prints kB = KiB)."""
    values: dict[str, int] = {}
    for line in lines:
        key, sep, rest = line.partition(":")
        words = rest.split()
        if sep and words and words[0].isdigit():
            values.setdefault(key.strip(), int(words[0]))
    return values


def parse_meminfo(lines: Iterable[str]) -> MemInfoValue:
    kib = _kib_lines(lines)
    total, available = (kib.get(key) for key in _KEYS)
    return MemInfoValue(
        total_mib=None if total is None else total // 1024,
        available_mib=None if available is None else available // 1024,
    )


class MemInfo(LlmtuneFact[MemInfoValue]):
    """MemTotal and MemAvailable in MiB."""

    # MemAvailable moves with the page cache between two readings.
    stable = False

    def command(self, root: str = "") -> str:
        pattern = "|".join(_KEYS)
        return c_locale(f"grep -s -E '^({pattern}):' {sysroot(root, MEMINFO)}; true")

    def process(self, output: list[str]) -> MemInfoValue:
        return parse_meminfo(output)
