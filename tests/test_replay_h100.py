"""Replayed captures of the H100 GPU machine: the GPU checks are evaluated on its real probes.

tests/fixtures/captures/h100-{quick,full}.tar.gz were written by `llmtune doctor --capture` on the
project's GPU machine (NVIDIA H100 80GB HBM3, driver 580.159.04, Ubuntu 24.04 VM, PID 1 not
systemd, no dmidecode) on 2026-11-23.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import FIXTURES

CAPTURES = FIXTURES / "captures"


def replay(name: str, *args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtune",
            "doctor",
            "--replay",
            str(CAPTURES / name),
            "--format",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def by_id(report: dict) -> dict[str, dict]:
    return {f["id"]: f for f in report["findings"]}


def test_quick_capture_evaluates_the_gpu_checks() -> None:
    code, report = replay("h100-quick.tar.gz")
    assert report["level"] == "quick" and report["host"]["distro_id"] == "ubuntu"
    findings = by_id(report)
    for gpu_check in ("GPU001", "GPU002", "GPU003", "GPU004", "GPU005"):
        assert findings[gpu_check]["status"] == "pass", findings[gpu_check]
    assert "NVIDIA H100 80GB HBM3" in findings["GPU001"]["observed"]
    assert findings["GPU005"]["observed"] == "Gen5 x16"
    assert "GpuIdle" in findings["GPU004"]["observed"]
    # That image loads nvidia_uvm but lists it in no modules-load.d file.
    assert findings["GPU007"]["status"] == "warn"
    assert "nvidia-uvm.conf" in findings["GPU007"]["fix"]
    # A VM without systemd as PID 1 and without cpufreq: skips, never failures.
    for skipped in ("CPU001", "CPU002", "PWR001", "PWR002", "SYS001", "THM001"):
        assert findings[skipped]["status"] == "skip", findings[skipped]
    assert findings["MEM003"]["status"] == "fail"  # THP was madvise there
    assert code == 1 and report["summary"]["error"] == 0


def test_full_capture_has_the_load_probes() -> None:
    _, report = replay("h100-full.tar.gz")
    findings = by_id(report)
    assert report["level"] == "full"
    under_load = findings["GPU006"]
    assert under_load["status"] == "pass"
    assert "Gen5 x16 of Gen5 x16 under load" in under_load["details"][0]
    # No DMI reader there: the bandwidth figure is reported with the reason for skipping.
    assert findings["MEM002"]["status"] == "skip"
    assert "GB/s" in findings["MEM002"]["observed"]


def test_replay_of_a_quick_capture_at_full_level_skips_the_missing_probes() -> None:
    _, report = replay("h100-quick.tar.gz", "--level", "full")
    findings = by_id(report)
    assert findings["GPU006"]["status"] == "skip"
    assert "not in this capture" in findings["GPU006"]["observed"]
