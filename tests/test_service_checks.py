"""SRV001-SRV008 and the facts they read. The passing case is the H100 machine: the planned
command line run there (no systemd: its ExecStart by hand, memlock unlimited), with the real
recordings of the API probe and the process fact (tests/fixtures/recorded/llama-service)."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

from conftest import FIXTURES, read_fact, run_command

from llmtune.checks.registry import FactValues
from llmtune.checks.service import (
    llama_server_affinity,
    llama_server_completion,
    llama_server_exposure,
    llama_server_flags,
    llama_server_health,
    llama_server_memlock,
    llama_server_on_gpu,
    llama_server_service,
)
from llmtune.facts.cpu import CpuInfo, CpuTopology, CpuTopologyValue
from llmtune.facts.gpu import GpuProcess, GpuProcesses, GpuProcessesValue
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.facts.llama_runtime import LlamaServerProcesses
from llmtune.facts.llama_service import (
    LlamaService,
    LlamaServiceValue,
    ServerApi,
    ServerApiValue,
    ServiceRecord,
    parse_server_api,
)
from llmtune.facts.systemd import SystemdState, SystemdStateValue
from llmtune.findings import Status
from llmtune.settings import HostSettings

REC = FIXTURES / "recorded" / "llama-service"
SETTINGS = HostSettings()


def lines(name: str) -> list[str]:
    return (REC / name).read_text().splitlines()


def planned_argv(name: str) -> tuple[str, ...]:
    """The command line `llmtune plan` printed there (its last line), as it was run."""
    return tuple(shlex.split(lines(name)[-1]))


PROCESSES = LlamaServerProcesses().process(lines("fact-processes-plenty.txt"))
(H100_PROCESS,) = PROCESSES.processes
RECORD = ServiceRecord(
    argv=planned_argv("plan-plenty.txt"),
    port=8080,
    address="127.0.0.1",
    api_key_file="/etc/llmtune/llama-server.key",
    alias="llama8b-q4_k_m",
    placement="gpu",
    load_mode="mlock",
    uses_gpu=True,
)
SERVICE = LlamaServiceValue(record=RECORD)
API = parse_server_api(lines("fact-server-api-plenty.txt"))
# nvidia-smi --query-compute-apps there: "12140, 8924 MiB" (the plenty scenario's server).
GPU = GpuProcessesValue(
    available=True,
    processes=(
        GpuProcess(gpu=0, pid=H100_PROCESS.pid, type="C", name="llama-server", used_mib=8924),
    ),
)
H100_CPU = CpuTopologyValue(cpus=tuple(CpuInfo(c, core_id=c, socket=0) for c in range(16)))


def facts(**over: object) -> FactValues:
    values: dict[type, object] = {
        LlamaService: SERVICE,
        ServerApi: API,
        LlamaServerProcesses: PROCESSES,
        GpuProcesses: GPU,
        CpuTopology: H100_CPU,
    }
    for name, value in over.items():
        values[{"service": LlamaService, "api": ServerApi, "procs": LlamaServerProcesses,
                "gpu": GpuProcesses, "cpu": CpuTopology}[name]] = value  # fmt: skip
    return FactValues(values)


def with_process(**changes: object) -> object:
    return replace(PROCESSES, processes=(replace(H100_PROCESS, **changes),))


ALL = (
    llama_server_health,
    llama_server_completion,
    llama_server_exposure,
    llama_server_flags,
    llama_server_on_gpu,
    llama_server_affinity,
    llama_server_memlock,
)


def test_recordings_parse() -> None:
    assert API.available and API.health_status == 200 and API.completion_status == 200
    assert API.completion_tokens == 16 and API.unauthorized_status == 401 and API.key == "read"
    assert PROCESSES.current_binary.endswith("/builds/0c1e570-ef071a1f58/build/bin/llama-server")
    assert H100_PROCESS.exe == PROCESSES.current_binary
    assert H100_PROCESS.argv == RECORD.argv
    assert H100_PROCESS.option("-ngl") == "all" and H100_PROCESS.option("-ctk") == "f16"
    assert H100_PROCESS.memlock_soft is None and H100_PROCESS.cpus_allowed == tuple(range(16))


def test_the_h100_server_passes_every_check() -> None:
    for check in ALL:
        outcome = check(facts(), SETTINGS)
        assert outcome.status is Status.PASS, (check.__name__, outcome)
    flags = llama_server_flags(facts(), SETTINGS)
    assert flags.observed == f"{len(RECORD.argv) - 1} arguments as planned"


def test_no_service_record_skips_everything() -> None:
    empty = facts(service=LlamaServiceValue())
    for check in ALL:
        assert check(empty, SETTINGS).status is Status.SKIP
    broken = facts(service=LlamaServiceValue(record_error="not a service record"))
    assert llama_server_health(broken, SETTINGS).status is Status.FAIL


def test_service_state_from_systemd() -> None:
    host = HostInfoValue(pid1="systemd")
    systemd = SystemdStateValue(running=True, system_state="running")
    unit = {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled",
            "MainPID": str(H100_PROCESS.pid), "NRestarts": "1"}  # fmt: skip
    values = FactValues({HostInfo: host, SystemdState: systemd,
                         LlamaService: replace(SERVICE, unit=unit)})  # fmt: skip
    ok = llama_server_service(values, SETTINGS)
    assert ok.status is Status.PASS and "restarts 1" in ok.observed
    down = FactValues({HostInfo: host, SystemdState: systemd, LlamaService: replace(
        SERVICE, unit={**unit, "ActiveState": "failed", "SubState": "failed"})})  # fmt: skip
    assert llama_server_service(down, SETTINGS).status is Status.FAIL
    no_systemd = FactValues({HostInfo: HostInfoValue(pid1="process_api"),
                             SystemdState: SystemdStateValue(), LlamaService: SERVICE})  # fmt: skip
    assert llama_server_service(no_systemd, SETTINGS).status is Status.SKIP


def test_cpu_fallback_is_a_failure() -> None:
    # CUDA lost the nvidia_uvm race: /health is ok, the process holds no VRAM.
    outcome = llama_server_on_gpu(facts(gpu=GpuProcessesValue(available=True)), SETTINGS)
    assert outcome.status is Status.FAIL and "runs on the CPU" in outcome.observed
    assert "nvidia_uvm" in outcome.fix
    cpu_plan = facts(service=LlamaServiceValue(record=replace(RECORD, uses_gpu=False)))
    assert llama_server_on_gpu(cpu_plan, SETTINGS).status is Status.SKIP


def test_flags_that_differ_from_the_plan() -> None:
    argv = tuple(a if a != "f16" else "q8_0" for a in RECORD.argv)
    outcome = llama_server_flags(facts(procs=with_process(argv=argv)), SETTINGS)
    assert outcome.status is Status.FAIL
    assert "not planned: q8_0" in outcome.details and "planned, not running: f16" in outcome.details


def test_exposure() -> None:
    open_argv = tuple(
        a for a in RECORD.argv if a not in ("--api-key-file", "/etc/llmtune/llama-server.key")
    )
    open_argv = tuple("0.0.0.0" if a == "127.0.0.1" else a for a in open_argv)
    exposed = llama_server_exposure(facts(procs=with_process(argv=open_argv)), SETTINGS)
    assert exposed.status is Status.FAIL and "0.0.0.0" in exposed.observed
    keyed = tuple("0.0.0.0" if a == "127.0.0.1" else a for a in RECORD.argv)
    assert llama_server_exposure(facts(procs=with_process(argv=keyed)), SETTINGS).status is (
        Status.PASS
    )
    on_cmdline = (*open_argv, "--api-key", "k")
    leaked = llama_server_exposure(facts(procs=with_process(argv=on_cmdline)), SETTINGS)
    assert leaked.status is Status.FAIL and "command line" in leaked.observed


def test_completion_without_key_must_be_refused() -> None:
    open_api = replace(API, unauthorized_status=200)
    assert llama_server_completion(facts(api=open_api), SETTINGS).status is Status.FAIL
    failing = replace(API, completion_status=500, completion_error="model crashed")
    assert llama_server_completion(facts(api=failing), SETTINGS).status is Status.FAIL
    unreadable = replace(API, key="unreadable: Permission denied")
    assert llama_server_completion(facts(api=unreadable), SETTINGS).status is Status.WARN


def test_affinity_and_memlock() -> None:
    on_e_cores = llama_server_affinity(
        facts(service=LlamaServiceValue(record=replace(RECORD, cpu_affinity=(0, 1, 2, 3)))),
        SETTINGS,
    )
    assert on_e_cores.status is Status.FAIL  # planned 0-3, runs on 0-15
    limited = with_process(memlock_soft=8388608, memlock_hard=8388608)
    outcome = llama_server_memlock(facts(procs=limited), SETTINGS)
    assert outcome.status is Status.FAIL and "8388608 bytes" in outcome.observed
    unreadable = with_process(memlock_soft=-1)
    assert llama_server_memlock(facts(procs=unreadable), SETTINGS).status is Status.WARN


# --- the facts' real commands here ---


def test_api_probe_without_a_record_or_a_server(tmp_path: Path) -> None:
    missing = read_fact(ServerApi, record=str(tmp_path / "none.json"))
    assert not missing.available and "no service record" in missing.reason
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = tmp_path / "record.json"
    record.write_text(ServiceRecord(port=port, address="127.0.0.1").to_json())
    down = read_fact(ServerApi, record=str(record))
    assert down.available and down.health_status == 0 and down.completion_status is None
    assert down.target == f"http://127.0.0.1:{port}"


def test_api_probe_against_a_real_http_server(tmp_path: Path) -> None:
    """A real HTTP server that answers like llama-server (health, 401 without the key)."""
    key = tmp_path / "key"
    key.write_text("# comment\nsecret-key\n")
    server = tmp_path / "server.py"
    server.write_text(
        "import http.server, json, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def log_message(self, *a): pass\n"
        "    def reply(self, code, body):\n"
        "        data = json.dumps(body).encode(); self.send_response(code)\n"
        "        self.send_header('Content-Length', str(len(data))); self.end_headers()\n"
        "        self.wfile.write(data)\n"
        "    def do_GET(self): self.reply(200, {'status': 'ok'})\n"
        "    def do_POST(self):\n"
        "        self.rfile.read(int(self.headers['Content-Length']))\n"
        "        if self.headers.get('Authorization') != 'Bearer secret-key':\n"
        "            return self.reply(401, {'error': {'message': 'Invalid API Key'}})\n"
        "        usage = {'completion_tokens': 5}\n"
        "        self.reply(200, {'object': 'chat.completion', 'usage': usage})\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        "print(s.server_address[1], flush=True)\n"
        "s.serve_forever()\n"
    )
    proc = subprocess.Popen(["python3", str(server)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        record = tmp_path / "record.json"
        record.write_text(json.dumps({"port": port, "address": "0.0.0.0",
                                      "api_key_file": str(key)}))  # fmt: skip
        api = read_fact(ServerApi, record=str(record), wait_s=5)
    finally:
        proc.kill()
        proc.wait()
    assert api == ServerApiValue(
        available=True,
        target=f"http://127.0.0.1:{port}",
        health_status=200,
        health_body='{"status": "ok"}',
        health_s=api.health_s,
        completion_status=200,
        completion_tokens=5,
        completion_s=api.completion_s,
        unauthorized_status=401,
        key="read",
    )


def test_service_fact_reads_the_record(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "llmtune" / "llama-server.json"
    path.parent.mkdir(parents=True)
    path.write_text(RECORD.to_json())
    value = read_fact(LlamaService, root=str(tmp_path))
    assert value.record == RECORD and value.record_error == ""
    path.write_text("{not json")
    broken = LlamaService().process(run_command(LlamaService().command(root=str(tmp_path))))
    assert broken.record is None and "not a service record" in broken.record_error
