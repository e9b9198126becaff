"""ThermalZones and THM001.

Real data: node_exporter's sysfs fixture (one zone, with the /sys/class/thermal symlink), a
laptop's zone types (no temperatures), and the two recorded VMs (no zones). No real recording of
a zone with trip points was found: the warn and fail cases are built from dataclass values.
"""

from __future__ import annotations

import glob
from pathlib import Path

from conftest import read_fact, run_command
from test_cpu_facts import PUBLIC, RECORDED, ttar_tree

from llmtune.checks.registry import CHECKS, FactValues
from llmtune.checks.thermal import thermal_zones
from llmtune.facts.thermal import ThermalZone, ThermalZones, ThermalZonesValue, TripPoint
from llmtune.findings import Status
from llmtune.settings import HostSettings

SETTINGS = HostSettings()


def _check(value: ThermalZonesValue, settings: HostSettings = SETTINGS):
    return thermal_zones(FactValues({ThermalZones: value}), settings)


def test_fact_reads_node_exporter_zone_through_symlink(tmp_path: Path) -> None:
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-thermal.ttar", tmp_path)
    value = read_fact(ThermalZones, root=str(root))
    assert value == ThermalZonesValue((ThermalZone("thermal_zone0", "cpu-thermal", 12.376),))


def test_fact_reads_public_zone_types_without_temps(tree) -> None:
    # `tail .../thermal_zone*/type` of a Cannon Lake laptop: `==> PATH <==` headers, type lines.
    text = PUBLIC / "thermal-zone-types-laptop-cannonlake" / "tail-thermal_zone-type.txt"
    files: dict[str, str] = {}
    path = ""
    for line in text.read_text().splitlines():
        if line.startswith("==> "):
            path = line.removeprefix("==> ").removesuffix(" <==")
            # /sys/class/thermal/thermal_zoneN links to /sys/devices/virtual/thermal/thermal_zoneN.
            path = path.replace("/sys/devices/virtual/thermal/", "/sys/class/thermal/")
        elif line:
            files[path] = line + "\n"
    value = read_fact(ThermalZones, root=tree(files))
    assert [(z.name, z.type) for z in value.zones] == [
        ("thermal_zone0", "acpitz"),
        ("thermal_zone1", "INT3400 Thermal"),
        ("thermal_zone2", "SEN1"),
        ("thermal_zone3", "pch_cannonlake"),
        ("thermal_zone4", "B0D4"),
        ("thermal_zone5", "iwlwifi_1"),
        ("thermal_zone6", "x86_pkg_temp"),
    ]
    assert all(z.temp_c is None for z in value.zones)
    outcome = _check(value)
    assert outcome.status == Status.SKIP
    assert outcome.observed == "none of the 7 thermal zones has a readable temperature"


def test_recorded_vms_have_no_zones() -> None:
    for host in ("h100-ubuntu2404-vm", "debian12-vm/idle"):
        lines = (RECORDED / host / "fact-ThermalZones.txt").read_text().splitlines()
        assert ThermalZones().process(lines) == ThermalZonesValue()
    outcome = _check(ThermalZonesValue())
    assert outcome.status == Status.SKIP and "no thermal zones" in outcome.observed


def test_real_command_on_this_machine() -> None:
    value = ThermalZones().process(run_command(ThermalZones().command()))
    assert bool(value.zones) == bool(glob.glob("/sys/class/thermal/thermal_zone*"))


def test_parser_garbage_and_trip_points() -> None:
    assert ThermalZones().process([]) == ThermalZonesValue()
    value = ThermalZones().process(
        [
            "junk",
            "/r/sys/class/thermal/thermal_zone10/temp:x",
            "/r/sys/class/thermal/thermal_zone2/trip_point_1_temp:100000",
            "/r/sys/class/thermal/thermal_zone2/trip_point_1_type:passive",
            "/r/sys/class/thermal/thermal_zone2/trip_point_0_temp:0",
            "/r/sys/class/thermal/thermal_zone2/trip_point_0_type:critical",
        ]
    )
    # Sorted by zone number (2 before 10); a 0 °C trip is firmware's "unused" and is ignored.
    assert [z.name for z in value.zones] == ["thermal_zone2", "thermal_zone10"]
    assert value.zones[0].throttle_trip() == TripPoint(1, "passive", 100.0)
    assert value.zones[1].temp_c is None


def _zones(pkg_c: float) -> ThermalZonesValue:
    return ThermalZonesValue(
        (
            ThermalZone("thermal_zone0", "acpitz", 27.8, (TripPoint(0, "critical", 119.0),)),
            ThermalZone(
                "thermal_zone6",
                "x86_pkg_temp",
                pkg_c,
                (TripPoint(0, "passive", 0.0), TripPoint(1, "passive", 100.0)),
            ),
            ThermalZone("thermal_zone5", "iwlwifi_1", None),
        )
    )


def test_check_passes_below_threshold_on_node_exporter_zone(tmp_path: Path) -> None:
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-thermal.ttar", tmp_path)
    outcome = _check(read_fact(ThermalZones, root=str(root)))
    assert outcome.status == Status.PASS
    assert outcome.observed == "hottest thermal_zone0 cpu-thermal: 12.4 °C (1 zones)"


def test_check_warns_at_threshold_and_fails_at_trip() -> None:
    assert CHECKS["THM001"].name == "thermal-zones"
    assert _check(_zones(84.9)).status == Status.PASS
    warn = _check(_zones(85.0))
    assert warn.status == Status.WARN
    assert (
        warn.observed
        == "at or above 85 °C: thermal_zone6 x86_pkg_temp: 85.0 °C, passive trip 100 °C"
    )
    assert "thermal_zone5 iwlwifi_1: unreadable" in warn.details
    fail = _check(_zones(100.0))
    assert fail.status == Status.FAIL
    assert fail.observed.startswith("at or above a trip point: thermal_zone6 x86_pkg_temp")
    assert "throttling" in fail.fix
    # A lower user threshold moves only the warning.
    assert _check(_zones(70.0), HostSettings(thermal_warn_c=65.0)).status == Status.WARN
