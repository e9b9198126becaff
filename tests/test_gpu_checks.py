"""GPU001-GPU007 on values parsed from recorded outputs (and a few constructed values)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from conftest import FIXTURES, HOSTS

from llmtune.checks.gpu import (
    gpu_temperature,
    gpu_throttle_reasons,
    nvidia_driver,
    nvidia_modules_at_boot,
    pcie_link,
    pcie_link_under_load,
    vram_other_processes,
)
from llmtune.checks.registry import CHECKS, FactValues, Level
from llmtune.facts.gpu import (
    GpuProcess,
    GpuProcesses,
    GpuProcessesValue,
    NvidiaGpus,
    NvidiaGpusValue,
    PcieLoadProbe,
    PcieLoadResult,
    PcieLoadValue,
    decode_clock_event_reasons,
    parse_nvidia_gpus,
    parse_pcie_load,
)
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.facts.kernel import (
    KernelModules,
    KernelModulesValue,
    ModulesLoadConfig,
    ModulesLoadValue,
)
from llmtune.findings import Status
from llmtune.settings import HostSettings

REC = FIXTURES / "recorded" / "gpu"
H100 = REC / "h100-vm"
PUBLIC = REC / "public"
RTX = FIXTURES / "public" / "nvidia-smi-rtx4080super-kde-desktop"
SETTINGS = HostSettings()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


H100_GPUS = parse_nvidia_gpus(lines(H100 / "fact-nvidia-gpus.txt"))
NO_SMI = parse_nvidia_gpus(lines(REC / "debian12-vm" / "fact-nvidia-gpus.txt"))
NO_DRIVER = parse_nvidia_gpus([*lines(PUBLIC / "nvidia-smi-no-driver.txt"), "@@llmtune rc 9"])
MISMATCH = parse_nvidia_gpus(
    [*lines(PUBLIC / "nvidia-smi-version-mismatch.txt"), "@@llmtune rc 18"]
)
H100_MODULES = KernelModules().process(lines(H100 / "fact-kernel-modules.txt"))
NO_MODULES = KernelModules().process(lines(REC / "debian12-vm" / "fact-kernel-modules.txt"))
RTX_IDLE = parse_nvidia_gpus([*lines(RTX / "nvidia-smi-query-gpu.idle.csv"), "@@llmtune rc 0"])


def processes(path: Path) -> GpuProcessesValue:
    return GpuProcesses().process([*lines(path), "@@llmtune rc 0"])


def test_checks_are_registered_with_their_ids_and_levels() -> None:
    ids = {c.id: c for c in CHECKS.values() if c.category == "gpu"}
    assert sorted(ids) == [f"GPU00{i}" for i in range(1, 8)]
    assert ids["GPU006"].level == Level.FULL
    assert all(ids[i].level == Level.QUICK for i in ids if i != "GPU006")
    assert [ids[i].name for i in sorted(ids)] == [
        "nvidia-driver",
        "vram-other-processes",
        "gpu-temperature",
        "gpu-throttle-reasons",
        "pcie-link",
        "pcie-link-under-load",
        "nvidia-modules-at-boot",
    ]


# --- GPU001 nvidia-driver ------------------------------------------------------------------


def _driver(gpus: NvidiaGpusValue, modules: KernelModulesValue = NO_MODULES):
    return nvidia_driver(FactValues({NvidiaGpus: gpus, KernelModules: modules}), SETTINGS)


def test_gpu001_pass_skip_fail() -> None:
    ok = _driver(H100_GPUS, H100_MODULES)
    assert ok.status == Status.PASS and "580.159.04" in ok.observed
    assert "compute capability 9.0" in ok.details[0]
    skip = _driver(NO_SMI)
    assert skip.status == Status.SKIP and "no NVIDIA GPU" in skip.observed
    broken = _driver(NO_DRIVER)
    assert broken.status == Status.FAIL and "couldn't communicate" in broken.observed
    assert "modprobe nvidia" in broken.fix
    mismatch = _driver(MISMATCH, H100_MODULES)
    assert mismatch.status == Status.FAIL and "reboot" in mismatch.fix
    # The module is loaded but nvidia-smi is missing: a broken install, not "no GPU".
    no_tools = _driver(NO_SMI, H100_MODULES)
    assert no_tools.status == Status.FAIL and "nvidia-utils-580" in no_tools.fix
    # No facts about modules at all (not collected): still decided by nvidia-smi alone.
    alone = nvidia_driver(FactValues({NvidiaGpus: NO_SMI}), SETTINGS)
    assert alone.status == Status.SKIP


# --- GPU002 vram-other-processes -----------------------------------------------------------


def _vram(value: GpuProcessesValue, settings: HostSettings = SETTINGS):
    return vram_other_processes(FactValues({GpuProcesses: value}), settings)


def test_gpu002_pass_when_nothing_or_only_llama_server_holds_vram() -> None:
    assert _vram(GpuProcessesValue(True)).status == Status.PASS
    idle = GpuProcesses().process(lines(H100 / "fact-gpu-processes.idle.txt"))
    assert _vram(idle).status == Status.PASS
    # The H100 load recording: python3 is the only process. Counted as ours, it passes.
    load = processes(H100 / "nvidia-smi.load.txt")
    ours = replace(SETTINGS, inference_processes=["python3"])
    assert _vram(load, ours).status == Status.PASS
    server = GpuProcessesValue(True, processes=(GpuProcess(0, 10, "C", "llama-server", 7000),))
    assert _vram(server).status == Status.PASS


def test_gpu002_fails_on_a_desktop_compositor() -> None:
    for path, name in (
        (RTX / "nvidia-smi.idle.txt", "kwin_wayland"),
        (PUBLIC / "nvidia-smi-440-old-layout-gnome.txt", "gnome-shell"),
        (PUBLIC / "nvidia-smi-470-gi-ci-layout-gnome.txt", "Xorg"),
    ):
        outcome = _vram(processes(path))
        assert outcome.status == Status.FAIL, path
        assert name in outcome.observed
        assert "systemctl set-default multi-user.target" in outcome.fix
    rtx = _vram(processes(RTX / "nvidia-smi.idle.txt"))
    assert "5 other process(es) hold 352 MiB" in rtx.observed
    assert "GPU 0: PID 2496 /usr/bin/plasma-keyboard (type G) 200 MiB" in rtx.details


def test_gpu002_warns_on_other_compute_processes_over_the_limit() -> None:
    outcome = _vram(processes(PUBLIC / "nvidia-smi-418-old-layout-8gpu-compute.txt"))
    assert outcome.status == Status.WARN
    assert "4 other process(es) hold 30498 MiB" in outcome.observed
    assert "sudo kill 34882 4561 27944 15752" in outcome.fix
    # Under the limit: reported in the details but passing.
    small = _vram(
        processes(H100 / "nvidia-smi.load.txt"), replace(SETTINGS, vram_other_max_mib=600)
    )
    assert small.status == Status.PASS and "python3" in small.details[0]


def test_gpu002_skips_without_nvidia_smi() -> None:
    missing = GpuProcesses().process(["@@llmtune missing nvidia-smi"])
    assert _vram(missing).status == Status.SKIP


# --- GPU003 gpu-temperature ----------------------------------------------------------------


def _temp(gpus: NvidiaGpusValue, settings: HostSettings = SETTINGS):
    return gpu_temperature(FactValues({NvidiaGpus: gpus}), settings)


def test_gpu003_states() -> None:
    ok = _temp(H100_GPUS)
    assert ok.status == Status.PASS and ok.observed.startswith("31 °C")
    # The same GPU judged with lower thresholds: warn at 30, fail at 31.
    assert _temp(H100_GPUS, replace(SETTINGS, gpu_temp_warn_c=30.0)).status == Status.WARN
    hot = replace(SETTINGS, gpu_temp_warn_c=25.0, gpu_temp_fail_c=31.0)
    assert _temp(H100_GPUS, hot).status == Status.FAIL
    assert _temp(NO_SMI).status == Status.SKIP
    unread = replace(H100_GPUS, gpus=(replace(H100_GPUS.gpus[0], temperature_c=None),))
    assert _temp(unread).status == Status.SKIP


# --- GPU004 gpu-throttle-reasons -----------------------------------------------------------


def _with_mask(mask: int) -> NvidiaGpusValue:
    gpu = replace(
        H100_GPUS.gpus[0],
        clock_event_mask=mask,
        clock_event_reasons=decode_clock_event_reasons(mask),
    )
    return replace(H100_GPUS, gpus=(gpu,))


def _throttle(gpus: NvidiaGpusValue):
    return gpu_throttle_reasons(FactValues({NvidiaGpus: gpus}), SETTINGS)


def test_gpu004_states() -> None:
    idle = _throttle(H100_GPUS)  # 0x1 GpuIdle: benign
    assert idle.status == Status.PASS and "GpuIdle" in idle.observed
    assert _throttle(_with_mask(0x10 | 0x100)).status == Status.PASS
    thermal = _throttle(_with_mask(0x40))
    assert thermal.status == Status.FAIL and "HwThermalSlowdown" in thermal.observed
    assert "cool" in thermal.fix
    brake = _throttle(_with_mask(0x80 | 0x4))
    assert brake.status == Status.FAIL and "PSU" in brake.fix
    capped = _throttle(_with_mask(0x4))
    assert capped.status == Status.WARN and "SwPowerCap" in capped.observed
    assert _throttle(NO_SMI).status == Status.SKIP
    for outcome in (thermal, brake, capped):
        # Never a change of clocks, power limits, persistence or MIG.
        assert not any(opt in outcome.fix for opt in (" -pl", " -lgc", " -ac", " -pm", " -mig"))


# --- GPU005 pcie-link ----------------------------------------------------------------------


def _link(gpus: NvidiaGpusValue):
    return pcie_link(FactValues({NvidiaGpus: gpus}), SETTINGS)


def test_gpu005_states() -> None:
    ok = _link(H100_GPUS)
    assert ok.status == Status.PASS and ok.observed == "Gen5 x16"
    idle = _link(RTX_IDLE)  # the desktop card at rest: Gen1 of Gen4
    assert idle.status == Status.WARN and "Gen1 x16" in idle.observed
    assert "--level full" in idle.fix and "normal" in idle.observed
    assert _link(NO_SMI).status == Status.SKIP


# --- GPU006 pcie-link-under-load -----------------------------------------------------------


def _load(value: PcieLoadValue):
    return pcie_link_under_load(FactValues({PcieLoadProbe: value}), SETTINGS)


def test_gpu006_states() -> None:
    h100 = parse_pcie_load(lines(H100 / "fact-pcie-load.txt"))
    ok = _load(h100)
    assert ok.status == Status.PASS and "49.9 GB/s" in ok.observed
    assert "Gen5 x16 of Gen5 x16" in ok.details[0] and "~63 GB/s" in ok.details[0]
    slow = replace(h100.gpus[0], gen_current=3, width_current=8)
    failed = _load(PcieLoadValue(True, gpus=(slow,)))
    assert failed.status == Status.FAIL and "Gen3 x8 of Gen5 x16" in failed.observed
    assert "reseat" in failed.fix and "BIOS" in failed.fix
    error = PcieLoadResult(
        bus_id="0000:00:06.0", error="cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY"
    )
    assert _load(PcieLoadValue(True, gpus=(error,))).status == Status.WARN
    none = parse_pcie_load(lines(REC / "debian12-vm" / "fact-pcie-load.txt"))
    skip = _load(none)
    assert skip.status == Status.SKIP and "libcuda.so.1" in skip.observed


# --- GPU007 nvidia-modules-at-boot ---------------------------------------------------------

HOST = HostInfoValue(virtualization="kvm", pid1="systemd", uid=0)
LISTED = ModulesLoadValue(
    modules={"nvidia_uvm": ("/etc/modules-load.d/nvidia-uvm.conf",)},
    files=("/etc/modules-load.d/nvidia-uvm.conf",),
)


def _boot(
    gpus: NvidiaGpusValue,
    modules: KernelModulesValue,
    config: ModulesLoadValue = ModulesLoadValue(),  # noqa: B008 - frozen value
    host: HostInfoValue = HOST,
):
    facts = {NvidiaGpus: gpus, KernelModules: modules, ModulesLoadConfig: config, HostInfo: host}
    return nvidia_modules_at_boot(FactValues(facts), SETTINGS)


def test_gpu007_states() -> None:
    # The H100 VM: both modules loaded, but no modules-load.d at all (modules-load-ls.txt).
    risky = _boot(H100_GPUS, H100_MODULES)
    assert risky.status == Status.WARN
    assert risky.fix == "echo nvidia_uvm | sudo tee /etc/modules-load.d/nvidia-uvm.conf"
    assert _boot(H100_GPUS, H100_MODULES, LISTED).status == Status.PASS
    without_uvm = replace(
        H100_MODULES, modules=tuple(m for m in H100_MODULES.modules if m.name != "nvidia_uvm")
    )
    missing = _boot(H100_GPUS, without_uvm)
    assert missing.status == Status.FAIL and "CPU" in missing.observed
    assert missing.fix.startswith("sudo modprobe nvidia_uvm && echo nvidia_uvm")
    assert _boot(H100_GPUS, without_uvm, LISTED).fix == "sudo modprobe nvidia_uvm"
    assert _boot(NO_SMI, NO_MODULES).status == Status.SKIP
    no_module_support = _boot(H100_GPUS, NO_MODULES)
    assert no_module_support.status == Status.SKIP
    container = replace(HOST, virtualization="docker")
    assert _boot(H100_GPUS, H100_MODULES, host=container).status == Status.SKIP


def test_h100_hosts_fixture_agrees_with_the_recording() -> None:
    # The lead's earlier H100 recording (another field list, with units) gives the same GPU.
    earlier = parse_nvidia_gpus(
        [*lines(HOSTS / "h100-ubuntu2404-vm" / "nvidia-smi-query.csv"), "@@llmtune rc 0"]
    )
    assert _link(earlier).status == Status.PASS
    assert _throttle(earlier).status == Status.PASS
