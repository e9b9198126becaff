"""MemInfo: the recorded /proc/meminfo of both project machines through the real command."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, HOSTS, read_fact, run_command

from llmtune.facts.meminfo import MemInfo, MemInfoValue, parse_meminfo


@pytest.mark.parametrize(
    ("recording", "total_mib", "available_mib"),
    [
        # 131981020 kB and 131469784 kB: the H100 VM (128 GiB).
        (HOSTS / "h100-ubuntu2404-vm" / "meminfo.txt", 128887, 128388),
        # 24684084 kB and 24399972 kB: the Debian 12 VM (24 GiB).
        (HOSTS / "debian12-vm-nogpu" / "meminfo.txt", 24105, 23828),
        # The same VM with a swap file, idle: MemAvailable 23988300 kB.
        (FIXTURES / "recorded" / "memory" / "meminfo-swapfile-idle.txt", 24105, 23426),
    ],
    ids=["h100-vm", "debian12-vm", "debian12-vm-swapfile"],
)
def test_recorded_meminfo_through_the_real_command(
    tree, recording, total_mib: int, available_mib: int
) -> None:
    root = tree({"/proc/meminfo": recording.read_text()})
    value = read_fact(MemInfo, root=root)
    assert value == MemInfoValue(total_mib=total_mib, available_mib=available_mib)
    assert value.available


def test_command_prints_only_the_two_lines(tree) -> None:
    root = tree({"/proc/meminfo": (HOSTS / "h100-ubuntu2404-vm" / "meminfo.txt").read_text()})
    lines = run_command(MemInfo().command(root=root))
    assert [line.split(":")[0] for line in lines] == ["MemTotal", "MemAvailable"]


def test_no_proc_meminfo_exits_0_and_reads_as_unknown(tree) -> None:
    root = tree({"/proc/version": "Linux\n"})
    value = read_fact(MemInfo, root=root)
    assert value == MemInfoValue() and not value.available
    assert MemInfo().process([]) == MemInfo().default() == MemInfoValue()


def test_kernel_without_memavailable_and_garbage_lines() -> None:
    # Kernels before 3.14 print no MemAvailable; a mangled line is skipped, not a crash.
    lines = (HOSTS / "debian12-vm-nogpu" / "meminfo.txt").read_text().splitlines()
    old = [line for line in lines if not line.startswith("MemAvailable:")]
    assert parse_meminfo(old) == MemInfoValue(total_mib=24105, available_mib=None)
    assert parse_meminfo(["MemTotal: lots kB", "junk", "MemTotal: 2048 kB"]).total_mib == 2
