"""The llama-server service llmtune installed: its record, its unit's state, and its API.

The deploy (deploys/llama_server.py) writes a service record, ``/etc/llmtune/llama-server.json``:
what it planned (argv, placement, load mode, CPU affinity, port, address, key file). The doctor
reads the record on the host, so it checks what the deploy did without needing the inventory's
settings, and compares it with what runs.

- ``LlamaService``: the record and ``systemctl show llama-server``.
- ``ServerApi``: /health, a real chat completion with the key, the same without it (401).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from llmtune.facts.probe import (
    LlmtuneFact,
    c_locale,
    join,
    parse_tool,
    read_files,
    section,
    split_sections,
    sysroot,
    tool,
)

SERVICE = "llama-server"
RECORD_PATH = "/etc/llmtune/llama-server.json"
SHOW = "Id,LoadState,ActiveState,SubState,UnitFileState,MainPID,NRestarts,FragmentPath"


@dataclass(frozen=True)
class ServiceRecord:
    """What the deploy planned; written as JSON by llmtune.ops.llama_service.

    Example::

        ServiceRecord(service="llama-server", argv=("/opt/llmtune/llama.cpp/current/bin/
                      llama-server", "-m", "/srv/m.gguf", ...), port=8080, address="127.0.0.1",
                      api_key_file="/etc/llmtune/llama-server.key", alias="m", placement="gpu",
                      load_mode="mlock", cpu_affinity=(0, 1, 2, 3), uses_gpu=True)
    """

    service: str = SERVICE
    argv: tuple[str, ...] = ()
    port: int = 0
    address: str = ""
    api_key_file: str = ""
    alias: str = ""
    placement: str = ""
    load_mode: str = ""
    cpu_affinity: tuple[int, ...] = ()
    uses_gpu: bool = False

    def to_json(self) -> str:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ServiceRecord:
        def ints(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in data.get(key) or () if isinstance(v, int))

        return cls(
            service=str(data.get("service") or SERVICE),
            argv=tuple(str(a) for a in data.get("argv") or ()),
            port=int(data.get("port") or 0),
            address=str(data.get("address") or ""),
            api_key_file=str(data.get("api_key_file") or ""),
            alias=str(data.get("alias") or ""),
            placement=str(data.get("placement") or ""),
            load_mode=str(data.get("load_mode") or ""),
            cpu_affinity=ints("cpu_affinity"),
            uses_gpu=bool(data.get("uses_gpu")),
        )


@dataclass(frozen=True)
class LlamaServiceValue:
    """Example (installed, running)::

    LlamaServiceValue(record=ServiceRecord(...), record_error="", systemd=True,
                      unit={"ActiveState": "active", "SubState": "running",
                            "UnitFileState": "enabled", "MainPID": "812", "NRestarts": "0", ...})

    ``record`` is None without a record (no llmtune service: the service checks skip).
    """

    record: ServiceRecord | None = None
    record_error: str = ""
    systemd: bool = False
    unit: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def active(self) -> bool:
        return self.unit.get("ActiveState") == "active"

    @property
    def enabled(self) -> bool:
        return self.unit.get("UnitFileState") == "enabled"

    @property
    def main_pid(self) -> int:
        pid = self.unit.get("MainPID", "")
        return int(pid) if pid.isdigit() else 0


class LlamaService(LlmtuneFact[LlamaServiceValue]):
    """The service record the deploy wrote and the unit's state."""

    def command(self, record: str = RECORD_PATH, root: str = "") -> str:
        unit = shlex.quote(SERVICE)
        return c_locale(
            join(
                section("record", read_files([shlex.quote(sysroot(root, record))])),
                section("show", tool("systemctl", f"systemctl show --property={SHOW} {unit}")),
            )
        )

    def process(self, output: list[str]) -> LlamaServiceValue:
        parts = split_sections(output)
        # grep -H prints PATH:LINE; the path has no ':' (it is ours).
        text = "\n".join(ln.partition(":")[2] for ln in parts.get("record", []))
        record, error = None, ""
        if text.strip():
            try:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                record = ServiceRecord.from_mapping(data)
            except (ValueError, TypeError) as exc:
                error = f"{RECORD_PATH} is not a service record: {exc}"
        show = parse_tool(parts.get("show", []))
        unit: dict[str, str] = {}
        if show.ok:
            for line in show.lines:
                key, eq, value = line.partition("=")
                if eq:
                    unit[key.strip()] = value.strip()
        return LlamaServiceValue(
            record=record,
            record_error=error,
            systemd=bool(unit) and unit.get("LoadState", "") != "",
            unit=unit,
        )


@dataclass(frozen=True)
class ServerApiValue:
    """Example (a working service with a key)::

    ServerApiValue(available=True, target="http://127.0.0.1:8080", health_status=200,
                   completion_status=200, completion_tokens=16, completion_s=0.093,
                   unauthorized_status=401, key="read")

    ``key`` is "read", "none" (no key configured) or "unreadable: REASON" (not root).
    """

    available: bool
    reason: str = ""
    target: str = ""
    health_status: int = 0
    health_body: str = ""
    health_s: float = 0.0
    completion_status: int | None = None
    completion_tokens: int = 0
    completion_s: float = 0.0
    completion_error: str = ""
    unauthorized_status: int | None = None
    key: str = ""


def _fields(parts: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, part in enumerate(parts):
        key, eq, value = part.partition("=")
        if eq:
            if key in ("body", "error"):  # free text: the rest of the line
                out[key] = " ".join([value, *parts[i + 1 :]]).strip()
                break
            out[key] = value
    return out


def parse_server_api(lines: list[str]) -> ServerApiValue:
    output = parse_tool(lines)
    if output.missing:
        return ServerApiValue(False, reason="python3 is not installed")
    values: dict[str, Any] = {"key": "read"}
    seen = False
    for line in output.lines:
        parts = line.split()
        if len(parts) < 2 or parts[0] != "server-api":
            continue
        seen = True
        kind, rest = parts[1], parts[2:]
        f = _fields(rest)
        if kind == "unavailable":
            return ServerApiValue(False, reason=" ".join(rest))
        if kind == "target":
            values["target"] = rest[0] if rest else ""
        elif kind == "health":
            values.update(
                health_status=int(f.get("status", "0")),
                health_s=float(f.get("seconds", "0")),
                health_body=f.get("body", ""),
            )
        elif kind == "completion":
            values.update(
                completion_status=int(f.get("status", "0")),
                completion_s=float(f.get("seconds", "0")),
                completion_tokens=int(f.get("tokens", "0")),
                completion_error=f.get("error", ""),
            )
        elif kind == "unauthorized":
            values["unauthorized_status"] = int(f.get("status", "0"))
        elif kind == "key":
            values["key"] = "none" if rest[:1] == ["none"] else "unreadable: " + " ".join(rest[1:])
    if not seen:
        return ServerApiValue(False, reason=f"the API probe printed nothing ({output.brief()})")
    return ServerApiValue(True, **values)


class ServerApi(LlmtuneFact[ServerApiValue]):
    """/health, a completion with the key and one without, against the recorded service."""

    # A first completion after a restart may wait for the model to load.
    timeout_s = 180.0
    stable = False

    def command(self, record: str = RECORD_PATH, wait_s: float = 0.0) -> str:
        script = resources.files("llmtune.facts").joinpath("probes/server_api.py").read_text()
        args = f"{shlex.quote(record)} {float(wait_s)}"
        return c_locale(tool("python3", f"python3 -c {shlex.quote(script)} {args}"))

    def process(self, output: list[str]) -> ServerApiValue:
        return parse_server_api(output)
