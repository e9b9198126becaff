"""systemd facts: is systemd the running manager, the default target, the units llmtune cares about.

One ``systemctl show`` reads every unit of interest at once; on a host whose PID 1 is not systemd
it fails ("System has not been booted with systemd as init system (PID 1). Can't operate.") while
``systemctl get-default`` still answers from the unit files and ``is-system-running`` says
``offline``: all three are kept so the checks can say which case they are in.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from llmtune.facts.probe import (
    LlmtuneFact,
    c_locale,
    join,
    parse_tool,
    section,
    split_sections,
    tool,
)

# Units the power and system checks read. display-manager.service is the alias the distro's
# display manager installs (Debian: a symlink to e.g. lightdm.service); its Id names the real one.
UNITS_OF_INTEREST: tuple[str, ...] = (
    "power-profiles-daemon",
    "tuned",
    "tuned-ppd",
    "display-manager",
    "gdm",
    "gdm3",
    "sddm",
    "lightdm",
)
DISPLAY_MANAGER_UNITS: tuple[str, ...] = ("display-manager", "gdm", "gdm3", "sddm", "lightdm")
SHOW_PROPERTIES = "Id,LoadState,ActiveState,SubState,UnitFileState"

# ActiveState values meaning the unit is (or is about to be, or still is) running.
_RUNNING_STATES = frozenset({"active", "activating", "reloading", "deactivating", "refreshing"})
# UnitFileState values meaning the unit starts at boot.
_ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "linked", "linked-runtime"})


@dataclass(frozen=True)
class UnitState:
    """One unit as ``systemctl show`` reports it; ``name`` is the name asked for.

    Example (Debian 12, after installing tuned: power-profiles-daemon stopped but still enabled)::

        UnitState(name="power-profiles-daemon", id="power-profiles-daemon.service",
                  load_state="loaded", active_state="inactive", sub_state="dead",
                  unit_file_state="enabled")
    """

    name: str
    id: str = ""
    load_state: str = ""
    active_state: str = ""
    sub_state: str = ""
    unit_file_state: str = ""

    @property
    def installed(self) -> bool:
        # A masked unit reads LoadState=masked even when its unit file is gone: still "present".
        return self.load_state not in ("", "not-found")

    @property
    def masked(self) -> bool:
        return self.load_state == "masked" or self.unit_file_state.startswith("masked")

    @property
    def active(self) -> bool:
        return self.active_state in _RUNNING_STATES

    @property
    def enabled(self) -> bool:
        return self.unit_file_state in _ENABLED_STATES

    def describe(self) -> str:
        """Short state for observed strings: ``loaded, inactive (dead), enabled``."""
        if not self.installed:
            return "not installed"
        state = f"{self.load_state}, {self.active_state} ({self.sub_state})"
        return f"{state}, {self.unit_file_state}" if self.unit_file_state else state


@dataclass(frozen=True)
class SystemdStateValue:
    """Example (the Debian 12 nspawn host with tuned and a masked power-profiles-daemon)::

        SystemdStateValue(available=True, running=True, reason="",
                          default_target="multi-user.target", system_state="running",
                          units=(UnitState("power-profiles-daemon", "power-profiles-daemon.service",
                                           "masked", "inactive", "dead", "masked"), ...))

    ``available`` is False when systemctl is missing; ``running`` is True only when systemd is
    the service manager that answered (``reason`` says why not otherwise).
    """

    available: bool = False
    running: bool = False
    reason: str = ""
    default_target: str = ""
    system_state: str = ""
    units: tuple[UnitState, ...] = ()

    def unit(self, name: str) -> UnitState:
        """The unit asked for as ``name`` (without ``.service``); an unknown one if not read."""
        base = name.removesuffix(".service")
        for unit in self.units:
            if unit.name == base:
                return unit
        return UnitState(name=base)

    def active_display_managers(self) -> tuple[str, ...]:
        """Real unit names (Ids) of running display managers, the alias resolved, no repeats."""
        names: list[str] = []
        for name in DISPLAY_MANAGER_UNITS:
            unit = self.unit(name)
            if unit.active and unit.id and unit.id not in names:
                names.append(unit.id)
        return tuple(names)

    def display_manager_unit(self) -> str:
        """The real unit behind display-manager.service, else the first installed DM, else ''."""
        alias = self.unit("display-manager")
        if alias.installed and alias.id:
            return alias.id
        for name in DISPLAY_MANAGER_UNITS[1:]:
            unit = self.unit(name)
            if unit.installed and not unit.masked:
                return unit.id or f"{name}.service"
        return ""


def parse_show(lines: Sequence[str], names: Sequence[str]) -> tuple[UnitState, ...]:
    """Parse ``systemctl show --property=... U1 U2 ...``: one block per unit, in argument order."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep and key.isalnum():
            # A key seen again starts the next unit too, should blank lines be lost on the way.
            if key in current:
                blocks.append(current)
                current = {}
            current[key] = value.strip()
    if current:
        blocks.append(current)
    if not blocks or not all("Id" in block or "LoadState" in block for block in blocks):
        return ()
    return tuple(
        UnitState(
            name=name,
            id=block.get("Id", ""),
            load_state=block.get("LoadState", ""),
            active_state=block.get("ActiveState", ""),
            sub_state=block.get("SubState", ""),
            unit_file_state=block.get("UnitFileState", ""),
        )
        for name, block in zip(names, blocks, strict=False)
    )


class SystemdState(LlmtuneFact[SystemdStateValue]):
    """systemd as the service manager: default target, system state, units of interest."""

    def command(self) -> str:
        units = " ".join(shlex.quote(name) for name in UNITS_OF_INTEREST)
        return c_locale(
            join(
                section(
                    "show",
                    tool("systemctl", f"systemctl show --property={SHOW_PROPERTIES} {units}"),
                ),
                section("get-default", tool("systemctl", "systemctl get-default")),
                section("is-system-running", tool("systemctl", "systemctl is-system-running")),
            )
        )

    def process(self, output: list[str]) -> SystemdStateValue:
        parts = split_sections(output)
        show = parse_tool(parts.get("show", []))
        default = parse_tool(parts.get("get-default", []))
        state = parse_tool(parts.get("is-system-running", []))
        if "show" not in parts:
            return SystemdStateValue(reason="no output from the systemd probe")
        if show.missing:
            return SystemdStateValue(reason="systemctl is not installed")
        # is-system-running exits non-zero for "degraded", "starting"... yet its word is the
        # answer; "offline" is what it prints when systemd is not the running manager.
        system_state = next((line.strip() for line in state.lines if line.strip()), "")
        units = parse_show(show.lines, UNITS_OF_INTEREST) if show.ok else ()
        running = bool(units) and system_state not in ("", "offline", "unknown")
        reason = ""
        if not running:
            reason = f"systemctl show: {show.brief()}" if not show.ok else f"state {system_state!r}"
        default_target = ""
        if default.ok:
            default_target = next((line.strip() for line in default.lines if line.strip()), "")
        return SystemdStateValue(
            available=True,
            running=running,
            reason=reason,
            default_target=default_target,
            system_state=system_state,
            units=units,
        )
