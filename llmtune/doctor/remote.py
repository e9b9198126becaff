"""Reading facts through pyinfra's connectors (SSH, @local, @docker...): no hand-made SSH.

Each llmtune fact's command runs on the pyinfra host through the generic ``RawProbe`` fact, which
returns the raw lines; the llmtune fact's own ``process()`` parses them here. Keeping the raw lines
is what lets a remote run be captured and replayed like a local one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.host import Host

from llmtune.doctor.collect import Collection, FactClass, ProbeRecord, _evaluate, fact_timeout


class RawProbe(FactBase):
    """Runs a given command and returns its stdout lines untouched."""

    def command(self, command: str) -> str:
        return command

    def process(self, output: list[str]) -> list[str]:
        return list(output)

    @staticmethod
    def default() -> list[str]:
        return []


def collect_pyinfra(host: Host, facts: Iterable[FactClass]) -> Collection:
    """Run the facts on one connected pyinfra host, one after another (pyinfra's fact model)."""
    facts = list(dict.fromkeys(facts))
    records: dict[str, ProbeRecord] = {}
    for fact in facts:
        command = fact().command()
        start = time.monotonic()
        try:
            lines = host.get_fact(RawProbe, command=command, _timeout=int(fact_timeout(fact)) + 1)
            status: int | None = 0
        except Exception as exc:  # connection lost, timeout: report it on this fact only
            lines, status = [f"{type(exc).__name__}: {exc}"], 255
        records[fact.__name__] = ProbeRecord(
            fact.__name__,
            command,
            tuple(lines) if status == 0 else (),
            () if status == 0 else tuple(lines),
            status,
            time.monotonic() - start,
        )
    return Collection(_evaluate(facts, records), tuple(records.values()))


def connect(hosts: list[Any]) -> State:
    """Connect a pyinfra inventory made of ``hosts`` (names or ``(name, data)`` tuples)."""
    inventory = Inventory((hosts, {}))
    state = State(inventory, Config())
    connect_all(state)
    return state
