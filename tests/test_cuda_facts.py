"""CudaToolkit on a real nvcc recording, and on a host without one."""

from __future__ import annotations

from conftest import FIXTURES, run_command

from llmtune.facts.cuda import CudaToolkit, CudaToolkitValue


def test_nvcc_release_from_a_real_recording() -> None:
    lines = (FIXTURES / "recorded/cuda/fact-cuda-toolkit.txt").read_text().splitlines()
    assert CudaToolkit().process(lines) == CudaToolkitValue(True, "13.0")


def test_missing_nvcc_says_so() -> None:
    command = CudaToolkit().command().replace("nvcc", "nvcc-not-installed-here")
    value = CudaToolkit().process(run_command(command))
    assert not value.available and value.reason == "nvcc not installed"
