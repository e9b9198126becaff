"""The check registry: each check is a pure function of facts and settings with a stable identity.

IDs are never reused: a retired check's ID goes into RETIRED_IDS, and a test keeps it that way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from llmtune.facts.probe import LlmtuneFact
from llmtune.findings import Outcome, Severity
from llmtune.settings import HostSettings

T = TypeVar("T")


class Level(str, Enum):
    QUICK = "quick"
    FULL = "full"


class FactUnavailable(Exception):
    """A fact a check needs could not be read; ``skip`` when it was simply not collected."""

    def __init__(self, fact: str, reason: str, skip: bool = False) -> None:
        super().__init__(f"{fact}: {reason}")
        self.fact = fact
        self.reason = reason
        self.skip = skip


class FactValues:
    """Typed access to collected facts: ``facts[CpuFreq]`` is the processed value."""

    def __init__(
        self,
        values: Mapping[type[LlmtuneFact[Any]], Any],
        problems: Mapping[type[LlmtuneFact[Any]], FactUnavailable] | None = None,
    ) -> None:
        self._values = dict(values)
        self._problems = dict(problems or {})

    def __getitem__(self, fact: type[LlmtuneFact[T]]) -> T:
        if fact in self._values:
            return self._values[fact]
        if fact in self._problems:
            raise self._problems[fact]
        raise FactUnavailable(fact.__name__, "not collected", skip=True)


CheckFunc = Callable[[FactValues, HostSettings], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    title: str
    category: str
    severity: Severity
    source: str
    facts: tuple[type[LlmtuneFact[Any]], ...]
    level: Level
    func: CheckFunc


CATEGORIES = ("memory", "cpu", "gpu", "power", "system", "thermal", "processes", "build", "service")
RETIRED_IDS: frozenset[str] = frozenset()
CHECKS: dict[str, Check] = {}


def check(
    *,
    id: str,
    name: str,
    title: str,
    category: str,
    severity: Severity,
    source: str,
    facts: tuple[type[LlmtuneFact[Any]], ...],
    level: Level = Level.QUICK,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check function. ``source`` names the seed section the rule comes from."""

    def register(func: CheckFunc) -> CheckFunc:
        if id in CHECKS or id in RETIRED_IDS:
            raise ValueError(f"check ID {id} is already used")
        if any(c.name == name for c in CHECKS.values()):
            raise ValueError(f"check name {name} is already used")
        if category not in CATEGORIES:
            raise ValueError(f"check {id}: unknown category {category}")
        CHECKS[id] = Check(id, name, title, category, severity, source, facts, level, func)
        return func

    return register
