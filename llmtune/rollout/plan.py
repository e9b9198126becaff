"""The order of a rollout: the canaries alone first, then the other hosts in batches of N.

Pure: works on host names and their inventory groups, read elsewhere (pyinfra_ops.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The inventory group whose hosts are the canaries (inventories/fleet_example.py).
CANARY_GROUP = "canary"


class PlanError(ValueError):
    """The rollout cannot be planned (bad batch size, an unknown --canary name)."""


@dataclass(frozen=True)
class Batch:
    hosts: tuple[str, ...]
    canary: bool = False


def choose_canaries(
    hosts: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    requested: Sequence[str] = (),
) -> list[str]:
    """The canary hosts, in inventory order: the ``--canary`` names (hosts or groups) when given,
    else the hosts of the ``canary`` group, else the first host.

    ``groups`` maps a host to its group names. A requested name that matches no host is an
    error: a typo must not silently make the first host the canary.
    """
    if not hosts:
        return []
    if requested:
        unknown = [
            name
            for name in requested
            if name not in hosts and not any(name in groups.get(h, ()) for h in hosts)
        ]
        if unknown:
            raise PlanError(f"--canary {', '.join(unknown)}: no such host or group in the run")
        wanted = set(requested)
        return [h for h in hosts if h in wanted or wanted & set(groups.get(h, ()))]
    in_group = [h for h in hosts if CANARY_GROUP in groups.get(h, ())]
    return in_group or [hosts[0]]


def plan_batches(
    hosts: Sequence[str],
    batch_size: int,
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    canary: Sequence[str] = (),
) -> list[Batch]:
    """Canaries first (one batch, however many), then the other hosts in inventory order, in
    batches of ``batch_size``. Every host appears exactly once."""
    if batch_size < 1:
        raise PlanError(f"batch size must be at least 1, not {batch_size}")
    if len(set(hosts)) != len(hosts):
        raise PlanError("a host is listed twice")
    canaries = choose_canaries(hosts, groups or {}, canary)
    rest = [h for h in hosts if h not in canaries]
    batches = [Batch(tuple(canaries), canary=True)] if canaries else []
    batches += [Batch(tuple(rest[i : i + batch_size])) for i in range(0, len(rest), batch_size)]
    return batches
