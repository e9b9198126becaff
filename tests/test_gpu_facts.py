"""NVIDIA GPU facts on recorded nvidia-smi outputs (H100 VM, public captures) and on this VM."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from conftest import FIXTURES, HOSTS, read_fact

from llmtune.facts.gpu import (
    QUERY_FIELD_SETS,
    GpuProcess,
    GpuProcesses,
    NvidiaGpus,
    decode_clock_event_reasons,
    parse_nvidia_gpus,
    parse_process_table,
    parse_query_csv,
    smi_value,
)

REC = FIXTURES / "recorded" / "gpu"
H100 = REC / "h100-vm"
PUBLIC = REC / "public"
RTX = FIXTURES / "public" / "nvidia-smi-rtx4080super-kde-desktop"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Put an ``nvidia-smi`` first on PATH that replays recorded output (``script`` is its body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def replay(path: Path, rc: int = 0) -> str:
    return f"cat {shlex.quote(str(path))}; exit {rc}"


def test_clock_event_reason_bits_match_nvml() -> None:
    # Values from nvml.h / pynvml (nvmlClocksEventReason*), checked with the search tool.
    assert decode_clock_event_reasons(0x1) == ("GpuIdle",)
    assert decode_clock_event_reasons(0x4 | 0x40 | 0x80) == (
        "SwPowerCap",
        "HwThermalSlowdown",
        "HwPowerBrakeSlowdown",
    )
    assert decode_clock_event_reasons(0x0) == ()
    assert decode_clock_event_reasons(0x1FF + 0x400)[-1] == "Unknown(0x400)"
    assert decode_clock_event_reasons(None) == ()


def test_h100_fact_output_parses() -> None:
    value = parse_nvidia_gpus(lines(H100 / "fact-nvidia-gpus.txt"))
    assert value.available and value.installed and value.driver == "580.159.04"
    (gpu,) = value.gpus
    assert gpu.index == 0 and gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.bus_id == "00000000:00:06.0" and gpu.uuid.startswith("GPU-884d3983")
    assert gpu.compute_cap == "9.0" and gpu.cuda_arch == 90
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.memory_free_mib) == (81559, 0, 81079)
    assert (gpu.pcie_gen_current, gpu.pcie_gen_max) == (5, 5)
    assert (gpu.pcie_width_current, gpu.pcie_width_max) == (16, 16)
    assert gpu.temperature_c == 31
    assert gpu.clock_event_mask == 1 and gpu.clock_event_reasons == ("GpuIdle",)


def test_fact_command_runs_nvidia_smi_and_parses(tmp_path, monkeypatch) -> None:
    stand_in(tmp_path, monkeypatch, replay(H100 / "query-gpu.csv"))
    value = read_fact(NvidiaGpus)
    assert value.available and value.gpus[0].cuda_arch == 90


def test_fact_command_falls_back_to_the_old_field_name(tmp_path, monkeypatch) -> None:
    # An older driver rejects clocks_event_reasons.active with nvidia-smi's real message (recorded
    # for another field) and answers the clocks_throttle_reasons query (recorded on the H100).
    invalid = H100 / "query-gpu-invalid-field.txt"
    answer = H100 / "query-gpu-throttle-name.csv"
    script = (
        f'case "$*" in *clocks_event_reasons*) {replay(invalid, 2)};; *) {replay(answer)};; esac'
    )
    stand_in(tmp_path, monkeypatch, script)
    value = read_fact(NvidiaGpus)
    assert value.available and value.gpus[0].clock_event_reasons == ("GpuIdle",)


def test_fact_command_reports_a_driver_failure(tmp_path, monkeypatch) -> None:
    stand_in(tmp_path, monkeypatch, replay(PUBLIC / "nvidia-smi-no-driver.txt", 9))
    value = read_fact(NvidiaGpus)
    assert not value.available and value.installed
    assert "exit status 9" in value.reason
    assert "couldn't communicate with the NVIDIA driver" in value.reason
    assert value.message and value.message[0].startswith("NVIDIA-SMI has failed")


def test_fact_on_this_vm_has_no_nvidia_smi() -> None:
    recorded = parse_nvidia_gpus(lines(REC / "debian12-vm" / "fact-nvidia-gpus.txt"))
    assert not recorded.available and not recorded.installed
    assert recorded.reason == "nvidia-smi is not installed"
    live = read_fact(NvidiaGpus)  # the real command here: exits 0 whatever the host has
    if not live.installed:
        assert live == recorded


def test_query_with_units_and_header_from_the_hosts_fixture() -> None:
    # --format=csv (units in cells and header), another field list and order.
    value = parse_nvidia_gpus(
        [*lines(HOSTS / "h100-ubuntu2404-vm" / "nvidia-smi-query.csv"), "@@llmtune rc 0"]
    )
    (gpu,) = value.gpus
    assert gpu.memory_total_mib == 81559 and gpu.memory_free_mib == 81079
    assert gpu.index is None and gpu.compute_cap == "9.0"
    assert gpu.clock_event_reasons == ("GpuIdle",) and value.driver == "580.159.04"


def test_rtx4080_desktop_query_idle_and_load() -> None:
    idle = parse_nvidia_gpus([*lines(RTX / "nvidia-smi-query-gpu.idle.csv"), "@@llmtune rc 0"])
    load = parse_nvidia_gpus([*lines(RTX / "nvidia-smi-query-gpu.load.csv"), "@@llmtune rc 0"])
    (gpu_idle,), (gpu_load,) = idle.gpus, load.gpus
    assert gpu_idle.name == "NVIDIA GeForce RTX 4080 SUPER" and gpu_idle.cuda_arch == 89
    # PCIe idle downshift: Gen1 of Gen4 at rest, Gen4 under load; x16 throughout.
    assert (gpu_idle.pcie_gen_current, gpu_idle.pcie_gen_max) == (1, 4)
    assert (gpu_load.pcie_gen_current, gpu_load.pcie_width_current) == (4, 16)
    assert gpu_idle.clock_event_reasons == ("GpuIdle",) and gpu_load.clock_event_reasons == ()
    assert gpu_idle.memory_total_mib == 16376 and gpu_idle.temperature_c is not None
    assert idle.driver == "595.71.05"


def test_noheader_output_of_a_known_query() -> None:
    rows = parse_query_csv(lines(H100 / "query-gpu-noheader.csv"), QUERY_FIELD_SETS)
    assert rows[0]["compute_cap"] == "9.0" and rows[0]["clocks_event_reasons.active"].startswith(
        "0x"
    )


def test_no_value_cells() -> None:
    cells = ["[N/A]", "N/A", "[Requested functionality has been deprecated]", "", "  "]
    assert [smi_value(c) for c in cells] == [None] * 5
    assert smi_value(" 16 ") == "16"


def test_empty_and_garbage_output_do_not_raise() -> None:
    assert not NvidiaGpus().process([]).available
    garbage = ["\x00\x01", "a,b,c", ", , ,", "index, name", "0"]
    assert not NvidiaGpus().process(garbage).available
    value = NvidiaGpus().process(["index, name", "zero, GPU", "@@llmtune rc 0"])
    assert value.available and value.gpus[0].index is None


# --- processes -----------------------------------------------------------------------------


def test_processes_idle_h100_none() -> None:
    value = GpuProcesses().process(lines(H100 / "fact-gpu-processes.idle.txt"))
    assert value.available and value.processes == ()


def test_processes_h100_under_load_lists_the_compute_process() -> None:
    assert parse_process_table(lines(H100 / "nvidia-smi.load.txt")) == (
        GpuProcess(gpu=0, pid=452, type="C", name="python3", used_mib=582),
    )


def test_processes_desktop_graphics_rows_new_layout() -> None:
    processes = parse_process_table(lines(RTX / "nvidia-smi.idle.txt"))
    assert [(p.pid, p.type, p.name, p.used_mib) for p in processes] == [
        (2165, "C+G", "/usr/bin/kwin_wayland", 25),
        (2496, "G", "/usr/bin/plasma-keyboard", 200),
        (2620, "G", "/usr/bin/Xwayland", 4),
        (2954, "G", "/usr/bin/plasmashell", 120),
        (3527, "G", "/usr/bin/xwaylandvideobridge", 3),
    ]
    # Why the table and not --query-compute-apps: the latter lists only kwin_wayland (C+G).
    compute_apps = (RTX / "nvidia-smi-query-compute-apps.idle.csv").read_text()
    assert "plasmashell" not in compute_apps and "kwin_wayland" in compute_apps


def test_processes_old_layout_without_gi_ci() -> None:
    gnome = parse_process_table(lines(PUBLIC / "nvidia-smi-440-old-layout-gnome.txt"))
    assert [(p.gpu, p.pid, p.type, p.name, p.used_mib) for p in gnome] == [
        (0, 1357, "G", "/usr/lib/xorg/Xorg", 18),
        (0, 1417, "G", "/usr/bin/gnome-shell", 49),
        (0, 1811, "G", "/usr/lib/xorg/Xorg", 96),
        (0, 1968, "G", "/usr/bin/gnome-shell", 77),
    ]
    compute = parse_process_table(lines(PUBLIC / "nvidia-smi-418-old-layout-8gpu-compute.txt"))
    assert [(p.gpu, p.pid, p.name, p.used_mib) for p in compute] == [
        (0, 34882, "python", 6751),
        (2, 4561, "python", 6065),
        (6, 27944, "python3", 8841),
        (7, 15752, "python3", 8841),
    ]


def test_processes_79_column_gi_ci_layout() -> None:
    processes = parse_process_table(lines(PUBLIC / "nvidia-smi-470-gi-ci-layout-gnome.txt"))
    assert len(processes) == 6 and processes[2].name == "/usr/bin/gnome-shell"
    assert processes[1].used_mib == 155 and {p.type for p in processes} == {"G"}


def test_processes_fact_missing_failed_and_empty(tmp_path, monkeypatch) -> None:
    assert GpuProcesses().process(["@@llmtune missing nvidia-smi"]).reason == (
        "nvidia-smi is not installed"
    )
    stand_in(tmp_path, monkeypatch, replay(PUBLIC / "nvidia-smi-version-mismatch.txt", 18))
    failed = read_fact(GpuProcesses)
    assert not failed.available and "Driver/library version mismatch" in failed.reason
    assert not GpuProcesses().process([]).available
    assert GpuProcesses().process(["| garbage |", "@@llmtune rc 0"]).available is False


def test_processes_fact_command_on_this_vm() -> None:
    value = read_fact(GpuProcesses)
    if not value.available:
        assert value.reason
