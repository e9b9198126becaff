"""MemoryBandwidth (python3 ctypes.memmove probe) and MEM002 memory-bandwidth."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from conftest import FIXTURES, read_fact, run_command

from llmtune.checks.memory import memory_bandwidth
from llmtune.checks.registry import FactValues
from llmtune.doctor.remote import collect_pyinfra, connect
from llmtune.facts.memory import (
    DmiStatus,
    MemoryBandwidth,
    MemoryBandwidthValue,
    MemoryModules,
    MemoryModulesValue,
    parse_memory_devices,
    probe_script,
)
from llmtune.facts.probe import tool
from llmtune.findings import Outcome, Status
from llmtune.settings import HostSettings

RECORDED = FIXTURES / "recorded" / "memory"
PUBLIC = FIXTURES / "public"
AM5 = PUBLIC / "dmidecode-ddr5-am5-jedec-empty-slots" / "dmidecode-memory-excerpt.txt"
EPYC = PUBLIC / "dmidecode-server-epyc-8ch-3-populated" / "dmidecode-memory-excerpt.txt"


@pytest.fixture(scope="module")
def measured_here() -> MemoryBandwidthValue:
    """The probe, run for real on this machine (about 2-5 s)."""
    return read_fact(MemoryBandwidth)


def recorded_h100() -> MemoryBandwidthValue:
    """The probe's real output on the 16-vCPU H100 VM, through the fact's own tool wrapper."""
    path = RECORDED / "mem-bandwidth-probe-h100-vm-16cpu.txt"
    return MemoryBandwidth().process(run_command(tool("python3", f"cat {shlex.quote(str(path))}")))


def modules(path: Path) -> MemoryModulesValue:
    devices = parse_memory_devices(path.read_text().splitlines())
    return MemoryModulesValue(DmiStatus.OK, modules=devices)


def _check(
    bandwidth: MemoryBandwidthValue, mods: MemoryModulesValue, **settings: object
) -> Outcome:
    facts = FactValues({MemoryBandwidth: bandwidth, MemoryModules: mods})
    return memory_bandwidth(facts, HostSettings(**settings))


# --- the fact ----------------------------------------------------------------------------------


def test_probe_runs_for_real_here(measured_here: MemoryBandwidthValue) -> None:
    assert measured_here.available, measured_here.reason
    assert measured_here.threads == len(os.sched_getaffinity(0))
    assert 1.0 <= measured_here.seconds < 10
    # At least 256 MiB per side (2x the last-level cache where that is larger), unless the
    # host's available memory capped it.
    assert measured_here.buffer_bytes >= 256 * 2**20
    assert measured_here.gb_per_s > 1


def test_command_ships_the_probe_text() -> None:
    command = MemoryBandwidth().command()
    assert "ctypes.memmove" in command and "import threading" in command
    assert MemoryBandwidth.timeout_s == 30
    assert probe_script().startswith('"""RAM copy bandwidth probe')


def test_recorded_16_cpu_output() -> None:
    value = recorded_h100()
    assert value == MemoryBandwidthValue(
        available=True,
        threads=16,
        buffer_bytes=603979776,
        llc_bytes=314572800,
        bytes_moved=143973679104,
        seconds=1.509295,
    )
    assert round(value.gb_per_s, 1) == 95.4


def test_python3_missing_is_a_reason_not_an_error() -> None:
    command = MemoryBandwidth().command().replace("command -v python3 ", "command -v llmtune-none ")
    value = MemoryBandwidth().process(run_command(command))
    assert value == MemoryBandwidthValue(False, "python3 is not installed on the host")


def test_probe_crash_reports_its_last_line() -> None:
    lines = run_command(tool("python3", "python3 -c 'raise MemoryError(\"no room\")'"))
    value = MemoryBandwidth().process(lines)
    assert not value.available
    assert value.reason == "the probe exited 1: MemoryError: no room"


@pytest.mark.parametrize("lines", [[], ["threads=x", "@@llmtune rc 0"], ["@@llmtune rc 0"]])
def test_parser_never_raises(lines: list[str]) -> None:
    assert not MemoryBandwidth().process(lines).available


# --- MEM002 -------------------------------------------------------------------------------------


def test_mem002_pass_against_slot_channels() -> None:
    # 95.4 GB/s against 4800 MT/s x 8 B x 2 channels (P0 CHANNEL A/B) = 76.8 GB/s.
    outcome = _check(recorded_h100(), modules(AM5))
    assert outcome.status == Status.PASS
    assert outcome.observed.endswith("= 124% of 76.8 GB/s")
    assert "2 channel(s) (from the slot names)" in outcome.expected


def test_mem002_warns_below_the_ratio() -> None:
    # The EPYC board has 8 channels; told so, 95.4 GB/s is 47% of 3200 x 8 B x 8 = 204.8 GB/s.
    outcome = _check(recorded_h100(), modules(EPYC), memory_channels=8)
    assert outcome.status == Status.WARN
    assert outcome.observed.endswith("= 47% of 204.8 GB/s")
    assert "memory_channels setting" in outcome.expected
    assert "XMP/EXPO" in outcome.fix and "one DIMM in each channel" in outcome.fix
    # From its slot names alone, 3 channels are populated: 76.8 GB/s, which it beats.
    assert _check(recorded_h100(), modules(EPYC)).status == Status.PASS


def test_mem002_skips_without_dmi_but_shows_the_measurement(
    measured_here: MemoryBandwidthValue,
) -> None:
    no_dmi = read_fact(MemoryModules)  # this VM: no DMI table (or no dmidecode)
    outcome = _check(measured_here, no_dmi)
    assert outcome.status == Status.SKIP
    assert outcome.observed.startswith(f"measured {measured_here.gb_per_s:.1f} GB/s copy")


def test_mem002_skips_when_not_measured() -> None:
    missing = MemoryBandwidthValue(False, "python3 is not installed on the host")
    outcome = _check(missing, modules(AM5))
    assert outcome.status == Status.SKIP and "python3 is not installed" in outcome.observed


def test_probe_survives_pyinfra_quoting() -> None:
    # The script travels inside the command: through pyinfra's connector it is quoted again.
    state = connect(["@local"])
    collection = collect_pyinfra(state.inventory.get_host("@local"), [MemoryBandwidth])
    value = collection.facts[MemoryBandwidth]
    assert value.available and value.threads == len(os.sched_getaffinity(0)), value.reason
