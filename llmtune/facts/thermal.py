"""Thermal facts: the kernel's thermal zones (CPU package, ACPI, PCH...) and their trip points."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmtune.facts.probe import LlmtuneFact, c_locale, parse_grep_h, read_files, sysroot

THERMAL_DIR = "/sys/class/thermal"

_ZONE_FILE = re.compile(r"/(thermal_zone\d+)/(type|temp|trip_point_(\d+)_(type|temp))$")


@dataclass(frozen=True)
class TripPoint:
    """A zone's trip point: ``type`` is active (fans), passive (throttling), hot or critical."""

    index: int
    type: str | None = None
    temp_c: float | None = None


@dataclass(frozen=True)
class ThermalZone:
    """Example: ``ThermalZone("thermal_zone6", "x86_pkg_temp", 48.0, (TripPoint(0, "passive",
    None), TripPoint(1, "passive", None)))``; ``temp_c`` is None when the sensor cannot be read
    (some return EIO or ENODATA, e.g. a Wi-Fi card that is down)."""

    name: str
    type: str | None = None
    temp_c: float | None = None
    trips: tuple[TripPoint, ...] = ()

    def throttle_trip(self) -> TripPoint | None:
        """The lowest passive/hot/critical trip with a real temperature (at or below 0 °C is how
        firmware marks a trip as unused)."""
        candidates = [
            t
            for t in self.trips
            if t.type in ("passive", "hot", "critical") and t.temp_c is not None and t.temp_c > 0
        ]
        return min(candidates, key=lambda t: t.temp_c or 0.0, default=None)


@dataclass(frozen=True)
class ThermalZonesValue:
    """Example: ``ThermalZonesValue(zones=(ThermalZone("thermal_zone0", "acpitz", 27.8), ...))``;
    ``zones=()`` where the host exposes none (VMs, containers without /sys/class/thermal)."""

    zones: tuple[ThermalZone, ...] = ()


def _millidegrees(text: str | None) -> float | None:
    try:
        return int((text or "").strip()) / 1000.0
    except ValueError:
        return None


def _zone_key(name: str) -> int:
    return int(name.removeprefix("thermal_zone"))


class ThermalZones(LlmtuneFact[ThermalZonesValue]):
    """Each /sys/class/thermal/thermal_zone*: type, temperature and trip points (°C)."""

    def command(self, root: str = "") -> str:
        zones = sysroot(root, THERMAL_DIR) + "/thermal_zone[0-9]*"
        files = [
            f"{zones}/type",
            f"{zones}/temp",
            f"{zones}/trip_point_[0-9]*_type",
            f"{zones}/trip_point_[0-9]*_temp",
        ]
        return c_locale(read_files(files))

    def process(self, output: list[str]) -> ThermalZonesValue:
        zones: dict[str, dict[str, str]] = {}
        trips: dict[str, dict[int, dict[str, str]]] = {}
        for path, lines in parse_grep_h(output).values.items():
            match = _ZONE_FILE.search(path)
            if not match or not lines:
                continue
            zone, name, trip, trip_field = match.groups()
            value = lines[0].strip()
            if trip is not None:
                trips.setdefault(zone, {}).setdefault(int(trip), {})[trip_field] = value
            else:
                zones.setdefault(zone, {})[name] = value
        result = []
        for zone in sorted(set(zones) | set(trips), key=_zone_key):
            files = zones.get(zone, {})
            result.append(
                ThermalZone(
                    name=zone,
                    type=files.get("type") or None,
                    temp_c=_millidegrees(files.get("temp")),
                    trips=tuple(
                        TripPoint(i, t.get("type") or None, _millidegrees(t.get("temp")))
                        for i, t in sorted(trips.get(zone, {}).items())
                    ),
                )
            )
        return ThermalZonesValue(tuple(result))
