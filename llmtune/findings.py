"""What a check concludes about a host: a Finding is data, rendered by whichever format is asked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"


class Severity(str, Enum):
    """How much a failure of this check typically costs (speed or safety)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds the check's identity to make a Finding."""

    status: Status
    observed: str = ""
    expected: str = ""
    fix: str = ""
    # Extra lines a reader may want (the list of processes holding VRAM, per-CPU values...).
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    id: str
    name: str
    title: str
    category: str
    severity: Severity
    status: Status
    observed: str
    expected: str
    fix: str
    source: str
    details: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["status"] = self.status.value
        data["details"] = list(self.details)
        return data


def passed(observed: str, expected: str = "", details: tuple[str, ...] = ()) -> Outcome:
    return Outcome(Status.PASS, observed, expected, "", tuple(details))


def warned(observed: str, expected: str, fix: str, details: tuple[str, ...] = ()) -> Outcome:
    return Outcome(Status.WARN, observed, expected, fix, tuple(details))


def failed(observed: str, expected: str, fix: str, details: tuple[str, ...] = ()) -> Outcome:
    return Outcome(Status.FAIL, observed, expected, fix, tuple(details))


def skipped(reason: str) -> Outcome:
    """Not applicable on this host: the reason goes where a reader looks for the observation."""
    return Outcome(Status.SKIP, reason)
