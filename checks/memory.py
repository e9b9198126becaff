"""Checks of category memory: RAM speed and bandwidth, hugepages, swap."""

from __future__ import annotations

from collections import Counter

from llmtune.checks.registry import FactValues, Level, check
from llmtune.facts.memory import (
    DmiStatus,
    MemoryBandwidth,
    MemoryModule,
    MemoryModules,
    MemoryModulesValue,
    Swap,
    SwapSampleLong,
    SwapValue,
    Thp,
    populated_channels,
)
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"

# Configured speeds a hair under the rating still count as rated: Intel reports a DDR4-4266 kit
# as 4267 MT/s, and kits are sold as "6000" for 5998-6000 MT/s.
SPEED_TOLERANCE = 0.005
# Without channel names in the slot labels, the populated modules are counted as channels up to
# this many (a desktop's dual channel): overstating the channels would warn on healthy hosts.
FALLBACK_MAX_CHANNELS = 2
# Bytes one 64-bit memory channel moves per transfer.
CHANNEL_BYTES = 8
SWAPPINESS_CONF = "/etc/sysctl.d/90-llmtune-swappiness.conf"


@check(
    id="MEM003",
    name="thp-always",
    title="Transparent hugepages always on",
    category="memory",
    severity=Severity.MEDIUM,
    source="seed 004 §7.4 (Transparent Huge Pages)",
    facts=(Thp,),
)
def thp_always(facts: FactValues, settings: HostSettings) -> Outcome:
    thp = facts[Thp]
    if thp.enabled is None:
        return skipped("this kernel has no transparent hugepages (no sysfs THP knob)")
    want = settings.thp  # "always" unless the settings say otherwise
    if thp.enabled == want:
        return passed(f"enabled={thp.enabled}, defrag={thp.defrag}", want)
    return failed(
        f"enabled={thp.enabled}",
        want,
        f"echo {want} | sudo tee {THP_ENABLED}   # persistently: the llmtune memory deploy",
    )


# --- RAM speed and bandwidth -------------------------------------------------------------------


def dmi_unusable(value: MemoryModulesValue) -> str | None:
    """Why the SMBIOS module list cannot be used (a skip reason), or None when it can."""
    if value.status == DmiStatus.MISSING:
        return "dmidecode is not installed: apt install dmidecode (dnf install dmidecode)"
    if value.status == DmiStatus.NOT_ROOT:
        return f"reading SMBIOS needs root ({value.reason}): run as root: sudo llmtune doctor"
    if value.status == DmiStatus.NO_DMI:
        return f"no SMBIOS/DMI table on this host (a VM or container): {value.reason}"
    if value.status == DmiStatus.FAILED:
        return f"dmidecode failed: {value.reason}"
    if not value.populated:
        return "SMBIOS lists no populated memory module"
    return None


def slot_labels(modules: tuple[MemoryModule, ...]) -> dict[int, str]:
    """A readable name per module: the locator, with the bank locator where locators repeat.

    AMD boards name both channels' slots "DIMM 1" and tell them apart in the bank locator.
    """
    counts = Counter(m.locator for m in modules)
    labels: dict[int, str] = {}
    for index, module in enumerate(modules):
        label = module.locator or f"module {index + 1}"
        if counts[module.locator] > 1 and module.bank_locator:
            label = f"{module.bank_locator} {label}"
        labels[index] = label
    return labels


def _mts(value: int | None) -> str:
    return f"{value} MT/s" if value else "unknown"


def _module_line(label: str, module: MemoryModule) -> str:
    part = " ".join(x for x in (module.manufacturer, module.part_number) if x)
    return (
        f"{label}: {module.size} {module.type}, configured {_mts(module.configured_mts)}, "
        f"SMBIOS speed {_mts(module.speed_mts)}" + (f" ({part})" if part else "")
    )


@check(
    id="MEM001",
    name="ram-rated-speed",
    title="RAM runs at its rated speed (XMP/EXPO)",
    category="memory",
    severity=Severity.HIGH,
    source='seed 004 §6.1, §22 #1, Known TG Variability "RAM not at rated speed"',
    facts=(MemoryModules,),
)
def ram_rated_speed(facts: FactValues, settings: HostSettings) -> Outcome:
    value = facts[MemoryModules]
    reason = dmi_unusable(value)
    if reason:
        return skipped(reason)
    modules = value.populated
    labels = slot_labels(modules)
    details = tuple(_module_line(labels[i], m) for i, m in enumerate(modules))
    rated_setting = settings.ram_rated_mts
    slow: list[tuple[str, int, int]] = []
    judged = 0
    for index, module in enumerate(modules):
        rated = rated_setting or module.speed_mts
        if not module.configured_mts or not rated:
            continue
        judged += 1
        if module.configured_mts < rated * (1 - SPEED_TOLERANCE):
            slow.append((labels[index], module.configured_mts, rated))
    if not judged:
        return skipped("SMBIOS reports no configured or rated speed for the modules")
    if rated_setting:
        expected = f"≥ {rated_setting} MT/s (ram_rated_mts)"
    else:
        # SMBIOS "Speed" is often the JEDEC speed, not the kit's XMP/EXPO rating: say so.
        expected = (
            "configured = the modules' SMBIOS speed (often the JEDEC speed: set ram_rated_mts "
            "to the kit's XMP/EXPO rating)"
        )
    speeds = sorted({m.configured_mts for m in modules if m.configured_mts})
    observed = (
        f"{len(modules)} module(s) configured at " + "/".join(f"{s}" for s in speeds) + " MT/s"
    )
    if not slow:
        return passed(observed, expected, details)
    label, configured, rated = slow[0]
    fix = (
        "Enable XMP (Intel) / EXPO (AMD) in the BIOS memory settings; "
        f"{label} runs {configured} MT/s, rated {rated} MT/s"
    )
    more = tuple(f"slow: {lb} runs {c} MT/s, rated {r} MT/s" for lb, c, r in slow)
    note = (
        "servers: the DIMMs per channel and the CPU's supported memory speed can also lower "
        "the configured speed",
    )
    return failed(
        f"{len(slow)} of {len(modules)} module(s) below rated speed ({label}: {configured} MT/s)",
        expected,
        fix,
        more + details + note,
    )


def channel_count(modules: tuple[MemoryModule, ...], settings: HostSettings) -> tuple[int, str]:
    """Memory channels in use and where that number comes from (said in the observation)."""
    if settings.memory_channels:
        return settings.memory_channels, "memory_channels setting"
    inferred = populated_channels(modules)
    if inferred:
        return inferred, "from the slot names"
    count = min(len(modules), FALLBACK_MAX_CHANNELS)
    return count, (
        f"assumed from {len(modules)} populated module(s), slot names do not say: "
        "set memory_channels"
    )


@check(
    id="MEM002",
    name="memory-bandwidth",
    title="RAM copy bandwidth near its theoretical figure",
    category="memory",
    severity=Severity.MEDIUM,
    source="seed 004 §6.1 (memory hierarchy, channels), §3 (RAM bandwidth)",
    facts=(MemoryBandwidth, MemoryModules),
    level=Level.FULL,
)
def memory_bandwidth(facts: FactValues, settings: HostSettings) -> Outcome:
    measured = facts[MemoryBandwidth]
    if not measured.available:
        return skipped(f"bandwidth not measured: {measured.reason}")
    figure = (
        f"{measured.gb_per_s:.1f} GB/s copy (read+write, {measured.threads} threads, "
        f"{measured.seconds:.1f} s)"
    )
    modules_value = facts[MemoryModules]
    reason = dmi_unusable(modules_value)
    if reason:
        return skipped(f"measured {figure}; no expected figure: {reason}")
    modules = modules_value.populated
    speeds = [m.configured_mts for m in modules if m.configured_mts]
    if not speeds:
        return skipped(f"measured {figure}; SMBIOS reports no configured memory speed")
    # All channels run at one speed: the slowest module's.
    mts = min(speeds)
    channels, how = channel_count(modules, settings)
    theoretical = mts * 1e6 * CHANNEL_BYTES * channels / 1e9
    ratio = measured.gb_per_s / theoretical
    observed = f"{figure} = {ratio:.0%} of {theoretical:.1f} GB/s"
    expected = (
        f"≥ {settings.memory_bandwidth_min_ratio:.0%} of {mts} MT/s x {CHANNEL_BYTES} B x "
        f"{channels} channel(s) ({how})"
    )
    details = (
        f"buffers {measured.buffer_bytes // 2**20} MiB per side, last-level cache "
        f"{measured.llc_bytes // 2**20} MiB",
    )
    if ratio >= settings.memory_bandwidth_min_ratio:
        return passed(observed, expected, details)
    fix = (
        "Enable XMP/EXPO (see MEM001); put one DIMM in each channel (the board manual's "
        "slot order); stop memory-heavy background processes; set memory_channels if "
        f"{channels} is not the host's channel count"
    )
    return warned(observed, expected, fix, details)


# --- Swap --------------------------------------------------------------------------------------


def _swap_devices(swap: SwapValue) -> tuple[str, ...]:
    return tuple(
        f"{d.path} ({d.type}): {d.size_kib // 1024} MiB, {d.used_kib // 1024} MiB used, "
        f"priority {d.priority}"
        for d in swap.devices
    )


@check(
    id="MEM004",
    name="swappiness",
    title="vm.swappiness low where swap is in use",
    category="memory",
    severity=Severity.LOW,
    source="seed 004 §15.2, §22 #8, Known TG Variability (vm.swappiness)",
    facts=(Swap,),
)
def swappiness(facts: FactValues, settings: HostSettings) -> Outcome:
    swap = facts[Swap]
    limit = settings.swappiness_max
    if not swap.active:
        where = "/proc/swaps" if swap.swaps_readable else "this kernel (no /proc/swaps)"
        shown = "unknown" if swap.swappiness is None else str(swap.swappiness)
        return passed(f"no swap device in {where} (vm.swappiness={shown})", f"≤ {limit}")
    if swap.swappiness is None:
        return skipped("vm.swappiness could not be read (/proc/sys/vm/swappiness)")
    observed = f"vm.swappiness={swap.swappiness} with {len(swap.devices)} swap device(s)"
    if swap.swappiness <= limit:
        return passed(observed, f"≤ {limit}", _swap_devices(swap))
    fix = (
        f"sudo sysctl -w vm.swappiness={limit} && "
        f"echo 'vm.swappiness = {limit}' | sudo tee {SWAPPINESS_CONF}"
    )
    return warned(observed, f"≤ {limit} (swappiness_max)", fix, _swap_devices(swap))


SWAP_FIX = (
    "Lock the model in RAM: llama-server --load-mode mlock (older builds: --mlock; the service "
    "needs LimitMEMLOCK=infinity), and use a smaller model/context or add RAM"
)


def swap_activity_outcome(swap: SwapValue) -> Outcome:
    if swap.pswpin is None or swap.pswpout is None:
        return skipped("/proc/vmstat has no pswpin/pswpout counters")
    since_boot = f"since boot: {swap.pswpin} pages swapped in, {swap.pswpout} out"
    moved_in = swap.pswpin_delta or 0
    moved_out = swap.pswpout_delta or 0
    sample = f"{swap.interval_s:g} s"
    if moved_in or moved_out:
        return failed(
            f"swapping now: {moved_in} pages in, {moved_out} out in {sample} ({since_boot})",
            "no swap-in/out during the sample",
            SWAP_FIX,
            _swap_devices(swap),
        )
    return passed(f"no swapping in {sample} ({since_boot})", "no swap-in/out during the sample")


@check(
    id="MEM005",
    name="swap-activity",
    title="No swapping right now",
    category="memory",
    severity=Severity.HIGH,
    source="seed 004 §22 #8, §15.2, Known TG Variability (vm.swappiness + model too large)",
    facts=(Swap,),
)
def swap_activity(facts: FactValues, settings: HostSettings) -> Outcome:
    return swap_activity_outcome(facts[Swap])


@check(
    id="MEM006",
    name="swap-activity-long",
    title="No swapping over a longer sample",
    category="memory",
    severity=Severity.HIGH,
    source="seed 004 §22 #8, §15.2, Known TG Variability (vm.swappiness + model too large)",
    facts=(SwapSampleLong,),
    level=Level.FULL,
)
def swap_activity_long(facts: FactValues, settings: HostSettings) -> Outcome:
    return swap_activity_outcome(facts[SwapSampleLong])
