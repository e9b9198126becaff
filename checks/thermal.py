"""Checks of category thermal: the kernel's thermal zones against their trip points."""

from __future__ import annotations

from llmtune.checks.registry import FactValues, check
from llmtune.facts.thermal import ThermalZone, ThermalZones
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

WATCH = "watch -n1 'grep -H . /sys/class/thermal/thermal_zone*/temp'"


def _line(zone: ThermalZone) -> str:
    trip = zone.throttle_trip()
    limit = f", {trip.type} trip {trip.temp_c:.0f} °C" if trip and trip.temp_c else ""
    temp = "unreadable" if zone.temp_c is None else f"{zone.temp_c:.1f} °C"
    return f"{zone.name} {zone.type or '?'}: {temp}{limit}"


@check(
    id="THM001",
    name="thermal-zones",
    title="Thermal zones below throttling temperatures",
    category="thermal",
    severity=Severity.HIGH,
    source="seed 004 §22 #6 (Thermal - sustained load under throttle temperature)",
    facts=(ThermalZones,),
)
def thermal_zones(facts: FactValues, settings: HostSettings) -> Outcome:
    zones = facts[ThermalZones].zones
    if not zones:
        return skipped("this host exposes no thermal zones (/sys/class/thermal): VMs have none")
    readable = [z for z in zones if z.temp_c is not None]
    if not readable:
        return skipped(f"none of the {len(zones)} thermal zones has a readable temperature")
    details = tuple(_line(z) for z in zones)
    hottest = max(readable, key=lambda z: z.temp_c or 0.0)
    warn_c = settings.thermal_warn_c
    expected = f"below {warn_c:.0f} °C and below each zone's passive/hot/critical trip point"
    at_trip = [
        z
        for z in readable
        if (trip := z.throttle_trip()) is not None
        and trip.temp_c is not None
        and (z.temp_c or 0.0) >= trip.temp_c
    ]
    if at_trip:
        return failed(
            "at or above a trip point: " + "; ".join(_line(z) for z in at_trip),
            expected,
            "the kernel is throttling: improve cooling (fans, heatsink contact, airflow, dust) or "
            f"lower the sustained power limit in the BIOS; watch it with: {WATCH}",
            details,
        )
    hot = [z for z in readable if (z.temp_c or 0.0) >= warn_c]
    if hot:
        return warned(
            f"at or above {warn_c:.0f} °C: " + "; ".join(_line(z) for z in hot),
            expected,
            f"check cooling before long runs (fans, heatsink contact, airflow); watch: {WATCH}",
            details,
        )
    return passed(f"hottest {_line(hottest)} ({len(readable)} zones)", expected, details)
