"""Headless: boot to multi-user.target with the display manager disabled, so no compositor holds
VRAM or RAM (seed 004 §7.4 Headless Mode). The running session is switched only when
``headless_switch_now: true``. Verified by SYS001 (and GPU002 for VRAM).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from llmtune.facts.systemd import DISPLAY_MANAGER_UNITS, SystemdState
from llmtune.inventory import settings_of
from llmtune.ops.entry import run_if_deploy_file
from llmtune.ops.fail import fail_host
from llmtune.ops.original import record_original

HEADLESS_TARGET = "multi-user.target"


@deploy("llmtune headless")
def headless() -> None:
    settings = settings_of(host.data)
    if not settings.headless:
        host.noop("headless: false in settings")
        return
    state = host.get_fact(SystemdState)
    if not state.running:
        fail_host("Headless needs systemd", f"systemd is not running here ({state.reason})")
        return
    managers = [state.unit(name) for name in DISPLAY_MANAGER_UNITS[1:]]
    enabled = sorted({u.id for u in managers if u.enabled and u.id})
    active = sorted({u.id for u in managers if u.active and u.id})
    record_original(
        "headless",
        {"default_target": state.default_target, "enabled_dms": enabled, "active_dms": active},
    )
    if state.default_target != HEADLESS_TARGET:
        server.shell(
            name=f"Boot to {HEADLESS_TARGET}",
            commands=[f"systemctl set-default {HEADLESS_TARGET}"],
        )
    if enabled:
        server.shell(
            name="Disable the display manager at boot",
            commands=[f"systemctl disable {' '.join(enabled)}"],
        )
    if settings.headless_switch_now and active:
        server.shell(
            name=f"Switch the running system to {HEADLESS_TARGET} now",
            commands=[f"systemctl isolate {HEADLESS_TARGET}"],
        )


run_if_deploy_file(__file__, headless)
