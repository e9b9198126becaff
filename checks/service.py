"""Checks of category service: the llama-server service llmtune installed (deploys/llama_server.py).

Each compares the service record the deploy wrote (what it planned) with what runs: the unit's
state, the API (health, a real completion, 401 without the key), the exposure, the running flags,
VRAM held (CUDA can lose the nvidia_uvm race at boot and the server then runs on the CPU while
/health says ok), CPU affinity and the memory lock. Hosts without the service skip them.
"""

from __future__ import annotations

import functools

from llmtune.checks.applies import systemd_skip
from llmtune.checks.registry import CheckFunc, FactUnavailable, FactValues, check
from llmtune.facts.cpu import CpuTopology, format_cpulist
from llmtune.facts.gpu import GpuProcesses
from llmtune.facts.host import HostInfo
from llmtune.facts.llama_runtime import LlamaServerProcess, LlamaServerProcesses
from llmtune.facts.llama_service import (
    LlamaService,
    LlamaServiceValue,
    ServerApi,
    ServerApiValue,
    ServiceRecord,
)
from llmtune.facts.systemd import SystemdState
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings, is_loopback

JOURNAL = "journalctl -u llama-server -n 50 --no-pager"
REDEPLOY = "pyinfra INVENTORY deploys/llama_server.py"
SOURCE = "issue 5 (hardened llama-server service)"
NO_SERVICE = "no llmtune llama-server service on this host (deploys/llama_server.py not applied)"


class _Stop(Exception):
    """Ends a check early with this outcome (no service, no process, no API answer)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _stops(func: CheckFunc) -> CheckFunc:
    @functools.wraps(func)
    def run(facts: FactValues, settings: HostSettings) -> Outcome:
        try:
            return func(facts, settings)
        except _Stop as stop:
            return stop.outcome

    return run


def _record(service: LlamaServiceValue) -> ServiceRecord:
    if service.record_error:
        expected = "a service record written by the deploy"
        raise _Stop(failed(service.record_error, expected, REDEPLOY))
    if service.record is None:
        raise _Stop(skipped(NO_SERVICE))
    return service.record


def _api(facts: FactValues) -> ServerApiValue:
    api = facts[ServerApi]
    if not api.available:
        raise FactUnavailable("ServerApi", api.reason)
    return api


def _process(facts: FactValues) -> LlamaServerProcess:
    """The service's main process (MainPID), else the only llama-server running."""
    service = facts[LlamaService]
    running = facts[LlamaServerProcesses].processes
    pid = service.main_pid
    chosen = next((p for p in running if p.pid == pid), None)
    if chosen is None and not pid and len(running) == 1:
        chosen = running[0]
    if chosen is None:
        why = f"MainPID {pid} is not a llama-server" if pid else "no llama-server is running"
        raise _Stop(failed(why, "the service's llama-server running", f"{JOURNAL}; {REDEPLOY}"))
    return chosen


@check(
    id="SRV001",
    name="llama-server-service",
    title="The llama-server service is active and enabled",
    category="service",
    severity=Severity.HIGH,
    source=SOURCE,
    facts=(HostInfo, SystemdState, LlamaService),
)
@_stops
def llama_server_service(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    skip = systemd_skip(facts[HostInfo], facts[SystemdState], "no service to check")
    if skip:
        return skip
    service = facts[LlamaService]
    state = (
        f"{service.unit.get('ActiveState', '?')} ({service.unit.get('SubState', '?')}), "
        f"{service.unit.get('UnitFileState', '?')}, restarts {service.unit.get('NRestarts', '?')}"
    )
    expected = "active (running), enabled"
    if service.active and service.enabled:
        return passed(state, expected)
    return failed(state, expected, f"sudo systemctl enable --now {record.service}; {JOURNAL}")


@check(
    id="SRV002",
    name="llama-server-health",
    title="llama-server answers /health",
    category="service",
    severity=Severity.HIGH,
    source=SOURCE,
    facts=(LlamaService, ServerApi),
)
@_stops
def llama_server_health(facts: FactValues, settings: HostSettings) -> Outcome:
    _record(facts[LlamaService])
    api = _api(facts)
    observed = f"GET {api.target}/health: {api.health_status or 'no answer'} {api.health_body}"
    if api.health_status == 200:
        return passed(observed.strip(), '200 {"status":"ok"}')
    return failed(observed.strip(), '200 {"status":"ok"}', f"{JOURNAL}")


@check(
    id="SRV003",
    name="llama-server-completion",
    title="A chat completion works with the API key and is refused without it",
    category="service",
    severity=Severity.HIGH,
    source=SOURCE,
    facts=(LlamaService, ServerApi),
)
@_stops
def llama_server_completion(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    api = _api(facts)
    if api.health_status != 200:
        return skipped("the server does not answer /health (SRV002)")
    if api.key.startswith("unreadable"):
        return warned(
            f"cannot read the API key file {record.api_key_file}: {api.key[12:]}",
            "a completion with the key",
            "sudo llmtune doctor --only service",
        )
    with_key = (
        f"completion {api.completion_status}: {api.completion_tokens} tokens in "
        f"{api.completion_s:.2f} s"
    )
    expected = "200 with the key, 401 without" if record.api_key_file else "200 (no key set)"
    if api.completion_status != 200:
        return failed(f"{with_key} {api.completion_error}".strip(), expected, JOURNAL)
    if record.api_key_file and api.unauthorized_status != 401:
        return failed(
            f"{with_key}; without the key: {api.unauthorized_status}",
            expected,
            f"{REDEPLOY}   # the server must run with --api-key-file",
        )
    if record.api_key_file:
        return passed(f"{with_key}; without the key: 401", expected)
    return passed(with_key, expected)


@check(
    id="SRV004",
    name="llama-server-exposure",
    title="llama-server listens beyond loopback only with an API key",
    category="service",
    severity=Severity.HIGH,
    source=SOURCE + "; security defaults: bind 127.0.0.1, key from a 0600 file",
    facts=(LlamaService, LlamaServerProcesses),
)
@_stops
def llama_server_exposure(facts: FactValues, settings: HostSettings) -> Outcome:
    _record(facts[LlamaService])
    process = _process(facts)
    # llama-server listens on 127.0.0.1 unless told otherwise.
    address = process.option("--host") or "127.0.0.1"
    keyed = process.option("--api-key-file") is not None or process.option("--api-key") is not None
    observed = f"listens on {address}:{process.option('--port') or '?'}, " + (
        "API key required" if keyed else "no API key"
    )
    expected = "loopback only, or an API key"
    if process.option("--api-key") is not None:
        # The key would be in every `ps` listing and in /proc/PID/cmdline.
        return failed(
            observed + " given on the command line", "--api-key-file", f"{REDEPLOY} (key file)"
        )
    if all(is_loopback(a) for a in address.split(",")) or keyed:
        return passed(observed, expected)
    return failed(
        observed, expected, f"set server_api_key: file (or server_bind: 127.0.0.1); {REDEPLOY}"
    )


@check(
    id="SRV005",
    name="llama-server-flags",
    title="llama-server runs with the planned flags",
    category="service",
    severity=Severity.MEDIUM,
    source=SOURCE + "; the planner's command line",
    facts=(LlamaService, LlamaServerProcesses),
)
@_stops
def llama_server_flags(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    process = _process(facts)
    planned, running = list(record.argv[1:]), list(process.argv[1:])
    expected = " ".join(planned)
    if planned == running:
        return passed(f"{len(running)} arguments as planned", expected)
    extra = [a for a in running if a not in planned]
    missing = [a for a in planned if a not in running]
    details = tuple(
        [f"not planned: {a}" for a in extra] + [f"planned, not running: {a}" for a in missing]
    ) or ("same arguments in another order",)
    return failed(" ".join(running), expected, f"sudo systemctl restart llama-server; {REDEPLOY}",
                  details)  # fmt: skip


@check(
    id="SRV006",
    name="llama-server-on-gpu",
    title="llama-server holds VRAM when its plan uses the GPU",
    category="service",
    severity=Severity.HIGH,
    source=SOURCE + "; nvidia_uvm boot race: CUDA lost, the server silently runs on the CPU",
    facts=(LlamaService, LlamaServerProcesses, GpuProcesses),
)
@_stops
def llama_server_on_gpu(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    if not record.uses_gpu:
        return skipped(f"the plan runs on the CPU (placement {record.placement or 'cpu'})")
    process = _process(facts)
    gpu = facts[GpuProcesses]
    if not gpu.available:
        raise FactUnavailable("GpuProcesses", gpu.reason)
    held = [p for p in gpu.processes if p.pid == process.pid]
    mib = sum(p.used_mib or 0 for p in held)
    expected = f"pid {process.pid} holds VRAM (placement {record.placement})"
    if held and mib > 0:
        where = ", ".join(f"GPU{p.gpu}: {p.used_mib} MiB" for p in held)
        return passed(f"pid {process.pid}: {where}", expected)
    return failed(
        f"pid {process.pid} holds no VRAM: it runs on the CPU",
        expected,
        "sudo modprobe nvidia_uvm && sudo systemctl restart llama-server",
    )


@check(
    id="SRV007",
    name="llama-server-affinity",
    title="llama-server runs on the P-cores only",
    category="service",
    severity=Severity.MEDIUM,
    source=SOURCE + "; seed 004 (pin inference to P-cores)",
    facts=(LlamaService, LlamaServerProcesses, CpuTopology),
)
@_stops
def llama_server_affinity(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    process = _process(facts)
    pcores = set(facts[CpuTopology].pcores)
    allowed = set(process.cpus_allowed)
    planned = set(record.cpu_affinity) or pcores
    observed = f"pid {process.pid} may run on CPUs {format_cpulist(sorted(allowed))}"
    expected = f"CPUs {format_cpulist(sorted(planned))} (P-cores {format_cpulist(sorted(pcores))})"
    if allowed and allowed <= pcores and allowed == planned:
        return passed(observed, expected)
    return failed(observed, expected, f"sudo systemctl restart llama-server; {REDEPLOY}")


@check(
    id="SRV008",
    name="llama-server-memlock",
    title="The model is locked in RAM (memlock limit in effect)",
    category="service",
    severity=Severity.MEDIUM,
    source=SOURCE + "; LimitMEMLOCK=infinity with --load-mode mlock",
    facts=(LlamaService, LlamaServerProcesses),
)
@_stops
def llama_server_memlock(facts: FactValues, settings: HostSettings) -> Outcome:
    record = _record(facts[LlamaService])
    if "mlock" not in record.load_mode:
        return skipped(f"the plan does not lock the model (load mode {record.load_mode or '?'})")
    process = _process(facts)
    if process.memlock_soft == -1:
        return warned(
            f"cannot read /proc/{process.pid}/limits (not root)",
            "memlock unlimited",
            "sudo llmtune doctor --only service",
        )
    limit = "unlimited" if process.memlock_soft is None else f"{process.memlock_soft} bytes"
    observed = f"pid {process.pid}: memlock {limit}, {process.vm_lck_kib // 1024} MiB locked"
    expected = "memlock unlimited and the model's pages locked"
    if process.memlock_soft is None and process.vm_lck_kib > 0:
        return passed(observed, expected)
    return failed(observed, expected, f"LimitMEMLOCK=infinity in the unit; {REDEPLOY}")
