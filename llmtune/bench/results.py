"""llama-bench's results and llmtune's record of one bench run (the JSONL store on the host).

``llama-bench -o jsonl`` prints one JSON object per test on stdout (its log goes to stderr)::

    {"build_commit": "unknown", ..., "n_prompt": 0, "n_gen": 128, "n_depth": 0,
     "test_time": "2026-11-23T10:13:40Z", "avg_ns": 466050229, "stddev_ns": 2726664,
     "avg_ts": 274.654795, "stddev_ts": 1.612228, "samples_ns": [ 467578456, ... ],
     "samples_ts": [ 273.751, 276.516, 273.697 ]}

``BenchResult`` keeps that object as printed (``raw``) and reads the fields llmtune uses from it,
so a store written today can be re-read with more fields tomorrow. ``BenchRun`` is one line of
``/var/lib/llmtune/bench/runs.jsonl``: the host, when, the snapshot of what can change speed, the
command that ran, its results and whether it is the reference (``--save-baseline``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmtune.bench.snapshot import Snapshot

SCHEMA = "llmtune.bench/v1"
STORE_DIR = "/var/lib/llmtune/bench"
STORE_PATH = f"{STORE_DIR}/runs.jsonl"
# BenchRun.time: ISO 8601 in UTC, as llama-bench writes test_time ("2026-11-23T10:13:40Z").
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class BenchOutputError(ValueError):
    """llama-bench's output (or a stored run) is not what this module reads."""


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BenchOutputError(f"{key}: expected an integer, got {value!r}")
    return value


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchOutputError(f"{key}: expected a number, got {value!r}")
    return float(value)


def bench_test_name(n_prompt: int, n_gen: int, n_depth: int) -> str:
    """llama-bench's own test names, the depth joined without spaces: "pp512", "tg128",
    "pp512+tg128" (-pg), "tg128@d16384" (llama-bench's table prints "tg128 @ d16384")."""
    if n_prompt > 0 and n_gen == 0:
        name = f"pp{n_prompt}"
    elif n_gen > 0 and n_prompt == 0:
        name = f"tg{n_gen}"
    else:
        name = f"pp{n_prompt}+tg{n_gen}"
    return f"{name}@d{n_depth}" if n_depth > 0 else name


@dataclass(frozen=True)
class BenchResult:
    """One test of one run. Example (the H100, every layer on the GPU, -r 3)::

    BenchResult(test="tg128", avg_ts=274.654795, stddev_ts=1.612228, n_prompt=0, n_gen=128,
                n_depth=0, samples_ts=(273.751, 276.516, 273.697), raw={...})
    """

    test: str
    avg_ts: float
    stddev_ts: float
    n_prompt: int
    n_gen: int
    n_depth: int
    samples_ts: tuple[float, ...] = ()
    # The object llama-bench printed, unchanged (model, flags, build, backends, devices...).
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def kind(self) -> str:
        """Prompt processing ("pp") or generation ("tg"). A -pg test (pp+tg) counts as "tg": at
        serving sizes its time is mostly the generated tokens'."""
        return "pp" if self.n_prompt > 0 and self.n_gen == 0 else "tg"

    @property
    def median_ts(self) -> float:
        """The median of the repetitions, else the mean. Compared in place of the mean because
        one slow repetition moves the mean: on the H100, pp512 -r 3 gave 7655, 9855 and 9929 t/s
        (mean 9146, median 9855)."""
        return statistics.median(self.samples_ts) if self.samples_ts else self.avg_ts

    def get(self, key: str, default: Any = None) -> Any:
        """A field llama-bench printed ("n_gpu_layers", "type_k", "gpu_info"...)."""
        return self.raw.get(key, default)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BenchResult:
        n_prompt, n_gen, n_depth = (_int(data, k) for k in ("n_prompt", "n_gen", "n_depth"))
        samples = data.get("samples_ts") or []
        if not isinstance(samples, list) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in samples
        ):
            raise BenchOutputError(f"samples_ts: expected a list of numbers, got {samples!r}")
        return cls(
            test=bench_test_name(n_prompt, n_gen, n_depth),
            avg_ts=_float(data, "avg_ts"),
            stddev_ts=_float(data, "stddev_ts"),
            n_prompt=n_prompt,
            n_gen=n_gen,
            n_depth=n_depth,
            samples_ts=tuple(float(s) for s in samples),
            raw=dict(data),
        )


def parse_jsonl(lines: Iterable[str]) -> tuple[BenchResult, ...]:
    """The results in ``llama-bench -o jsonl`` output, in order.

    Lines that are not JSON objects (a CUDA build's "ggml_cuda_init: ..." when stderr was merged
    in, blank lines) are skipped; an object that is not a test result raises
    ``BenchOutputError`` naming its line: a measurement is never guessed.
    """
    results: list[BenchResult] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BenchOutputError(f"line {number}: not JSON ({exc})") from exc
        try:
            results.append(BenchResult.from_mapping(data))
        except BenchOutputError as exc:
            raise BenchOutputError(f"line {number}: {exc}") from exc
    return tuple(results)


@dataclass(frozen=True)
class BenchRun:
    """One ``llmtune bench`` on one host: a line of ``STORE_PATH``. Example::

    BenchRun(host="gpu1", time="2026-11-23T10:13:40Z", snapshot=Snapshot(llama_commit="0c1e570...",
             driver="580.159.04", ...), argv=("/opt/llmtune/llama.cpp/current/bin/llama-bench",
             "-m", "/srv/models/llama8b-q4_k_m.gguf", ...), results=(BenchResult("pp512", ...),
             ...), baseline=True)
    """

    host: str
    time: str
    snapshot: Snapshot
    results: tuple[BenchResult, ...]
    argv: tuple[str, ...] = ()
    baseline: bool = False
    schema: str = SCHEMA

    def result(self, test: str) -> BenchResult | None:
        return next((r for r in self.results if r.test == test), None)

    @property
    def tests(self) -> tuple[str, ...]:
        return tuple(r.test for r in self.results)

    @property
    def label(self) -> str:
        """How a run is named to the user: "gpu1 2026-11-23T10:13:40Z (baseline)"."""
        return f"{self.host} {self.time}" + (" (baseline)" if self.baseline else "")

    def to_json(self) -> str:
        """One line (no newline), keys sorted; the results as llama-bench printed them."""
        data = {
            "schema": self.schema,
            "host": self.host,
            "time": self.time,
            "baseline": self.baseline,
            "snapshot": self.snapshot.to_dict(),
            "argv": list(self.argv),
            "results": [dict(r.raw) for r in self.results],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> BenchRun:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BenchOutputError(f"not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise BenchOutputError("not a JSON object")
        if data.get("schema") != SCHEMA:
            raise BenchOutputError(f"schema {data.get('schema')!r}, this llmtune reads {SCHEMA}")
        results = data.get("results")
        snapshot = data.get("snapshot")
        if not isinstance(results, list) or not isinstance(snapshot, dict):
            raise BenchOutputError("results or snapshot missing")
        if not all(isinstance(r, dict) for r in results):
            raise BenchOutputError("a result is not a JSON object")
        return cls(
            host=str(data.get("host") or ""),
            time=str(data.get("time") or ""),
            snapshot=Snapshot.from_dict(snapshot),
            results=tuple(BenchResult.from_mapping(r) for r in results),
            argv=tuple(str(a) for a in data.get("argv") or ()),
            baseline=bool(data.get("baseline")),
        )


def parse_store(lines: Iterable[str]) -> tuple[list[BenchRun], list[str]]:
    """The runs in a store, oldest first, and one message per line that could not be read.

    A store is only ever appended to; a line cut short (disk full, power lost) must not hide the
    runs before and after it, so it is reported rather than raised.
    """
    runs: list[BenchRun] = []
    errors: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            runs.append(BenchRun.from_json(line))
        except BenchOutputError as exc:
            errors.append(f"{STORE_PATH} line {number}: {exc}")
    return runs, errors


def latest_run(
    runs: Sequence[BenchRun], *, host: str | None = None, baseline: bool | None = None
) -> BenchRun | None:
    """The last run in store order (the store is appended in time order), of ``host`` when
    given; ``baseline=True`` only baselines, ``False`` only runs that are not."""
    for run in reversed(runs):
        if host is not None and run.host != host:
            continue
        if baseline is not None and run.baseline != baseline:
            continue
        return run
    return None


def latest_baseline(runs: Sequence[BenchRun], host: str | None = None) -> BenchRun | None:
    """The reference ``llmtune verify`` compares with: the last run saved with --save-baseline."""
    return latest_run(runs, host=host, baseline=True)
