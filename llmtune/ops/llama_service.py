"""Install the llama-server unit for this host and prove it serves, or put the old one back.

Runs at execution time (``python.call``), not while pyinfra prepares the deploy: the flags are
generated from the ``--help`` of the binary actually installed, and in ``deploys/all.py`` that
binary is built earlier in the same run. Every fact is read fresh here.

Order: plan -> render the argv for the binary (a flag it lacks stops here, before anything is
written) -> render the unit -> if unit and record are unchanged, the service is up and runs the
current build: nothing to do. Otherwise keep the old unit and record aside, write the new ones,
reload, enable, restart, wait for /health and a real completion with the key (and 401 without).
If that fails the old unit, record and service come back and the deploy fails with the reason
and the journal's tail.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from io import StringIO

from pyinfra import host, logger
from pyinfra.api.exceptions import OperationError

from llmtune.facts.cpu import CpuTopology
from llmtune.facts.gpu import NvidiaGpus
from llmtune.facts.llama import LlamaServerHelp
from llmtune.facts.llama_runtime import LlamaServerProcesses
from llmtune.facts.llama_service import (
    RECORD_PATH,
    LlamaService,
    ServerApi,
    ServerApiValue,
    ServiceRecord,
)
from llmtune.facts.meminfo import MemInfo
from llmtune.facts.model import GgufModel
from llmtune.planner.serve import PlanError, ServePlan, host_resources, plan_server
from llmtune.planner.server_argv import ArgvError, render_argv
from llmtune.planner.unit import (
    API_KEY_CREDENTIAL,
    DEFAULT_API_KEY_FILE,
    ServiceSpec,
    UnitError,
    render_unit,
)
from llmtune.settings import HostSettings

# How long a restarted server may take to load its model and answer /health.
HEALTH_WAIT_S = 120.0
# Each ask waits this long for /health before the unit's state is looked at again.
POLL_S = 3.0
PREVIOUS = ".llmtune-prev"


@dataclass(frozen=True)
class ServiceFiles:
    """What the deploy writes for one plan."""

    plan: ServePlan
    spec: ServiceSpec
    unit: str
    record: ServiceRecord


def credential_path(unit_name: str) -> str:
    """Where systemd puts the loaded key for the service (%d/api-key at run time)."""
    return f"/run/credentials/{unit_name}/{API_KEY_CREDENTIAL}"


def service_files(
    settings: HostSettings,
    binary: str,
    *,
    name: str = "llama-server",
) -> ServiceFiles:
    """Read the facts, plan, render. Raises OperationError before anything is written."""
    model = host.get_fact(GgufModel, path=settings.model_path or "")
    if not model.available:
        raise OperationError(f"model_path {settings.model_path}: {model.reason}")
    mmproj = None
    if settings.workload == "vision" and settings.mmproj_path:
        mmproj = host.get_fact(GgufModel, path=settings.mmproj_path)
        if not mmproj.available:
            raise OperationError(f"mmproj_path {settings.mmproj_path}: {mmproj.reason}")
    gpus = host.get_fact(NvidiaGpus)
    resources = host_resources(gpus, host.get_fact(CpuTopology), host.get_fact(MemInfo))
    key_file = DEFAULT_API_KEY_FILE if settings.server_api_key == "file" else None
    unit_name = f"{name}.service"
    try:
        plan = plan_server(
            resources,
            model,
            settings,
            credential_path(unit_name) if key_file else None,
            mmproj=mmproj,
        )
        argv = render_argv(plan, host.get_fact(LlamaServerHelp, binary=binary), binary)
    except PlanError as exc:
        raise OperationError(f"llama-server plan: {exc}; the unit is unchanged") from exc
    except ArgvError as exc:
        raise OperationError(f"{exc}; the unit is unchanged") from exc
    # The unit passes the key itself (a systemd credential, --api-key-file %d/api-key).
    args = strip_option(argv[1:], "--api-key-file")
    cpus = plan.value("cpus")
    affinity = tuple(int(c) for c in cpus) if isinstance(cpus, (list, tuple)) else ()
    model_paths = [p for p in (settings.model_path, settings.mmproj_path) if p]
    try:
        spec = ServiceSpec(
            argv=tuple(args),
            name=name,
            user=settings.server_user,
            group=settings.server_user,
            binary=binary,
            cpu_affinity=affinity,
            model_paths=tuple(model_paths),
            api_key_file=key_file,
            gpu_devices=tuple(
                f"/dev/nvidia{g.index}" for g in resources.gpus if plan.placement != "cpu"
            ),
        )
        unit = render_unit(spec)
    except UnitError as exc:
        raise OperationError(f"llama-server unit: {exc}; the unit is unchanged") from exc
    running = [binary, *args]
    if key_file:
        running += ["--api-key-file", credential_path(unit_name)]
    record = ServiceRecord(
        service=name,
        argv=tuple(running),
        port=settings.server_port,
        address=settings.server_bind,
        api_key_file=key_file or "",
        alias=str(plan.value("alias") or ""),
        placement=plan.placement,
        load_mode=str(plan.value("load_mode") or ""),
        cpu_affinity=affinity,
        uses_gpu=plan.placement in ("gpu", "fit"),
    )
    return ServiceFiles(plan, spec, unit, record)


def strip_option(args: list[str], option: str) -> list[str]:
    """``args`` without ``option`` and its value."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        else:
            out.append(arg)
    return out


def _run(command: str, what: str) -> str:
    ok, output = host.run_shell_command(command)
    if not ok:
        raise OperationError(f"{what} failed: {' '.join(output.stderr_lines[-5:])}")
    return "\n".join(output.stdout_lines)


def _read(path: str) -> str | None:
    ok, output = host.run_shell_command(f"cat {shlex.quote(path)} 2>/dev/null || echo @@absent")
    lines = output.stdout_lines if ok else ["@@absent"]
    if lines == ["@@absent"]:
        return None
    return "\n".join(lines) + "\n"


def _put(text: str, path: str, mode: str = "644") -> None:
    tmp = f"{path}.llmtune-new"
    if not host.put_file(StringIO(text), tmp):
        raise OperationError(f"could not write {path}")
    _run(f"chmod {mode} {shlex.quote(tmp)} && mv -f {shlex.quote(tmp)} {shlex.quote(path)}", path)


def serves(api: ServerApiValue, keyed: bool) -> str:
    """ "" when the server proved it serves; else why not."""
    if not api.available:
        return api.reason
    if api.health_status != 200:
        return f"/health answered {api.health_status or 'nothing'} {api.health_body}".strip()
    if api.completion_status != 200:
        return f"a chat completion answered {api.completion_status}: {api.completion_error}"
    if keyed and api.unauthorized_status != 401:
        return f"a request without the key answered {api.unauthorized_status}, not 401"
    return ""


def wait_until_serving(started: bool) -> ServerApiValue:
    """Ask the API until /health answers 200, the unit gives up (failed, or restarting over and
    over: a server that exits at start), or HEALTH_WAIT_S pass."""
    deadline = time.monotonic() + HEALTH_WAIT_S
    while True:
        api = host.get_fact(ServerApi, wait_s=POLL_S if started else 0)
        if api.health_status == 200 or not started or time.monotonic() >= deadline:
            return api
        unit = host.get_fact(LlamaService).unit
        restarts = unit.get("NRestarts", "0")
        if unit.get("ActiveState") == "failed" or (restarts.isdigit() and int(restarts) >= 2):
            return api


def install_service(settings: HostSettings, binary: str) -> None:
    """The runtime step of deploys/llama_server.py (see the module docstring)."""
    files = service_files(settings, binary)
    unit_path = files.spec.unit_path
    name = files.spec.unit_name
    old_unit, old_record = _read(unit_path), _read(RECORD_PATH)
    new_record = files.record.to_json()
    service = host.get_fact(LlamaService)
    running = host.get_fact(LlamaServerProcesses)
    main = next((p for p in running.processes if p.pid == service.main_pid), None)
    current = main is not None and not main.exe_deleted and main.exe == running.current_binary
    if old_unit == files.unit and old_record == new_record and service.active and current:
        logger.info(f"[{host.name}] llmtune: {name} is up, unchanged, runs the current build")
        return

    why = "new unit" if old_unit != files.unit else "new plan" if old_record != new_record else ""
    why = why or ("a new build is current" if service.active else "the service was not active")
    logger.info(f"[{host.name}] llmtune: restarting {name}: {why}")
    q = shlex.quote
    if old_unit is not None:
        _run(f"cp -p {q(unit_path)} {q(unit_path + PREVIOUS)}", "keeping the previous unit")
    if old_record is not None:
        _run(f"cp -p {q(RECORD_PATH)} {q(RECORD_PATH + PREVIOUS)}", "keeping the previous record")
    _put(files.unit, unit_path)
    _put(new_record, RECORD_PATH)
    _run(f"systemctl daemon-reload && systemctl enable --quiet {q(name)}", "enabling the unit")
    ok, _ = host.run_shell_command(f"systemctl restart {q(name)}")
    api = wait_until_serving(ok)
    problem = serves(api, bool(files.record.api_key_file))
    if not problem:
        rate = api.completion_tokens / api.completion_s if api.completion_s else 0.0
        logger.info(
            f"[{host.name}] llmtune: {name} serves: /health 200, completion "
            f"{api.completion_tokens} tokens in {api.completion_s:.2f} s ({rate:.1f} t/s)"
        )
        return

    _, journal = host.run_shell_command(f"journalctl -u {q(name)} -n 25 --no-pager -o cat")
    tail = "\n".join(journal.stdout_lines[-25:])
    restore(unit_path, old_unit is not None, old_record is not None, name)
    if old_unit is not None:
        # Nothing lost: the previous configuration is back, and proven to serve again.
        again = serves(wait_until_serving(True), _keyed(old_record))
        now = "the previous unit is back and serves"
        if again:
            now = f"the previous unit is back but does not serve either ({again})"
    else:
        now = "the service is stopped (there was no previous unit)"
    raise OperationError(
        f"{name} with the new configuration does not serve ({problem}); {now}.\njournal:\n{tail}"
    )


def _keyed(record_text: str | None) -> bool:
    """Whether a service record (JSON text) has an API key file."""
    try:
        return bool(ServiceRecord.from_mapping(json.loads(record_text or "{}")).api_key_file)
    except (ValueError, TypeError, AttributeError):
        return False


def restore(unit_path: str, had_unit: bool, had_record: bool, name: str) -> None:
    """Put the previous unit and record back and restart them; no unit before: stop, remove."""
    q = shlex.quote
    if had_record:
        _run(f"mv -f {q(RECORD_PATH + PREVIOUS)} {q(RECORD_PATH)}", "restoring the record")
    else:
        _run(f"rm -f {q(RECORD_PATH)}", "removing the record")
    if had_unit:
        _run(f"mv -f {q(unit_path + PREVIOUS)} {q(unit_path)}", "restoring the unit")
        host.run_shell_command(f"systemctl daemon-reload; systemctl restart {q(name)}")
    else:
        host.run_shell_command(
            f"systemctl disable --now {q(name)}; rm -f {q(unit_path)}; systemctl daemon-reload"
        )
