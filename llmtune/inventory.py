"""Ansible-style settings for pyinfra inventories: defaults < group_vars < host_vars, in YAML.

An inventory file (``inventories/home.py``) declares its groups with :func:`group`; each host's
settings are merged from ``group_vars/all.yaml``, ``group_vars/<group>.yaml`` and
``host_vars/<host>.yaml`` beside it, validated, and attached to the host as pyinfra host data
(``llmtune_settings``). Validation happens while pyinfra loads the inventory, before it connects
to anything: a bad file, key or value prints the file and the key and exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmtune.compat import ssh_eof
from llmtune.settings import HostSettings, SettingsError, read_mapping, settings_from_mapping

# Runs that use llmtune inventories: a host lost mid-run fails alone (see the module).
ssh_eof.install()

HostEntry = str | tuple[str, dict[str, Any]]
SETTINGS_KEY = "llmtune_settings"
SOURCES_KEY = "llmtune_settings_files"


def _host_file_name(name: str) -> str:
    # "@local" (pyinfra's connector syntax) reads host_vars/local.yaml.
    return name.lstrip("@").replace("/", "_")


def layer_files(inventory_dir: Path, group_name: str, host_name: str) -> list[Path]:
    """The settings files of one host, lowest priority first (those that exist)."""
    candidates = [
        inventory_dir / "group_vars" / "all.yaml",
        inventory_dir / "group_vars" / f"{group_name}.yaml",
        inventory_dir / "host_vars" / f"{_host_file_name(host_name)}.yaml",
    ]
    return [path for path in candidates if path.is_file()]


def merged_settings(files: Iterable[Path]) -> tuple[dict[str, Any], HostSettings]:
    """Merge the layers key by key (later wins) after validating each file on its own."""
    merged: dict[str, Any] = {}
    names = []
    for path in files:
        merged.update(read_mapping(path))
        names.append(str(path))
    return merged, settings_from_mapping(merged, " < ".join(names) or "defaults")


def group(inventory_file: str, group_name: str, hosts: Iterable[HostEntry]) -> list[HostEntry]:
    """Hosts of one inventory group, each with its validated settings as host data.

    Use in an inventory file: ``gpu_hosts = group(__file__, "gpu_hosts", ["box1", "box2"])``.
    The variable name is pyinfra's group name: pass the same name here.
    """
    inventory_dir = Path(inventory_file).resolve().parent
    out: list[HostEntry] = []
    try:
        for entry in hosts:
            name, data = (entry, {}) if isinstance(entry, str) else entry
            files = layer_files(inventory_dir, group_name, name)
            merged, _ = merged_settings(files)
            out.append((name, {**data, SETTINGS_KEY: merged, SOURCES_KEY: [str(f) for f in files]}))
    except SettingsError as exc:
        # Before pyinfra contacts any host: a clear message and exit status 2, no traceback.
        print(f"llmtune: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    return out


def settings_of(host_data: Mapping[str, Any] | Any) -> HostSettings:
    """The validated settings attached to a pyinfra host (defaults for a plain inventory)."""
    get = host_data.get if isinstance(host_data, Mapping) else getattr(host_data, "get", None)
    raw = get(SETTINGS_KEY) if get else None
    return settings_from_mapping(raw or {}, "host data")
