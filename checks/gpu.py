"""Checks of category gpu: the NVIDIA driver, VRAM held by others, temperature, clock event
reasons, the PCIe link (idle and under load) and the CUDA kernel modules at boot.

No check here ever proposes changing GPU clocks, power limits, persistence or MIG mode: those
are the owner's choices, and a wrong one costs more than the finding.
"""

from __future__ import annotations

from llmtune.checks.display import is_display_process, process_basename
from llmtune.checks.registry import FactUnavailable, FactValues, Level, check
from llmtune.facts.gpu import (
    GpuProcess,
    GpuProcesses,
    NvidiaGpus,
    NvidiaGpusValue,
    PcieLoadProbe,
)
from llmtune.facts.host import HostInfo
from llmtune.facts.kernel import KernelModules, KernelModulesValue, ModulesLoadConfig
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

HEADLESS_FIX = (
    "sudo systemctl set-default multi-user.target && sudo systemctl isolate multi-user.target"
)
UVM_FIX = "echo nvidia_uvm | sudo tee /etc/modules-load.d/nvidia-uvm.conf"
UVM_CONF = "/etc/modules-load.d/nvidia-uvm.conf"


# Clock event reasons (NVML names, see llmtune.facts.gpu.CLOCK_EVENT_REASONS).
THROTTLE_FAIL = ("HwSlowdown", "HwThermalSlowdown", "SwThermalSlowdown", "HwPowerBrakeSlowdown")
THROTTLE_WARN = ("SwPowerCap",)
# GpuIdle, SyncBoost, DisplayClockSetting and ApplicationsClocksSetting are benign: idle clocks,
# multi-GPU boost sync, the display's clock, and an owner's clock choice (never ours to change).

# Per-lane PCIe throughput (GB/s, one direction, after line encoding) by generation.
PCIE_LANE_GB_S = {1: 0.25, 2: 0.5, 3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}


def _no_gpu_reason(gpus: NvidiaGpusValue) -> str:
    return f"no NVIDIA GPU to check ({gpus.reason})" if gpus.reason else "no NVIDIA GPU to check"


def _modules(facts: FactValues) -> KernelModulesValue | None:
    try:
        return facts[KernelModules]
    except FactUnavailable:
        return None


def _driver_fix(message: str) -> str:
    text = message.lower()
    if "version mismatch" in text:
        # The userspace was upgraded under a running kernel module: the new module loads on boot.
        return "sudo reboot   # the driver was upgraded; the old kernel module is still loaded"
    if "no devices were found" in text:
        return "lspci -nnk | grep -iA3 nvidia   # is the card seen, and bound to nvidia?"
    return (
        "sudo modprobe nvidia   # if it fails, dmesg | grep -i nvidia says why: a module not "
        "built for this kernel (sudo dkms autoinstall) or Secure Boot (mokutil --sb-state)"
    )


@check(
    id="GPU001",
    name="nvidia-driver",
    title="The NVIDIA driver answers (nvidia-smi)",
    category="gpu",
    severity=Severity.HIGH,
    source="seed 004 §5.4 (CUDA backend), §22 #5",
    facts=(NvidiaGpus, KernelModules),
)
def nvidia_driver(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    modules = _modules(facts)
    module_loaded = modules is not None and modules.loaded("nvidia")
    if gpus.available:
        names = ", ".join(sorted({g.name for g in gpus.gpus}))
        details = tuple(
            f"GPU {g.index}: {g.name}, compute capability {g.compute_cap or '?'}, "
            f"{g.memory_total_mib if g.memory_total_mib is not None else '?'} MiB, "
            f"bus {g.bus_id or '?'}"
            for g in gpus.gpus
        )
        return passed(
            f"driver {gpus.driver or '?'}, {len(gpus.gpus)} GPU(s): {names}",
            "nvidia-smi lists the GPUs",
            details,
        )
    if not gpus.installed and not module_loaded:
        return skipped("no NVIDIA GPU: nvidia-smi is not installed and no nvidia module is loaded")
    if not gpus.installed:
        version = modules.nvidia_version if modules else ""
        branch = version.split(".")[0] if version else "<branch>"
        return failed(
            f"the nvidia kernel module{f' {version}' if version else ''} is loaded but "
            "nvidia-smi is not installed",
            "nvidia-smi installed with the driver",
            f"sudo apt install nvidia-utils-{branch}   # Ubuntu; elsewhere the driver's utils "
            "package of the same version",
        )
    message = " ".join(gpus.message) or gpus.reason
    return failed(
        gpus.reason, "nvidia-smi lists the GPUs", _driver_fix(message), details=gpus.message
    )


def _base_name(process: GpuProcess) -> str:
    return process_basename(process.name)


def _mib(value: int | None) -> str:
    return "? MiB" if value is None else f"{value} MiB"


@check(
    id="GPU002",
    name="vram-other-processes",
    title="No other process holds VRAM before the server starts",
    category="gpu",
    severity=Severity.HIGH,
    source="seed 004 §22 #5, §7.4 (headless mode), §6.2 (iGPU for display)",
    facts=(GpuProcesses,),
)
def vram_other_processes(facts: FactValues, settings: HostSettings) -> Outcome:
    value = facts[GpuProcesses]
    if not value.available:
        return skipped(f"no NVIDIA GPU to check ({value.reason})")
    ours = set(settings.inference_processes)
    others = [p for p in value.processes if _base_name(p) not in ours]
    limit = settings.vram_other_max_mib
    details = tuple(
        f"GPU {p.gpu if p.gpu is not None else '?'}: PID {p.pid} {p.name} (type {p.type}) "
        f"{_mib(p.used_mib)}"
        for p in others
    )
    total = sum(p.used_mib or 0 for p in others)
    expected = f"no other process on the GPU (at most {limit} MiB in all)"
    if not others:
        return passed("no other process holds VRAM", expected)
    observed = f"{len(others)} other process(es) hold {total} MiB"
    display = [p for p in others if is_display_process(p)]
    if display:
        names = ", ".join(sorted({_base_name(p) for p in display}))
        return failed(
            f"{observed}; display server/compositor on the GPU: {names}",
            expected,
            f"go headless: {HEADLESS_FIX}   # or drive the display from the iGPU",
            details,
        )
    if total > limit:
        pids = " ".join(str(p.pid) for p in others if p.pid is not None)
        return warned(
            observed,
            expected,
            f"stop them before starting llama-server (e.g. sudo kill {pids})",
            details,
        )
    return passed(observed, expected, details)


@check(
    id="GPU003",
    name="gpu-temperature",
    title="GPU temperature below the throttle range",
    category="gpu",
    severity=Severity.MEDIUM,
    source="seed 004 §22 #6 (thermal)",
    facts=(NvidiaGpus,),
)
def gpu_temperature(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    if not gpus.available:
        return skipped(_no_gpu_reason(gpus))
    readings = [(g, g.temperature_c) for g in gpus.gpus if g.temperature_c is not None]
    if not readings:
        return skipped("nvidia-smi reports no GPU temperature")
    warn_c = settings.gpu_temp_warn_c
    fail_c = settings.gpu_temp_fail_c
    details = tuple(f"{g.label}: {t} °C" for g, t in readings)
    hottest, temp = max(readings, key=lambda r: r[1])
    observed = f"{temp} °C ({hottest.label})"
    expected = f"below {warn_c:g} °C"
    fix = (
        "improve the GPU's cooling: clean the heatsink and fans, check the case airflow; "
        "watch it with nvidia-smi -q -d TEMPERATURE,PERFORMANCE"
    )
    if temp >= fail_c:
        return failed(observed, expected, fix, details)
    if temp >= warn_c:
        return warned(observed, expected, fix, details)
    return passed(observed, expected, details)


@check(
    id="GPU004",
    name="gpu-throttle-reasons",
    title="GPU clocks not held down by thermal, power or hardware slowdown",
    category="gpu",
    severity=Severity.HIGH,
    source="seed 004 §22 #6, Known TG Variability Root Causes",
    facts=(NvidiaGpus,),
)
def gpu_throttle_reasons(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    if not gpus.available:
        return skipped(_no_gpu_reason(gpus))
    read = [g for g in gpus.gpus if g.clock_event_mask is not None]
    if not read:
        return skipped("nvidia-smi reports no clock event reasons")
    details = tuple(
        f"{g.label}: {', '.join(g.clock_event_reasons) or 'none'} (0x{g.clock_event_mask:x})"
        for g in read
        if g.clock_event_mask is not None
    )
    bad = sorted({r for g in read for r in g.clock_event_reasons if r in THROTTLE_FAIL})
    capped = sorted({r for g in read for r in g.clock_event_reasons if r in THROTTLE_WARN})
    expected = "no thermal, power-brake or hardware slowdown; no power cap at rest"
    if bad:
        thermal = any("Thermal" in r for r in bad)
        fix = (
            "cool the GPU: clean the heatsink and fans, check the case airflow"
            if thermal
            else "check the PSU and the GPU's power cables: the board asserts hardware slowdown"
        )
        return failed(f"active: {', '.join(bad + capped)}", expected, fix, details)
    if capped:
        return warned(
            "active: SwPowerCap (clocks held at the power limit)",
            expected,
            "find what loads the GPU (nvidia-smi) and compare Current with Default Power Limit: "
            "nvidia-smi -q -d POWER",
            details,
        )
    benign = sorted({r for g in read for r in g.clock_event_reasons})
    return passed(f"active: {', '.join(benign) or 'none'} (benign)", expected, details)


def _link(gen: int | None, width: int | None) -> str:
    return f"Gen{gen if gen is not None else '?'} x{width if width is not None else '?'}"


@check(
    id="GPU005",
    name="pcie-link",
    title="GPU PCIe link at its maximum generation and width (idle reading)",
    category="gpu",
    severity=Severity.LOW,
    source="seed 004 §22 #9 (PCIe link speed); seed 002 (ik_llama.cpp #474: low PCIe throughput)",
    facts=(NvidiaGpus,),
)
def pcie_link(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    if not gpus.available:
        return skipped(_no_gpu_reason(gpus))
    read = [
        g
        for g in gpus.gpus
        if None not in (g.pcie_gen_current, g.pcie_gen_max)
        or None not in (g.pcie_width_current, g.pcie_width_max)
    ]
    if not read:
        return skipped("nvidia-smi reports no PCIe link values")
    details = tuple(
        f"{g.label}: {_link(g.pcie_gen_current, g.pcie_width_current)} of "
        f"{_link(g.pcie_gen_max, g.pcie_width_max)}"
        for g in read
    )
    below = [
        g
        for g in read
        if (g.pcie_gen_current or 0) < (g.pcie_gen_max or 0)
        or (g.pcie_width_current or 0) < (g.pcie_width_max or 0)
    ]
    expected = ", ".join(f"{_link(g.pcie_gen_max, g.pcie_width_max)}" for g in read)
    if not below:
        return passed(
            ", ".join(_link(g.pcie_gen_current, g.pcie_width_current) for g in read),
            expected,
            details,
        )
    observed = ", ".join(
        f"{g.label} at {_link(g.pcie_gen_current, g.pcie_width_current)}" for g in below
    )
    return warned(
        f"{observed} (idle reading: a link trains down to a lower generation at rest, which "
        "is normal; fewer lanes usually is not)",
        f"{expected} under load",
        "llmtune doctor --level full   # GPU006 reads the link while loading it",
        details,
    )


@check(
    id="GPU006",
    name="pcie-link-under-load",
    title="GPU PCIe link reaches its maximum under load",
    category="gpu",
    severity=Severity.HIGH,
    source="seed 004 §22 #9 (PCIe link speed); seed 002 (ik_llama.cpp #474: low PCIe throughput)",
    facts=(PcieLoadProbe,),
    level=Level.FULL,
)
def pcie_link_under_load(facts: FactValues, settings: HostSettings) -> Outcome:
    probe = facts[PcieLoadProbe]
    if not probe.available:
        return skipped(f"the PCIe load probe could not run: {probe.reason}")
    details: list[str] = []
    below: list[str] = []
    unread: list[str] = []
    for gpu in probe.gpus:
        rate = f"{gpu.h2d_gb_s:.1f} GB/s host-to-device" if gpu.h2d_gb_s is not None else ""
        if gpu.error:
            unread.append(gpu.label)
            details.append(f"{gpu.label}: not loaded: {gpu.error}")
            continue
        if gpu.gen_current is None or gpu.width_current is None:
            unread.append(gpu.label)
            details.append(f"{gpu.label}: {rate}; nvidia-smi gave no link reading during the load")
            continue
        link = _link(gpu.gen_current, gpu.width_current)
        top = _link(gpu.gen_max, gpu.width_max)
        lanes = PCIE_LANE_GB_S.get(gpu.gen_max or 0, 0.0) * (gpu.width_max or 0)
        ceiling = f" (link max ~{lanes:.0f} GB/s)" if lanes else ""
        details.append(f"{gpu.label}: {link} of {top} under load, {rate}{ceiling}")
        if gpu.gen_current < (gpu.gen_max or 0) or gpu.width_current < (gpu.width_max or 0):
            below.append(f"{gpu.label} at {link} of {top} ({rate})")
    expected = "every GPU at its maximum PCIe generation and width while loaded"
    if below:
        return failed(
            "; ".join(below),
            expected,
            "reseat the card; check that the slot has all its lanes wired (x16 electrical, not "
            "shared with M.2/another slot) and the BIOS PCIe generation setting (Auto/max)",
            tuple(details),
        )
    if unread:
        return warned(
            f"could not load or read: {', '.join(unread)}",
            expected,
            "stop processes that hold the GPU (exclusive compute mode, full VRAM) and run "
            "llmtune doctor --level full --only GPU006 again",
            tuple(details),
        )
    rates = ", ".join(
        f"{g.label} {g.h2d_gb_s:.1f} GB/s" for g in probe.gpus if g.h2d_gb_s is not None
    )
    return passed(f"at maximum under load; {rates}", expected, tuple(details))


@check(
    id="GPU007",
    name="nvidia-modules-at-boot",
    title="nvidia and nvidia_uvm loaded, nvidia_uvm loaded at boot",
    category="gpu",
    severity=Severity.HIGH,
    source="seed 004 §5.4 (CUDA backend); CUDA needs nvidia_uvm, else llama-server runs on CPU",
    facts=(NvidiaGpus, KernelModules, ModulesLoadConfig, HostInfo),
)
def nvidia_modules_at_boot(facts: FactValues, settings: HostSettings) -> Outcome:
    gpus = facts[NvidiaGpus]
    modules = facts[KernelModules]
    if facts[HostInfo].container:
        return skipped("in a container: kernel modules are the host's to load")
    if not modules.readable:
        return skipped("/proc/modules cannot be read (a kernel without loadable modules?)")
    if not gpus.installed and not modules.loaded("nvidia"):
        return skipped("no NVIDIA GPU: nvidia-smi is not installed and no nvidia module is loaded")
    config = facts[ModulesLoadConfig]
    expected = f"nvidia and nvidia_uvm loaded; nvidia_uvm listed in {UVM_CONF} (or another)"
    if not modules.loaded("nvidia"):
        return failed(
            "the nvidia kernel module is not loaded",
            expected,
            "sudo modprobe nvidia   # see GPU001",
        )
    listed = config.sources("nvidia_uvm")
    if not modules.loaded("nvidia_uvm"):
        fix = "sudo modprobe nvidia_uvm" + ("" if listed else f" && {UVM_FIX}")
        return failed(
            "nvidia_uvm is not loaded: CUDA programs find no device and llama-server runs on "
            "the CPU",
            expected,
            fix,
        )
    if not listed:
        return warned(
            "nvidia_uvm is loaded now but no modules-load.d file lists it: at boot a service "
            "that starts before it is loaded gets no CUDA device",
            expected,
            UVM_FIX,
        )
    return passed(f"nvidia, nvidia_uvm loaded; nvidia_uvm listed in {', '.join(listed)}", expected)
