"""Swap, SwapSampleLong and checks MEM004 swappiness, MEM005/MEM006 swap activity."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import FIXTURES, HOSTS, read_fact

from llmtune.checks.memory import swap_activity, swap_activity_long, swappiness
from llmtune.checks.registry import FactValues
from llmtune.facts.memory import Swap, SwapDevice, SwapSampleLong, SwapValue
from llmtune.findings import Status
from llmtune.settings import HostSettings

RECORDED = FIXTURES / "recorded" / "memory"
VM = HOSTS / "debian12-vm-nogpu"


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def proc_tree(tree, vmstat: str, swaps: str, meminfo: str) -> str:
    return tree(
        {
            "/proc/sys/vm/swappiness": recorded("swappiness.txt"),
            "/proc/swaps": swaps,
            "/proc/meminfo": meminfo,
            "/proc/vmstat": vmstat,
        }
    )


def test_vm_without_swap(tree) -> None:
    root = proc_tree(
        tree,
        (VM / "vmstat.txt").read_text(),
        recorded("proc-swaps-noswap.txt"),
        (VM / "meminfo.txt").read_text(),
    )
    assert read_fact(Swap, root=root) == SwapValue(
        swappiness=60,
        swaps_readable=True,
        devices=(),
        total_kib=0,
        free_kib=0,
        pswpin=0,
        pswpout=0,
        pswpin_delta=0,
        pswpout_delta=0,
        interval_s=0.25,
    )


def test_swap_file_active(tree) -> None:
    root = proc_tree(
        tree,
        recorded("vmstat-swapfile-idle.txt"),
        recorded("proc-swaps-swapfile.txt"),
        recorded("meminfo-swapfile-idle.txt"),
    )
    value = read_fact(Swap, root=root)
    assert value.devices == (SwapDevice("/var/tmp/llmtune-swaptest.swap", "file", 1048572, 0, -2),)
    assert (value.total_kib, value.free_kib, value.active) == (1048572, 1048572, True)


class SlowSwap(Swap):
    # A long enough sample to change /proc/vmstat in the middle without racing the command.
    interval_s = 1.0


def test_real_command_sees_counters_grow_during_the_sample(tree) -> None:
    root = proc_tree(
        tree,
        recorded("vmstat-swapping-1.txt"),
        recorded("proc-swaps-swapping.txt"),
        recorded("meminfo-swapping.txt"),
    )
    proc = subprocess.Popen(
        ["/bin/sh", "-c", SlowSwap().command(root=root)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    # The second real reading, taken while the host was swapping, replaces the first.
    staged = Path(root) / "vmstat.next"
    staged.write_text(recorded("vmstat-swapping-2.txt"))
    os.replace(staged, Path(root) / "proc" / "vmstat")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    value = SlowSwap().process(out.splitlines())
    assert (value.pswpin, value.pswpout) == (26928, 90106)
    assert (value.pswpin_delta, value.pswpout_delta) == (26928 - 10592, 90106 - 73982)
    assert value.devices[0].used_kib == 314052


def test_recorded_fact_output_while_swapping() -> None:
    value = Swap().process(recorded("swap-fact-output-swapping.txt").splitlines())
    assert (value.pswpin_delta, value.pswpout_delta) == (26480 - 16328, 90106 - 86313)
    assert (value.swappiness, value.total_kib, value.free_kib) == (60, 1048572, 734520)


def test_real_command_on_this_vm() -> None:
    start = time.monotonic()
    value = read_fact(Swap)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 0.6  # the quick level's short sample
    assert value.swaps_readable and value.swappiness is not None
    assert value.pswpin is not None and value.pswpout_delta is not None
    assert swappiness(FactValues({Swap: value}), HostSettings()).status in (
        Status.PASS,
        Status.WARN,
    )


def test_long_sample_is_a_slower_probe_of_the_same_reading() -> None:
    assert SwapSampleLong.interval_s >= 5 and SwapSampleLong.timeout_s > SwapSampleLong.interval_s
    assert "sleep 5.0" in SwapSampleLong().command()
    lines = recorded("swap-fact-output-swapping.txt").splitlines()
    assert SwapSampleLong().process(lines).interval_s == 5.0


def test_parser_accepts_nothing_and_garbage() -> None:
    assert Swap().process([]) == SwapValue(interval_s=0.25)
    value = Swap().process(["@@llmtune section swaps", "Filename Type", "x y z w v", "junk"])
    assert value.devices == () and value.swaps_readable


# --- checks -------------------------------------------------------------------------------------


def _swapping() -> SwapValue:
    return Swap().process(recorded("swap-fact-output-swapping.txt").splitlines())


def test_mem004_warns_on_high_swappiness_with_swap() -> None:
    outcome = swappiness(FactValues({Swap: _swapping()}), HostSettings())
    assert outcome.status == Status.WARN
    assert outcome.observed == "vm.swappiness=60 with 1 swap device(s)"
    assert outcome.fix.startswith("sudo sysctl -w vm.swappiness=10 && ")
    assert "/etc/sysctl.d/" in outcome.fix
    assert outcome.details[0].startswith("/var/tmp/llmtune-swaptest.swap (file): 1023 MiB")
    relaxed = swappiness(FactValues({Swap: _swapping()}), HostSettings(swappiness_max=60))
    assert relaxed.status == Status.PASS


def test_mem004_passes_without_swap_and_skips_without_swappiness(tree) -> None:
    root = proc_tree(
        tree,
        (VM / "vmstat.txt").read_text(),
        recorded("proc-swaps-noswap.txt"),
        (VM / "meminfo.txt").read_text(),
    )
    outcome = swappiness(FactValues({Swap: read_fact(Swap, root=root)}), HostSettings())
    assert outcome.status == Status.PASS
    assert outcome.observed == "no swap device in /proc/swaps (vm.swappiness=60)"
    unknown = SwapValue(swappiness=None, swaps_readable=True, devices=_swapping().devices)
    assert swappiness(FactValues({Swap: unknown}), HostSettings()).status == Status.SKIP


def test_mem005_fails_while_swapping() -> None:
    outcome = swap_activity(FactValues({Swap: _swapping()}), HostSettings())
    assert outcome.status == Status.FAIL
    assert outcome.observed.startswith("swapping now: 10152 pages in, 3793 out in 0.25 s")
    assert "--load-mode mlock" in outcome.fix and "--mlock" in outcome.fix


def test_mem005_passes_reporting_cumulative_counters(tree) -> None:
    root = proc_tree(
        tree,
        recorded("vmstat-swapping-2.txt"),
        recorded("proc-swaps-swapping.txt"),
        recorded("meminfo-swapping.txt"),
    )
    outcome = swap_activity(FactValues({Swap: read_fact(Swap, root=root)}), HostSettings())
    assert outcome.status == Status.PASS
    assert outcome.observed == (
        "no swapping in 0.25 s (since boot: 26928 pages swapped in, 90106 out)"
    )


def test_mem005_and_mem006_skip_without_counters() -> None:
    empty = SwapValue()
    assert swap_activity(FactValues({Swap: empty}), HostSettings()).status == Status.SKIP
    long = FactValues({SwapSampleLong: empty})
    assert swap_activity_long(long, HostSettings()).status == Status.SKIP


def test_mem006_reads_the_long_sample() -> None:
    # Real counters that grew (recorded over 0.25 s), read as the long fact: MEM006 uses its own.
    value = SwapSampleLong().process(recorded("swap-fact-output-swapping.txt").splitlines())
    outcome = swap_activity_long(FactValues({SwapSampleLong: value}), HostSettings())
    assert outcome.status == Status.FAIL and "in 5 s" in outcome.observed
