"""The rollout orchestrator: apply to a batch, verify each host, stop at the first bad batch.

Its I/O comes in as callables (pyinfra_ops.py has the real apply and rollback; ``llmtune verify``
supplies verify), so the decisions here are plain control flow over their results:

* batches run in plan order (canaries first, plan.py);
* a batch goes through when every one of its hosts applied and verified; anything else (a failed
  verify, a failed apply, an unreachable host) stops the rollout after that batch, and the
  later batches are left untouched. An unreachable host stops it too: it proved nothing, and
  the owner can leave it out with --limit;
* the hosts whose apply succeeded but whose verify failed get their llama.cpp build rolled back;
  hosts whose apply failed are not (see HostState.APPLY_FAILED), nor those that verified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from llmtune.rollout.plan import Batch
from llmtune.rollout.summary import HostOutcome, HostState, RolloutSummary


class ApplyStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ApplyResult:
    """One host's result of a pyinfra run (the deploy, or the rollback)."""

    host: str
    status: ApplyStatus
    # The failing operation and the host's last log lines, or the connection error.
    detail: str = ""
    changed: int = 0  # operations that changed something

    @property
    def ok(self) -> bool:
        return self.status == ApplyStatus.OK


@dataclass(frozen=True)
class VerifyResult:
    """What ``llmtune verify`` concludes for one host (doctor + bench against its baseline)."""

    host: str
    ok: bool
    summary: str  # one line, shown in the rollout's table


Apply = Callable[[list[str]], Mapping[str, ApplyResult]]
Verify = Callable[[str], VerifyResult]
Rollback = Callable[[list[str]], Mapping[str, ApplyResult]]
Progress = Callable[[str], None]


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _apply(apply: Apply, hosts: list[str]) -> dict[str, ApplyResult]:
    try:
        results, missing = dict(apply(hosts)), "no result from the apply run"
    except Exception as exc:  # the runner itself broke: every host of the batch failed
        results, missing = {}, f"apply raised {_error(exc)}"
    return {h: results.get(h) or ApplyResult(h, ApplyStatus.FAILED, missing) for h in hosts}


def _verify(verify: Verify, host: str) -> VerifyResult:
    try:
        return verify(host)
    except Exception as exc:  # a crashed verify proves nothing: it counts as failed
        return VerifyResult(host, False, f"verify raised {_error(exc)}")


def _applied_detail(result: ApplyResult) -> str:
    return f"{result.changed} operation(s) changed" if result.changed else "no change"


def _run_batch(
    number: int,
    batch: Batch,
    apply: Apply,
    verify: Verify,
    rollback: Rollback,
    progress: Progress,
) -> list[HostOutcome]:
    hosts = list(batch.hosts)
    applied = _apply(apply, hosts)
    outcomes: dict[str, HostOutcome] = {}
    regressed: list[str] = []
    for host in hosts:
        result = applied[host]
        if result.status == ApplyStatus.UNREACHABLE:
            progress(f"  {host}: unreachable: {result.detail}")
            outcomes[host] = HostOutcome(host, number, HostState.UNREACHABLE, detail=result.detail)
            continue
        if not result.ok:
            progress(f"  {host}: apply FAILED: {result.detail}")
        checked = _verify(verify, host)
        progress(f"  {host}: verify {'ok' if checked.ok else 'FAILED'}: {checked.summary}")
        if not result.ok:
            state, detail = HostState.APPLY_FAILED, f"apply failed: {result.detail}"
        elif checked.ok:
            state, detail = HostState.VERIFIED, _applied_detail(result)
        else:
            state, detail = HostState.REGRESSED, _applied_detail(result)
            regressed.append(host)
        outcomes[host] = HostOutcome(host, number, state, checked.summary, detail)
    if regressed:
        progress(f"  rolling the llama.cpp build back on {', '.join(regressed)}")
        try:
            back, why = dict(rollback(regressed)), "no result from the rollback run"
        except Exception as exc:
            back, why = {}, f"rollback raised {_error(exc)}"
        for host in regressed:
            result = back.get(host) or ApplyResult(host, ApplyStatus.FAILED, why)
            old = outcomes[host]
            if result.ok:
                outcomes[host] = HostOutcome(
                    host, number, HostState.ROLLED_BACK, old.verify, old.detail
                )
            else:
                note = f"rollback FAILED: {result.detail}"
                progress(f"  {host}: {note}")
                outcomes[host] = HostOutcome(host, number, HostState.REGRESSED, old.verify, note)
    return [outcomes[h] for h in hosts]


def _stop_reason(outcomes: Sequence[HostOutcome]) -> str:
    bad = [o for o in outcomes if o.state != HostState.VERIFIED]
    return "; ".join(f"{o.host} {o.state.value}" for o in bad)


def rollout(
    batches: Sequence[Batch],
    apply: Apply,
    verify: Verify,
    rollback: Rollback,
    progress: Progress = lambda _message: None,
) -> RolloutSummary:
    """Run the batches in order; stop after the first one with a host that did not verify."""
    outcomes: list[HostOutcome] = []
    total = len(batches)
    for number, batch in enumerate(batches, start=1):
        kind = " (canary)" if batch.canary else ""
        progress(f"batch {number}/{total}{kind}: applying to {', '.join(batch.hosts)}")
        done = _run_batch(number, batch, apply, verify, rollback, progress)
        outcomes.extend(done)
        if any(o.state != HostState.VERIFIED for o in done):
            reason = _stop_reason(done)
            later = [
                HostOutcome(host, later_number, HostState.UNTOUCHED)
                for later_number, later_batch in enumerate(batches[number:], start=number + 1)
                for host in later_batch.hosts
            ]
            if later:
                progress(f"stopping: {len(later)} host(s) in later batches left untouched")
            return RolloutSummary(tuple(outcomes + later), total, number, reason)
    return RolloutSummary(tuple(outcomes), total)
