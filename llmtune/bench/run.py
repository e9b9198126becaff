"""Run llama-bench on a host with the service's planned flags, record the run, read the store.

The service holds its VRAM (and on a CPU host competes for the cores), so it is stopped for the
bench and started again afterwards, whatever happened. The run goes to the host's store
(``/var/lib/llmtune/bench/runs.jsonl``, one JSON line per run), where the next verify finds the
baseline; the caller also gets it to keep locally.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from llmtune.bench.argv import DEFAULT_REPETITIONS, BenchArgvError, bench_binary_for, bench_command
from llmtune.bench.results import (
    STORE_DIR,
    STORE_PATH,
    TIME_FORMAT,
    BenchOutputError,
    BenchRun,
    parse_jsonl,
    parse_store,
)
from llmtune.bench.snapshot import take_snapshot
from llmtune.bench.target import Target, measuring_command, service_stopped
from llmtune.facts.cpu import CpuFreq
from llmtune.facts.cuda import CudaToolkit
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.host import HostInfo
from llmtune.facts.llama import LlamaBuilds, LlamaVersion
from llmtune.facts.llama_bench import LlamaBenchHelp
from llmtune.facts.llama_service import LlamaService
from llmtune.facts.memory import MemoryModules, Thp
from llmtune.facts.tuned import TunedState

# A CPU host at pp512 x 5 repetitions with a depth test takes minutes; a slow build, more.
BENCH_TIMEOUT_S = 3600.0


class BenchError(RuntimeError):
    """The bench could not run on this host; the message says why and what to do."""


def run_bench(
    target: Target,
    *,
    baseline: bool = False,
    repetitions: int = DEFAULT_REPETITIONS,
    depth: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchRun:
    service = target.fact(LlamaService)
    record = service.record
    if record is None:
        raise BenchError(
            f"{target.name}: no llmtune llama-server service (apply deploys/llama_server.py): "
            "the bench runs the service's planned flags"
        )
    binary = bench_binary_for(record.argv[0])
    try:
        command = bench_command(
            record,
            target.fact(LlamaBenchHelp, binary=binary),
            binary,
            repetitions=repetitions,
            depth=depth,
        )
    except BenchArgvError as exc:
        raise BenchError(f"{target.name}: {exc}") from exc
    for note in command.notes:
        progress(f"note: {note}")
    why = "the bench (it holds the GPU and the cores)"
    with service_stopped(target, record.service, bool(service.active), why, progress):
        progress(
            f"llama-bench: {', '.join(command.tests)} x {repetitions} repetitions "
            f"({shlex.join(command.argv)})"
        )
        started = time.monotonic()
        result = target.shell(measuring_command(command.argv), timeout_s=BENCH_TIMEOUT_S)
    if not result.ok:
        raise BenchError(f"{target.name}: llama-bench failed: {' '.join(result.stderr[-5:])}")
    try:
        results = parse_jsonl(result.stdout)
    except BenchOutputError as exc:
        raise BenchError(f"{target.name}: {exc}") from exc
    if tuple(r.test for r in results) != command.tests:
        got = ", ".join(r.test for r in results)
        raise BenchError(f"{target.name}: llama-bench ran {got}, expected {command.tests}")
    progress(f"llama-bench done in {time.monotonic() - started:.0f} s")
    snapshot = take_snapshot(
        builds=target.fact(LlamaBuilds),
        gpus=target.fact(NvidiaGpus),
        cuda=target.fact(CudaToolkit),
        host=target.fact(HostInfo),
        cpufreq=target.fact(CpuFreq),
        thp=target.fact(Thp),
        tuned=target.fact(TunedState),
        modules=target.fact(MemoryModules),
        version=target.fact(LlamaVersion),
        cpus=record.cpu_affinity,
    )
    run = BenchRun(
        host=target.name,
        time=time.strftime(TIME_FORMAT, time.gmtime()),
        snapshot=snapshot,
        results=results,
        argv=command.argv,
        baseline=baseline,
    )
    line = run.to_json().strip()
    stored = target.shell(
        f"mkdir -p {STORE_DIR} && printf '%s\\n' {shlex.quote(line)} >> {STORE_PATH}"
    )
    if not stored.ok:
        raise BenchError(f"{target.name}: could not append to {STORE_PATH}: {stored.stderr}")
    return run


def read_store(target: Target) -> list[BenchRun]:
    """Every run the host's store holds (damaged lines are left out)."""
    result = target.shell(f"cat {STORE_PATH} 2>/dev/null || true")
    runs, _errors = parse_store(result.stdout)
    return runs
