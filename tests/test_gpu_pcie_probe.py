"""The PCIe load probe: its script (import-safe, stdlib), its fact on the H100 and here."""

from __future__ import annotations

import ast
import importlib.util
import sys
from types import ModuleType

from conftest import FIXTURES, read_fact

from llmtune.facts.gpu import PCIE_PROBE, PcieLoadProbe, PcieLoadResult, parse_pcie_load

REC = FIXTURES / "recorded" / "gpu"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pcie_load_probe", PCIE_PROBE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_is_import_safe_and_stdlib_only(capsys) -> None:
    module = load_script()
    assert capsys.readouterr().out == ""  # importing ran nothing
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(PCIE_PROBE.read_text()))
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(PCIE_PROBE.read_text()))
        if isinstance(node, ast.ImportFrom)
    }
    assert imported <= set(sys.stdlib_module_names)
    assert module.normalize_bus_id("00000000:00:06.0") == "0000:00:06.0"
    assert module.normalize_bus_id("0000:1A:00.0") == "0000:1a:00.0"


def test_script_never_touches_gpu_settings() -> None:
    # No clocks, power limits, persistence or MIG: neither NVML setters nor nvidia-smi options.
    text = PCIE_PROBE.read_text()
    for forbidden in ("nvmlDeviceSet", "-pm", "-pl", "-lgc", "-ac", "-mig", "--persistence"):
        assert forbidden not in text


def test_script_without_driver_library_says_why(capsys) -> None:
    module = load_script()

    def no_library(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    assert module.main(loader=no_library) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pcie-load unavailable no NVIDIA driver library (libcuda.so.1)")


def test_h100_recording_parses() -> None:
    value = parse_pcie_load((REC / "h100-vm" / "fact-pcie-load.txt").read_text().splitlines())
    assert value.available
    assert value.gpus == (
        PcieLoadResult(
            bus_id="0000:00:06.0",
            index=0,
            h2d_gb_s=49.86,
            gen_current=5,
            gen_max=5,
            width_current=16,
            width_max=16,
        ),
    )


def test_no_gpu_recording_and_real_command_here() -> None:
    recorded = parse_pcie_load(
        (REC / "debian12-vm" / "fact-pcie-load.txt").read_text().splitlines()
    )
    assert not recorded.available and "libcuda.so.1" in recorded.reason
    live = read_fact(PcieLoadProbe)  # the real probe here: no driver, so it only says why
    if not live.available:
        assert live.reason


def test_probe_fact_is_a_long_probe_with_its_own_timeout() -> None:
    assert PcieLoadProbe.timeout_s == 60 and PcieLoadProbe.exclusive
    assert "python3 -c" in PcieLoadProbe().command()


def test_missing_python_empty_and_garbage() -> None:
    assert parse_pcie_load(["@@llmtune missing python3"]).reason == "python3 is not installed"
    assert not parse_pcie_load([]).available
    garbage = ["pcie-load", "pcie-load result", "pcie-load smi", "pcie-load error", "x=y"]
    value = parse_pcie_load(garbage)
    assert value.available and value.gpus[0].error == "failed"
