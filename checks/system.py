"""Checks of category system: headless operation (no display manager, no compositor in VRAM)."""

from __future__ import annotations

from llmtune.checks.applies import systemd_skip
from llmtune.checks.display import is_display_process
from llmtune.checks.registry import FactUnavailable, FactValues, check
from llmtune.facts.gpu import GpuProcess, GpuProcesses, GpuProcessesValue
from llmtune.facts.host import HostInfo
from llmtune.facts.systemd import DISPLAY_MANAGER_UNITS, SystemdState
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

HEADLESS_TARGET = "multi-user.target"
HEADLESS_EXPECTED = f"default target {HEADLESS_TARGET}, no display manager, no compositor in VRAM"


def _describe(process: GpuProcess) -> str:
    used = f"{process.used_mib} MiB" if process.used_mib is not None else "N/A"
    gpu = f"GPU{process.gpu}" if process.gpu is not None else "GPU?"
    return f"{gpu} pid {process.pid} {process.type} {process.name} {used}"


def _gpu_processes(facts: FactValues) -> GpuProcessesValue | None:
    """The GPU process list, or None where it cannot be had (no NVIDIA GPU, not collected)."""
    try:
        value = facts[GpuProcesses]
    except FactUnavailable:
        return None
    return value if value.available else None


@check(
    id="SYS001",
    name="headless",
    title="Headless: no display manager or compositor",
    category="system",
    severity=Severity.MEDIUM,
    source="seed 004 §7.4 (Headless Mode), §2 #15",
    facts=(HostInfo, SystemdState, GpuProcesses),
)
def headless(facts: FactValues, settings: HostSettings) -> Outcome:
    if not settings.headless:
        return skipped("headless: false in the settings (a desktop that also serves models)")
    systemd = facts[SystemdState]
    skip = systemd_skip(facts[HostInfo], systemd, "no targets to check")
    if skip:
        return skip

    target = systemd.default_target or "unknown"
    active_dms = systemd.active_display_managers()
    dm_unit = systemd.display_manager_unit()
    dm_enabled = any(
        systemd.unit(name).enabled or (name == "display-manager" and systemd.unit(name).installed)
        for name in DISPLAY_MANAGER_UNITS
    )
    gpu = _gpu_processes(facts)
    shown = [p for p in gpu.processes if is_display_process(p)] if gpu else []
    details = tuple(_describe(p) for p in shown)

    observed_parts = [f"default target {target}"]
    if active_dms:
        observed_parts.append(f"display manager running: {', '.join(active_dms)}")
    elif dm_unit:
        observed_parts.append(f"display manager {dm_unit} {'enabled' if dm_enabled else 'off'}")
    if shown:
        mib = sum(p.used_mib or 0 for p in shown)
        observed_parts.append(f"{len(shown)} display process(es) hold {mib} MiB VRAM")
    observed = "; ".join(observed_parts)

    # `systemctl disable --now display-manager` removes the alias symlink first and then cannot
    # stop it ("Unit display-manager.service not loaded", exit 5, the DM keeps running; recorded
    # on Debian 12): name the real unit.
    stop_dm = f" && sudo systemctl disable --now {dm_unit}" if dm_unit else ""
    full_fix = (
        f"sudo systemctl set-default {HEADLESS_TARGET}{stop_dm}"
        f" && sudo systemctl isolate {HEADLESS_TARGET}"
    )
    graphical_default = target != HEADLESS_TARGET
    if active_dms or shown or (graphical_default and dm_enabled):
        return failed(observed, HEADLESS_EXPECTED, full_fix, details)
    if graphical_default:
        # Nothing graphical is installed to start, but the graphical target still pulls in
        # units wanted by it (tuned-ppd is WantedBy=graphical.target).
        return warned(observed, HEADLESS_EXPECTED, f"sudo systemctl set-default {HEADLESS_TARGET}")
    if gpu is None:
        observed += " (no GPU process list)"
    return passed(observed, HEADLESS_EXPECTED)
