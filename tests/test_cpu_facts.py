"""CpuTopology, CpuFreq: real recordings and public sysfs data through the real commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, HOSTS, make_tree, read_fact, run_command

from llmtune.facts.cpu import (
    CpuFreq,
    CpuFreqValue,
    CpuTopology,
    CpuTopologyValue,
    format_cpulist,
    hybrid_by_max_freq,
    parse_cpuinfo_mhz,
    parse_cpulist,
)

RECORDED = FIXTURES / "recorded" / "cpu"
PUBLIC = FIXTURES / "public"


def grep_h_files(path: Path) -> dict[str, str]:
    """A recorded ``grep -s -H .`` dump -> ``{sysfs path: file content}`` for ``make_tree``."""
    files: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep:
            files[name] = files.get(name, "") + value + "\n"
    return files


def ttar_tree(path: Path, root: Path) -> Path:
    """Materialize a ttar archive (node_exporter's fixture format) under ``root``, symlinks too."""
    lines = path.read_text().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Directory: "):
            (root / line.removeprefix("Directory: ")).mkdir(parents=True, exist_ok=True)
        elif line.startswith("Path: "):
            target = root / line.removeprefix("Path: ")
            target.parent.mkdir(parents=True, exist_ok=True)
            following = lines[i + 1]
            if following.startswith("SymlinkTo: "):
                target.symlink_to(following.removeprefix("SymlinkTo: "))
                i += 1
            elif following.startswith("Lines: "):
                count = int(following.removeprefix("Lines: "))
                content = lines[i + 2 : i + 2 + count]
                target.write_text("".join(f"{c}\n" for c in content))
                i += 1 + count
        i += 1
    return root


def test_ttar_tree_keeps_values_and_symlinks(tmp_path: Path) -> None:
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-thermal.ttar", tmp_path)
    zone = root / "sys/class/thermal/thermal_zone0"
    assert zone.is_symlink()
    assert (zone / "temp").read_text() == "12376\n"


# --- parse_cpulist / format_cpulist -------------------------------------------------------


def test_parse_cpulist_public_hybrid_lists() -> None:
    # Real /sys/devices/cpu_core/cpus and cpu_atom/cpus of an Intel hybrid CPU (MangoHud PR).
    folder = PUBLIC / "intel-hybrid-cpu_core-cpu_atom"
    assert parse_cpulist((folder / "sys-devices-cpu_core-cpus.txt").read_text()) == (
        0,
        1,
        3,
        6,
        8,
        10,
    )
    assert parse_cpulist((folder / "sys-devices-cpu_atom-cpus.txt").read_text()) == tuple(
        range(12, 22)
    )


def test_parse_cpulist_recorded_online_and_garbage() -> None:
    online = grep_h_files(RECORDED / "h100-ubuntu2404-vm" / "sys-cpu-topology.grep-H.txt")
    assert parse_cpulist(online["/sys/devices/system/cpu/online"]) == tuple(range(16))
    assert parse_cpulist("") == ()
    assert parse_cpulist(None) == ()
    assert parse_cpulist("x,3-a,5,,7-6,2-2") == (2, 5)
    assert parse_cpulist("0-99999999") == ()


def test_format_cpulist_round_trips() -> None:
    assert format_cpulist((0, 1, 3, 6, 8, 10)) == "0-1,3,6,8,10"
    assert format_cpulist(range(12, 22)) == "12-21"
    assert format_cpulist(()) == ""
    assert parse_cpulist(format_cpulist((5, 0, 1, 2, 9))) == (0, 1, 2, 5, 9)


# --- hybrid detection from max clocks (no real per-CPU max clocks of a hybrid CPU exist in the
# fixtures: these are numbers, in MHz, as the fact passes them) ---------------------------------


def test_hybrid_by_max_freq_two_clear_groups() -> None:
    # i5-12600K shape (seed 004 §14.3): 12 P threads, 4 E-cores; ITMT favours two P-cores.
    clocks = {c: 4900 for c in range(12)} | {0: 5000, 2: 5000} | {c: 3600 for c in range(12, 16)}
    fast, slow = hybrid_by_max_freq(clocks)
    assert fast == tuple(range(12)) and slow == (12, 13, 14, 15)


def test_hybrid_by_max_freq_not_hybrid() -> None:
    # Preferred cores a few percent apart, equal clocks, three tiers, or an unknown clock.
    assert hybrid_by_max_freq({0: 5000, 1: 4800, 2: 4700}) == ((), ())
    assert hybrid_by_max_freq({0: 3700, 1: 3700}) == ((), ())
    assert hybrid_by_max_freq({0: 5000, 1: 4000, 2: 3000}) == ((), ())
    assert hybrid_by_max_freq({0: 5000, 1: 0}) == ((), ())
    assert hybrid_by_max_freq({}) == ((), ())


# --- CpuTopology ---------------------------------------------------------------------------


def _lscpu(host: str) -> dict[str, str]:
    data = json.loads((HOSTS / host / "lscpu.json").read_text())
    return {row["field"].rstrip(":"): row["data"] for row in data["lscpu"]}


@pytest.mark.parametrize(
    ("host", "recorded"),
    [("h100-ubuntu2404-vm", "h100-ubuntu2404-vm"), ("debian12-vm-nogpu", "debian12-vm/idle")],
)
def test_topology_from_recorded_vm_trees_agrees_with_lscpu(tree, host: str, recorded: str) -> None:
    files = grep_h_files(RECORDED / recorded / "sys-cpu-topology.grep-H.txt")
    value = read_fact(CpuTopology, root=tree(files))
    lscpu = _lscpu(host)
    assert value.threads == int(lscpu["CPU(s)"])
    assert value.sockets == int(lscpu["Socket(s)"])
    assert value.physical_cores == int(lscpu["Core(s) per socket"]) * int(lscpu["Socket(s)"])
    assert not value.hybrid and value.hybrid_source == ""
    assert value.pcores == parse_cpulist(lscpu["On-line CPU(s) list"])
    assert all(c.max_mhz is None for c in value.cpus)  # no cpufreq in these VMs


def test_topology_recorded_fact_output_parses() -> None:
    lines = (RECORDED / "h100-ubuntu2404-vm" / "fact-CpuTopology.txt").read_text().splitlines()
    value = CpuTopology().process(lines)
    assert (value.threads, value.physical_cores, value.sockets) == (16, 16, 1)


def test_topology_two_sockets_from_node_exporter_tree(tmp_path: Path) -> None:
    # node_exporter's fixture: cpu0-1 in package 0, cpu2-3 in package 1, no siblings lists.
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-cpufreq.ttar", tmp_path)
    value = read_fact(CpuTopology, root=str(root))
    assert [(c.cpu, c.core_id, c.socket) for c in value.cpus] == [
        (0, 0, 0),
        (1, 1, 0),
        (2, 0, 1),
        (3, 1, 1),
    ]
    assert (value.sockets, value.physical_cores, value.threads) == (2, 4, 4)
    assert not value.hybrid and value.pcores == (0, 1, 2, 3)


def test_topology_hybrid_lists_from_public_tree(tree) -> None:
    folder = PUBLIC / "intel-hybrid-cpu_core-cpu_atom"
    root = tree(
        {
            "/sys/devices/cpu_core/cpus": (folder / "sys-devices-cpu_core-cpus.txt").read_text(),
            "/sys/devices/cpu_atom/cpus": (folder / "sys-devices-cpu_atom-cpus.txt").read_text(),
        }
    )
    value = read_fact(CpuTopology, root=root)
    assert value.hybrid
    assert value.pcores == (0, 1, 3, 6, 8, 10)
    assert value.ecore_cpus == tuple(range(12, 22))
    assert value.hybrid_source.startswith("kernel")


def test_topology_hybrid_lists_drop_offline_cpus(tmp_path: Path) -> None:
    # The recorded 16-CPU VM tree with the public hybrid lists on top: CPUs 16-21 of the E-core
    # list do not exist there, so they are not offered for pinning.
    folder = PUBLIC / "intel-hybrid-cpu_core-cpu_atom"
    files = grep_h_files(RECORDED / "h100-ubuntu2404-vm" / "sys-cpu-topology.grep-H.txt")
    files["/sys/devices/cpu_core/cpus"] = (folder / "sys-devices-cpu_core-cpus.txt").read_text()
    files["/sys/devices/cpu_atom/cpus"] = (folder / "sys-devices-cpu_atom-cpus.txt").read_text()
    value = read_fact(CpuTopology, root=str(make_tree(tmp_path, files)))
    assert value.pcores == (0, 1, 3, 6, 8, 10)
    assert value.ecore_cpus == (12, 13, 14, 15)


def test_topology_empty_and_garbage() -> None:
    assert CpuTopology().process([]) == CpuTopologyValue()
    value = CpuTopology().process(["junk", "@@llmtune section cpus", "/x/cpu3/topology/core_id:z"])
    assert value.threads == 1 and value.cpus[0].core_id is None
    assert value.physical_cores == 1 and not value.hybrid


def test_topology_real_command_on_this_machine() -> None:
    value = read_fact(CpuTopology)
    assert value.threads >= 1
    assert set(value.pcores) <= {c.cpu for c in value.cpus}
    hybrid_here = Path("/sys/devices/cpu_atom/cpus").exists()
    assert value.hybrid == hybrid_here or value.hybrid_source == "cpufreq max clocks"
    if not hybrid_here and not Path("/sys/devices/system/cpu/cpu0/cpufreq").exists():
        assert value.pcores == tuple(c.cpu for c in value.cpus)


# --- CpuFreq --------------------------------------------------------------------------------


def test_cpufreq_from_node_exporter_tree(tmp_path: Path) -> None:
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-cpufreq.ttar", tmp_path)
    value = read_fact(CpuFreq, root=str(root))
    assert value.available and value.drivers == ("intel_pstate",)
    assert [c.governor for c in value.cpus] == ["powersave"] * 4
    # 1699981 kHz -> 1699 MHz; cpu2/3 hold node_exporter's edited 8000 kHz.
    assert [c.cur_mhz for c in value.cpus] == [1699, 1699, 8, 8]
    assert all(c.max_mhz is None and c.epp is None for c in value.cpus)
    assert value.cpuinfo_mhz == {} and not value.hypervisor


def test_cpufreq_epp_from_public_values(tree) -> None:
    # `cat .../cpu*/cpufreq/energy_performance_preference` of a 12-CPU laptop (auto-cpufreq #898).
    values = PUBLIC / "cpufreq-epp-balance-power-12cpu" / "cat-energy_performance_preference.txt"
    epps = values.read_text().splitlines()
    root = tree(
        {
            f"/sys/devices/system/cpu/cpu{n}/cpufreq/energy_performance_preference": f"{epp}\n"
            for n, epp in enumerate(epps)
        }
    )
    value = read_fact(CpuFreq, root=root)
    assert [c.cpu for c in value.cpus] == list(range(12))
    assert {c.epp for c in value.cpus} == {"balance_power"}


@pytest.mark.parametrize(
    ("host", "cpus", "mhz"),
    [("h100-ubuntu2404-vm", 16, 2100.0), ("debian12-vm-nogpu", 2, 2599.998)],
)
def test_cpufreq_vm_without_cpufreq_reads_cpuinfo(tree, host: str, cpus: int, mhz: float) -> None:
    root = tree({"/proc/cpuinfo": (HOSTS / host / "cpuinfo.txt").read_text()})
    value = read_fact(CpuFreq, root=root)
    assert not value.available and value.cpus == ()
    assert value.cpuinfo_mhz == {n: mhz for n in range(cpus)}
    assert value.hypervisor
    assert value.current_mhz(0) == mhz


def test_cpufreq_recorded_fact_output_parses() -> None:
    lines = (RECORDED / "h100-ubuntu2404-vm" / "fact-CpuFreq.txt").read_text().splitlines()
    value = CpuFreq().process(lines)
    assert not value.available and len(value.cpuinfo_mhz) == 16 and value.hypervisor


def test_cpufreq_empty_and_garbage() -> None:
    assert CpuFreq().process([]) == CpuFreqValue()
    assert parse_cpuinfo_mhz(["processor : x", "cpu MHz : 1", "processor : 1", "cpu MHz : ?"]) == {}


def test_cpufreq_real_command_on_this_machine() -> None:
    value = CpuFreq().process(run_command(CpuFreq().command()))
    assert value.available == Path("/sys/devices/system/cpu/cpu0/cpufreq").exists()
    if os.path.exists("/proc/cpuinfo") and "cpu MHz" in Path("/proc/cpuinfo").read_text():
        assert value.cpuinfo_mhz
