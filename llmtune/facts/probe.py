"""The shared base of llmtune's facts and the small shell/parse vocabulary they speak.

Every llmtune fact is a pyinfra fact: ``command()`` builds one shell command that reads the host
and always exits 0 (a fact command that exits non-zero fails the host in pyinfra), and
``process()`` is a pure parser of its output lines. Where a fact runs a tool that may be missing
or may fail, the command wraps it so the parser can tell the cases apart from the tool's own
output: ``@@llmtune missing NAME`` when the tool is not installed, and ``@@llmtune rc N`` after
the tool's output with its exit status. Facts that read several sources print
``@@llmtune section NAME`` before each part.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pyinfra.api import FactBase

T = TypeVar("T")

MARK = "@@llmtune "
LOCALE = "export LC_ALL=C LANG=C;"


class LlmtuneFact(FactBase, Generic[T]):
    """Base for llmtune facts: C locale, never-failing commands, ``process([])`` as default.

    Subclasses implement ``command()`` (returning a string built with the helpers below) and
    ``process()``. The value of a fact with no output at all is ``process([])``, so callers see one
    typed value whether the host printed nothing or pyinfra skipped processing.
    """

    abstract = True
    # Seconds the probe may run before the doctor reports it as an error.
    timeout_s: float = 20.0
    # False for samples that differ between two readings (counters over an interval, CPU use).
    stable: bool = True
    # True for probes that load the host (RAM bandwidth, GPU copies): they run alone, so that no
    # probe measures another.
    exclusive: bool = False

    def default(self) -> T:  # type: ignore[override]  # pyinfra declares it static
        return self.process([])

    def process(self, output: list[str]) -> T:  # pragma: no cover - abstract
        raise NotImplementedError


def c_locale(cmd: str) -> str:
    return f"{LOCALE} {cmd}"


def section(name: str, cmd: str) -> str:
    """Print a section marker, then run ``cmd``; the marker lets one fact read several sources."""
    return f"echo {shlex.quote(MARK + 'section ' + name)}; {cmd}"


def tool(name: str, cmd: str) -> str:
    """Run ``cmd`` (which starts with tool ``name``) if the tool exists; always exit 0.

    Prints the tool's stdout and stderr, then ``@@llmtune rc N``; or ``@@llmtune missing NAME``.
    """
    missing = shlex.quote(MARK + "missing " + name)
    rc = shlex.quote(MARK + "rc ")
    return (
        f"if command -v {shlex.quote(name)} >/dev/null 2>&1; "
        f'then {cmd} 2>&1; echo {rc}"$?"; '
        f"else echo {missing}; fi"
    )


def read_files(paths: Iterable[str]) -> str:
    """Print ``path:line`` for every line of every readable file (globs allowed); always exit 0.

    ``grep -s -H`` is used for its real, stable ``PATH:CONTENT`` output; files that do not exist
    print nothing, which the parsers read as "absent".
    """
    joined = " ".join(paths)
    return f"grep -s -H . {joined} 2>/dev/null; true"


def join(*cmds: str) -> str:
    return "; ".join(cmds)


@dataclass(frozen=True)
class ToolOutput:
    """A wrapped tool's result: missing, or its output lines and exit status."""

    missing: bool
    rc: int | None = None
    lines: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.missing and self.rc == 0

    def text(self) -> str:
        return "\n".join(self.lines)

    def brief(self) -> str:
        """A one-line reason for a failed or missing tool, for skip/error messages."""
        if self.missing:
            return "not installed"
        first = next((line.strip() for line in self.lines if line.strip()), "")
        return f"exit status {self.rc}" + (f": {first}" if first else "")


def parse_tool(lines: Sequence[str]) -> ToolOutput:
    """Parse the output of :func:`tool` (the lines of one tool run)."""
    out: list[str] = []
    for line in lines:
        if line.startswith(MARK + "missing "):
            return ToolOutput(missing=True)
        if line.startswith(MARK + "rc "):
            status = line[len(MARK) + 3 :].strip()
            # A mangled trailer reads as "did not finish" rather than crashing the parser.
            rc = int(status) if status.isdigit() else None
            return ToolOutput(missing=False, rc=rc, lines=tuple(out))
        out.append(line)
    # No trailer: the probe was cut short (timeout, connection lost).
    return ToolOutput(missing=False, rc=None, lines=tuple(out))


def split_sections(lines: Sequence[str]) -> dict[str, list[str]]:
    """Split output made of :func:`section` parts into ``{name: lines}``."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    prefix = MARK + "section "
    for line in lines:
        if line.startswith(prefix):
            current = sections.setdefault(line[len(prefix) :].strip(), [])
        elif current is not None:
            current.append(line)
    return sections


@dataclass(frozen=True)
class FileValues:
    """``path -> lines`` as printed by :func:`read_files`."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, path: str) -> str | None:
        lines = self.values.get(path)
        return None if lines is None else "\n".join(lines)


def parse_grep_h(lines: Iterable[str], root: str = "") -> FileValues:
    """Parse ``grep -H`` output into path -> lines; ``root`` is stripped from the paths."""
    values: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith(MARK):
            continue
        path, sep, value = line.partition(":")
        if not sep:
            continue
        if root and path.startswith(root):
            path = path[len(root) :]
        values.setdefault(path, []).append(value)
    return FileValues(values)


def sysroot(root: str, path: str) -> str:
    """Prefix an absolute host path with ``root`` (a recorded /sys or /proc tree in tests).

    Left unquoted so globs expand; roots are temporary directories the tests make, without spaces.
    """
    return f"{root.rstrip('/')}{path}"
