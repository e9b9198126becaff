"""MemoryModules (dmidecode -t memory) and MEM001 ram-rated-speed on real dmidecode outputs."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, HOSTS, read_fact, run_command

from llmtune.checks.memory import channel_count, ram_rated_speed, slot_labels
from llmtune.checks.registry import FactValues
from llmtune.facts.memory import (
    DmiStatus,
    MemoryModules,
    MemoryModulesValue,
    parse_memory_devices,
    populated_channels,
)
from llmtune.findings import Status
from llmtune.settings import HostSettings

PUBLIC = FIXTURES / "public"
RECORDED = FIXTURES / "recorded" / "memory"
AM5 = PUBLIC / "dmidecode-ddr5-am5-jedec-empty-slots" / "dmidecode-memory-excerpt.txt"
EPYC = PUBLIC / "dmidecode-server-epyc-8ch-3-populated" / "dmidecode-memory-excerpt.txt"
INTEL_XMP = PUBLIC / "dmidecode-ddr4-intel-xmp-on-configured-above-speed"
INTEL_XMP = INTEL_XMP / "dmidecode-memory-device.txt"
DDR3 = PUBLIC / "dmidecode-ddr3-server-configured-clock-speed-lower"


def stub_dmidecode(tmp_path: Path, recorded: Path, rc: int) -> str:
    """A ``dmidecode`` that prints a recorded real output and exits as the real one did."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stub = bindir / "dmidecode"
    stub.write_text(f"#!/bin/sh\ncat '{recorded}'\nexit {rc}\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return str(bindir)


def read_with_stub(tmp_path: Path, recorded: Path, rc: int = 0) -> MemoryModulesValue:
    """The fact's real command, finding the stub first on PATH."""
    bindir = stub_dmidecode(tmp_path, recorded, rc)
    command = f'PATH="{bindir}:$PATH"; export PATH; ' + MemoryModules().command()
    return MemoryModules().process(run_command(command))


def _check(value: MemoryModulesValue, **settings: object):
    return ram_rated_speed(FactValues({MemoryModules: value}), HostSettings(**settings))


# --- the fact ----------------------------------------------------------------------------------


def test_am5_desktop_lists_empty_and_populated_slots(tmp_path: Path) -> None:
    value = read_with_stub(tmp_path, AM5)
    assert value.status == DmiStatus.OK and value.version == "3.3" and value.uid is not None
    assert [(m.locator, m.bank_locator, m.populated) for m in value.modules] == [
        ("DIMM 0", "P0 CHANNEL A", False),
        ("DIMM 1", "P0 CHANNEL A", True),
        ("DIMM 0", "P0 CHANNEL B", False),
        ("DIMM 1", "P0 CHANNEL B", True),
    ]
    dimm = value.populated[0]
    assert (dimm.size_mib, dimm.type, dimm.speed_mts, dimm.configured_mts) == (
        32768,
        "DDR5",
        4800,
        4800,
    )
    assert (dimm.manufacturer, dimm.part_number) == ("Corsair", "CMH64GX5M2B5600Z36")
    empty = value.modules[0]
    assert (empty.size, empty.speed, empty.speed_mts, empty.configured_mts) == (
        "No Module Installed",
        "Unknown",
        None,
        None,
    )


def test_epyc_server_ignores_other_records_and_volatile_size_quirk(tmp_path: Path) -> None:
    value = read_with_stub(tmp_path, EPYC)
    assert len(value.modules) == 8
    assert [m.locator for m in value.populated] == ["DIMMC1", "DIMMG1", "DIMMH1"]
    # "Volatile Size: 64 kB" is a firmware quirk: the module size is "Size: 64 GB".
    assert {m.size_mib for m in value.populated} == {65536}
    assert {m.part_number for m in value.populated} == {"M393A8G40AB2-CWE"}
    assert all(m.manufacturer == "NO DIMM" for m in value.modules if not m.populated)


def test_old_dmidecode_field_names_and_units() -> None:
    # dmidecode < 3.0: "Configured Clock Speed" in "MHz" (the number is MT/s); trailing spaces.
    hp = parse_memory_devices((DDR3 / "dmidecode-t-17-hp-proliant.txt").read_text().splitlines())
    assert [(m.locator, m.speed_mts, m.configured_mts, m.part_number) for m in hp] == [
        ("PROC  2 DIMM 12", 1333, 1067, "647647-071")
    ]
    # A short record (SMBIOS 2.7) ending with its configured speed and a blank line.
    hynix = (DDR3 / "dmidecode-t-17-hynix-rdimm.txt").read_text().splitlines()
    assert [(m.locator, m.size_mib, m.configured_mts) for m in parse_memory_devices(hynix)] == [
        ("DIMM_A2", 4096, 1067)
    ]
    # dmidecode 3.1/3.2: unit MT/s, field still "Configured Clock Speed".
    lines = (DDR3 / "dmidecode-type-17-hp-dl-mt-s-transitional.txt").read_text().splitlines()
    assert [(m.speed, m.configured_mts) for m in parse_memory_devices(lines)] == [
        ("1333 MT/s", 1333)
    ]


def test_no_dmi_table_on_this_kind_of_vm(tmp_path: Path) -> None:
    # Both recordings (this project's VM and tests/fixtures/hosts) are dmidecode's real output.
    for recorded in (
        RECORDED / "dmidecode-t-memory-root.txt",
        HOSTS / "debian12-vm-nogpu" / "dmidecode-t-memory.txt",
    ):
        value = read_with_stub(tmp_path, recorded, rc=1)
        assert value.status == DmiStatus.NO_DMI, recorded
        assert value.reason == "/dev/mem: No such file or directory"
        assert value.modules == ()
    # The fact's real command as root on this project's VM, recorded whole.
    lines = (RECORDED / "memorymodules-fact-output-root-vm.txt").read_text().splitlines()
    value = MemoryModules().process(lines)
    assert (value.status, value.uid, value.version) == (DmiStatus.NO_DMI, 0, "3.4")


def test_permission_denied_for_a_non_root_user() -> None:
    # The fact's real command, run as uid 65534 where the SMBIOS table is root-only.
    lines = (RECORDED / "memorymodules-fact-output-nonroot.txt").read_text().splitlines()
    value = MemoryModules().process(lines)
    assert value.status == DmiStatus.NOT_ROOT and value.uid == 65534
    assert "smbios_entry_point: Permission denied" in value.reason


def test_dmidecode_not_installed() -> None:
    # The real command, with the tool looked up under a name no host has.
    command = MemoryModules().command().replace("command -v dmidecode ", "command -v llmtune-none ")
    value = MemoryModules().process(run_command(command))
    assert value.status == DmiStatus.MISSING and value.modules == ()


def test_real_command_on_this_vm_is_quick_and_reports_no_table() -> None:
    start = time.monotonic()
    value = read_fact(MemoryModules)
    assert time.monotonic() - start < 0.5
    # This VM has no DMI table; where dmidecode is not installed the value says that instead.
    assert value.status in (DmiStatus.NO_DMI, DmiStatus.MISSING)
    assert _check(value).status == Status.SKIP


@pytest.mark.parametrize("lines", [[], ["garbage", "\tSize: 4 GB"], ["@@llmtune section uid"]])
def test_parser_never_raises(lines: list[str]) -> None:
    value = MemoryModules().process(lines)
    assert value.status == DmiStatus.FAILED and value.modules == ()


# --- channels (for MEM002) ----------------------------------------------------------------------


def test_channels_from_slot_names() -> None:
    def channels(path: Path) -> int | None:
        return populated_channels(parse_memory_devices(path.read_text().splitlines()))

    assert channels(AM5) == 2  # P0 CHANNEL A / B
    assert channels(EPYC) == 3  # P0_Node0_Channel2/6/7_Dimm0
    assert channels(INTEL_XMP) == 1  # Controller0-ChannelA-DIMM0
    assert channels(DDR3 / "dmidecode-t-17-hp-proliant.txt") is None  # PROC  2 DIMM 12


def test_channel_count_sources() -> None:
    epyc = parse_memory_devices(EPYC.read_text().splitlines())
    populated = tuple(m for m in epyc if m.populated)
    assert channel_count(populated, HostSettings()) == (3, "from the slot names")
    assert channel_count(populated, HostSettings(memory_channels=8)) == (
        8,
        "memory_channels setting",
    )
    hp = parse_memory_devices((DDR3 / "dmidecode-t-17-hp-proliant.txt").read_text().splitlines())
    count, how = channel_count(hp, HostSettings())
    assert count == 1 and "set memory_channels" in how


def test_slot_labels_add_the_bank_where_locators_repeat() -> None:
    am5 = tuple(m for m in parse_memory_devices(AM5.read_text().splitlines()) if m.populated)
    assert list(slot_labels(am5).values()) == ["P0 CHANNEL A DIMM 1", "P0 CHANNEL B DIMM 1"]


# --- MEM001 -------------------------------------------------------------------------------------


def test_mem001_pass_when_configured_matches_smbios_speed(tmp_path: Path) -> None:
    outcome = _check(read_with_stub(tmp_path, AM5))
    assert outcome.status == Status.PASS
    assert outcome.observed == "2 module(s) configured at 4800 MT/s"
    # SMBIOS Speed is often JEDEC: the pass says how to check against the kit's rating.
    assert "ram_rated_mts" in outcome.expected
    assert any("CMH64GX5M2B5600Z36" in line for line in outcome.details)


def test_mem001_fail_when_kit_rating_is_set_and_expo_is_off(tmp_path: Path) -> None:
    # The AM5 kit is sold as DDR5-5600 (part number ...5600...) but runs 4800 MT/s.
    outcome = _check(read_with_stub(tmp_path, AM5), ram_rated_mts=5600)
    assert outcome.status == Status.FAIL
    assert outcome.fix == (
        "Enable XMP (Intel) / EXPO (AMD) in the BIOS memory settings; "
        "P0 CHANNEL A DIMM 1 runs 4800 MT/s, rated 5600 MT/s"
    )
    assert outcome.expected == "≥ 5600 MT/s (ram_rated_mts)"
    assert "slow: P0 CHANNEL B DIMM 1 runs 4800 MT/s, rated 5600 MT/s" in outcome.details


def test_mem001_fail_when_configured_below_smbios_speed() -> None:
    hp = parse_memory_devices((DDR3 / "dmidecode-t-17-hp-proliant.txt").read_text().splitlines())
    outcome = _check(MemoryModulesValue(DmiStatus.OK, modules=hp))
    assert outcome.status == Status.FAIL
    assert outcome.fix.endswith("PROC  2 DIMM 12 runs 1067 MT/s, rated 1333 MT/s")


def test_mem001_pass_with_xmp_on_above_jedec_speed(tmp_path: Path) -> None:
    value = read_with_stub(tmp_path, INTEL_XMP)
    assert _check(value).status == Status.PASS  # 4267 configured > 2400 SMBIOS speed
    # A DDR4-4266 kit reported as 4267 MT/s is at its rating; 4400 would not be.
    assert _check(value, ram_rated_mts=4266).status == Status.PASS
    assert _check(value, ram_rated_mts=4400).status == Status.FAIL


def test_mem001_skips_say_why_and_how(tmp_path: Path) -> None:
    no_dmi = read_with_stub(tmp_path, RECORDED / "dmidecode-t-memory-root.txt", rc=1)
    assert _check(no_dmi).status == Status.SKIP
    assert "no SMBIOS/DMI table" in _check(no_dmi).observed

    nonroot = MemoryModules().process(
        (RECORDED / "memorymodules-fact-output-nonroot.txt").read_text().splitlines()
    )
    outcome = _check(nonroot)
    assert outcome.status == Status.SKIP and "sudo llmtune doctor" in outcome.observed

    missing = _check(MemoryModulesValue(DmiStatus.MISSING, "dmidecode is not installed"))
    assert missing.status == Status.SKIP and "apt install dmidecode" in missing.observed

    am5 = parse_memory_devices(AM5.read_text().splitlines())
    empty_only = MemoryModulesValue(DmiStatus.OK, modules=tuple(m for m in am5 if not m.populated))
    assert _check(empty_only).status == Status.SKIP
