"""Reading facts from a host: locally, through pyinfra's connectors, or from a capture.

Each source runs the facts' own ``command()`` and hands the raw lines to their ``process()``,
keeping a ProbeRecord of what ran so a capture can be replayed later.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmtune.checks.registry import FactUnavailable, FactValues
from llmtune.facts.probe import LlmtuneFact

FactClass = type[LlmtuneFact[Any]]


@dataclass(frozen=True)
class ProbeRecord:
    """One fact's raw reading: the command, what it printed and how it ended."""

    fact: str
    command: str
    stdout: tuple[str, ...]
    stderr: tuple[str, ...]
    exit_status: int | None  # None: it did not finish (timeout)
    duration_s: float


@dataclass(frozen=True)
class Collection:
    facts: FactValues
    records: tuple[ProbeRecord, ...]


def fact_timeout(fact: FactClass) -> float:
    return float(fact.timeout_s)


def process_record(fact: FactClass, record: ProbeRecord) -> Any:
    """Turn a raw record into the fact's value, or raise FactUnavailable saying why not."""
    name = fact.__name__
    if record.exit_status is None:
        raise FactUnavailable(name, f"timed out after {record.duration_s:.0f} s")
    if record.exit_status != 0:
        detail = next((line for line in record.stderr if line.strip()), "")
        raise FactUnavailable(name, f"probe exited {record.exit_status}: {detail}".rstrip(": "))
    try:
        return fact().process(list(record.stdout))
    except Exception as exc:  # a parser bug must not hide every other finding
        raise FactUnavailable(name, f"could not parse its output: {exc!r}") from exc


def _evaluate(facts: Iterable[FactClass], records: Mapping[str, ProbeRecord]) -> FactValues:
    values: dict[FactClass, Any] = {}
    problems: dict[FactClass, FactUnavailable] = {}
    for fact in facts:
        record = records.get(fact.__name__)
        if record is None:
            problems[fact] = FactUnavailable(fact.__name__, "not in this capture", skip=True)
            continue
        try:
            values[fact] = process_record(fact, record)
        except FactUnavailable as exc:
            problems[fact] = exc
    return FactValues(values, problems)


def _lines(text: str) -> tuple[str, ...]:
    return tuple(text.splitlines())


def run_local(fact: FactClass) -> ProbeRecord:
    command = fact().command()
    start = time.monotonic()
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=fact_timeout(fact),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return ProbeRecord(fact.__name__, command, _lines(out), (), None, time.monotonic() - start)
    return ProbeRecord(
        fact.__name__,
        command,
        _lines(proc.stdout),
        _lines(proc.stderr),
        proc.returncode,
        time.monotonic() - start,
    )


def collect_local(
    facts: Iterable[FactClass], on_done: Callable[[ProbeRecord], None] | None = None
) -> Collection:
    """Run every fact's command on this machine.

    Reading probes run all at once (they mostly wait on the kernel); load probes (``exclusive``:
    memory bandwidth, the GPU copy load) run afterwards one at a time, so that none of them
    measures the others.
    """
    facts = list(dict.fromkeys(facts))
    shared = [f for f in facts if not f.exclusive]
    exclusive = [f for f in facts if f.exclusive]
    records: dict[str, ProbeRecord] = {}

    def done(record: ProbeRecord) -> None:
        records[record.fact] = record
        if on_done:
            on_done(record)

    with ThreadPoolExecutor(max_workers=max(1, len(shared))) as pool:
        for record in pool.map(run_local, shared):
            done(record)
    for fact in exclusive:
        done(run_local(fact))
    return Collection(_evaluate(facts, records), tuple(records[f.__name__] for f in facts))


def collect_replay(facts: Iterable[FactClass], records: Iterable[ProbeRecord]) -> Collection:
    by_name = {record.fact: record for record in records}
    facts = list(dict.fromkeys(facts))
    used = tuple(by_name[f.__name__] for f in facts if f.__name__ in by_name)
    return Collection(_evaluate(facts, by_name), used)
