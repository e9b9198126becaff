"""Capture files: every raw probe output of a doctor run, so it can be evaluated elsewhere.

A capture is a tar.gz holding ``manifest.json`` (schema, llmtune version, host, time, level, and
one entry per probe) and, per probe, ``probes/<Fact>.stdout`` / ``.stderr``. A user attaches it to
a bug report; ``llmtune doctor --replay`` evaluates it offline, and it becomes a test fixture.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmtune import __version__
from llmtune.doctor.collect import ProbeRecord

CAPTURE_SCHEMA = 1


class CaptureError(ValueError):
    pass


@dataclass(frozen=True)
class Capture:
    level: str
    hostname: str
    captured_at: str
    llmtune_version: str
    records: tuple[ProbeRecord, ...]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _text(lines: tuple[str, ...]) -> bytes:
    return ("\n".join(lines) + ("\n" if lines else "")).encode()


def write_capture(path: Path, capture: Capture) -> None:
    """Write atomically: a half-written capture never replaces a good one."""
    manifest = {
        "schema": CAPTURE_SCHEMA,
        "llmtune_version": capture.llmtune_version,
        "hostname": capture.hostname,
        "captured_at": capture.captured_at,
        "level": capture.level,
        "probes": [
            {
                "fact": r.fact,
                "command": r.command,
                "exit_status": r.exit_status,
                "duration_s": round(r.duration_s, 4),
                "stdout": f"probes/{r.fact}.stdout",
                "stderr": f"probes/{r.fact}.stderr",
            }
            for r in capture.records
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
            for r in capture.records:
                _add(tar, f"probes/{r.fact}.stdout", _text(r.stdout))
                _add(tar, f"probes/{r.fact}.stderr", _text(r.stderr))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_capture(path: Path) -> Capture:
    try:
        with tarfile.open(path, mode="r:gz") as tar:

            def read(name: str) -> str:
                member = tar.extractfile(name)
                if member is None:
                    raise CaptureError(f"{path}: {name} is not a file")
                return member.read().decode(errors="replace")

            manifest = json.loads(read("manifest.json"))
            if manifest.get("schema") != CAPTURE_SCHEMA:
                raise CaptureError(
                    f"{path}: capture schema {manifest.get('schema')!r}, expected {CAPTURE_SCHEMA}"
                )
            records = tuple(
                ProbeRecord(
                    fact=p["fact"],
                    command=p["command"],
                    stdout=tuple(read(p["stdout"]).splitlines()),
                    stderr=tuple(read(p["stderr"]).splitlines()),
                    exit_status=p["exit_status"],
                    duration_s=float(p["duration_s"]),
                )
                for p in manifest["probes"]
            )
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise CaptureError(f"{path}: not a readable llmtune capture ({exc})") from exc
    return Capture(
        level=manifest.get("level", "quick"),
        hostname=manifest.get("hostname", ""),
        captured_at=manifest.get("captured_at", ""),
        llmtune_version=manifest.get("llmtune_version", ""),
        records=records,
    )


def new_capture(level: str, hostname: str, records: tuple[ProbeRecord, ...]) -> Capture:
    return Capture(
        level=level,
        hostname=hostname,
        captured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        llmtune_version=__version__,
        records=records,
    )
