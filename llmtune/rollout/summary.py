"""What a rollout did to each host, as data, and its text rendering. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class HostState(str, Enum):
    # Applied and its verify passed: the host keeps the change.
    VERIFIED = "verified"
    # Applied, verify failed, the llama.cpp build was switched back.
    ROLLED_BACK = "rolled back"
    # Applied, verify failed, and the rollback failed too: the host needs a person.
    REGRESSED = "regressed"
    # The deploy itself failed on the host. Not rolled back: whether the new build was switched
    # in before the failure is unknown, and rolling back a build that was never replaced would
    # go one build further back.
    APPLY_FAILED = "apply failed"
    # pyinfra could not connect: nothing was changed on it.
    UNREACHABLE = "unreachable"
    # In a batch after the one that stopped the rollout: never touched.
    UNTOUCHED = "untouched"


@dataclass(frozen=True)
class HostOutcome:
    host: str
    batch: int  # 1-based, in plan order
    state: HostState
    verify: str = ""  # the verify summary line, when verify ran
    detail: str = ""  # why apply or rollback failed, or how many operations changed something


@dataclass(frozen=True)
class RolloutSummary:
    outcomes: tuple[HostOutcome, ...]  # plan order
    batches: int
    # The 1-based batch at which the rollout stopped; None when every batch went through.
    stopped_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.stopped_at is None and all(o.state == HostState.VERIFIED for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def hosts_in(self, state: HostState) -> list[str]:
        return [o.host for o in self.outcomes if o.state == state]


def render_summary(summary: RolloutSummary) -> str:
    """A line saying how it ended, then one row per host: batch, host, state, verify/detail."""
    if summary.stopped_at is None:
        head = f"rollout complete: {summary.batches} batch(es), {len(summary.outcomes)} host(s)"
        if not summary.ok:
            head += " (not every host verified)"
    else:
        head = f"rollout STOPPED at batch {summary.stopped_at}/{summary.batches}: {summary.reason}"
    rows = [("BATCH", "HOST", "RESULT", "VERIFY / DETAIL")]
    for o in summary.outcomes:
        text = " | ".join(t for t in (o.verify, o.detail) if t)
        rows.append((str(o.batch), o.host, o.state.value, text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [head, ""]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    ]
    counts = {s: len(summary.hosts_in(s)) for s in HostState}
    lines += ["", ", ".join(f"{n} {s.value}" for s, n in counts.items() if n) or "no hosts"]
    return "\n".join(line.rstrip() for line in lines) + "\n"
