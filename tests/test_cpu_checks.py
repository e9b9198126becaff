"""CPU001-CPU004 on values parsed from real fixtures, and on dataclass values where none exist."""

from __future__ import annotations

from pathlib import Path

from conftest import HOSTS, read_fact
from test_cpu_facts import PUBLIC, RECORDED, grep_h_files, ttar_tree

from llmtune.checks.cpu import (
    cpu_clock_near_max,
    epp_performance,
    governor_performance,
    hybrid_pcores,
)
from llmtune.checks.registry import CHECKS, FactValues
from llmtune.facts.cpu import (
    CpuFreq,
    CpuFreqInfo,
    CpuFreqValue,
    CpuInfo,
    CpuTopology,
    CpuTopologyValue,
)
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.findings import Status
from llmtune.settings import HostSettings

SETTINGS = HostSettings()


def _facts(freq: CpuFreqValue | None = None, **more: object) -> FactValues:
    values: dict[type, object] = {}
    if freq is not None:
        values[CpuFreq] = freq
    if "topology" in more:
        values[CpuTopology] = more["topology"]
    if "host" in more:
        values[HostInfo] = more["host"]
    return FactValues(values)


def _node_exporter_freq(tmp_path: Path) -> CpuFreqValue:
    root = ttar_tree(PUBLIC / "node-exporter-sysfs-cpufreq-thermal" / "sys-cpufreq.ttar", tmp_path)
    return read_fact(CpuFreq, root=str(root))


def _vm_freq(tree, host: str) -> CpuFreqValue:
    return read_fact(
        CpuFreq, root=tree({"/proc/cpuinfo": (HOSTS / host / "cpuinfo.txt").read_text()})
    )


def _intel(cpus: range, governor: str, epp: str | None, cur: int, top: int) -> CpuFreqValue:
    return CpuFreqValue(
        tuple(CpuFreqInfo(n, "intel_pstate", governor, epp, cur, top) for n in cpus)
    )


def test_registered_identities() -> None:
    names = {
        cid: (CHECKS[cid].name, CHECKS[cid].category)
        for cid in ("CPU001", "CPU002", "CPU003", "CPU004")
    }
    assert names == {
        "CPU001": ("governor-performance", "cpu"),
        "CPU002": ("epp-performance", "cpu"),
        "CPU003": ("cpu-clock-near-max", "cpu"),
        "CPU004": ("hybrid-pcores", "cpu"),
    }


# --- CPU001 governor-performance ---------------------------------------------------------


def test_governor_fails_on_node_exporter_powersave(tmp_path: Path) -> None:
    outcome = governor_performance(_facts(_node_exporter_freq(tmp_path)), SETTINGS)
    assert outcome.status == Status.FAIL
    assert outcome.observed == "powersave: CPUs 0-3 (4 of 4 CPUs, intel_pstate)"
    assert outcome.fix.startswith(
        "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
    )
    assert "persistently" in outcome.fix
    assert outcome.details == ("powersave: CPUs 0-3",)


def test_governor_lists_only_the_cpus_not_at_performance() -> None:
    freq = CpuFreqValue(
        _intel(range(4), "performance", None, 4000, 5000).cpus
        + _intel(range(4, 6), "powersave", None, 800, 5000).cpus
    )
    outcome = governor_performance(_facts(freq), SETTINGS)
    assert outcome.status == Status.FAIL
    assert outcome.observed.startswith("powersave: CPUs 4-5 (2 of 6 CPUs")
    assert outcome.details == ("performance: CPUs 0-3", "powersave: CPUs 4-5")


def test_governor_passes_when_all_performance() -> None:
    outcome = governor_performance(
        _facts(_intel(range(8), "performance", None, 4000, 5000)), SETTINGS
    )
    assert outcome.status == Status.PASS
    assert outcome.observed == "scaling_governor=performance on all 8 CPUs (intel_pstate)"


def test_governor_skips_in_recorded_vms(tree) -> None:
    # The H100 VM has no systemd-detect-virt (HostInfo virtualization ""): the CPU flag tells.
    h100 = governor_performance(
        _facts(_vm_freq(tree, "h100-ubuntu2404-vm"), host=HostInfoValue(virtualization="")),
        SETTINGS,
    )
    assert h100.status == Status.SKIP
    assert h100.observed == (
        "no cpufreq in this VM (CPU flag hypervisor): the hypervisor owns CPU clocks; "
        "/proc/cpuinfo reports 2100 MHz"
    )
    kvm = governor_performance(
        _facts(_vm_freq(tree, "debian12-vm-nogpu"), host=HostInfoValue(virtualization="kvm")),
        SETTINGS,
    )
    assert kvm.status == Status.SKIP and kvm.observed.startswith("no cpufreq in this VM (kvm)")


def test_governor_skip_reason_without_host_info_on_bare_metal() -> None:
    # HostInfo not collected and no hypervisor flag: the reason names the missing driver.
    outcome = governor_performance(_facts(CpuFreqValue()), SETTINGS)
    assert outcome.status == Status.SKIP and outcome.observed.startswith("no cpufreq driver")


# --- CPU002 epp-performance --------------------------------------------------------------


def test_epp_fails_on_public_balance_power(tree) -> None:
    epps = PUBLIC / "cpufreq-epp-balance-power-12cpu" / "cat-energy_performance_preference.txt"
    files = {
        f"/sys/devices/system/cpu/cpu{n}/cpufreq/energy_performance_preference": f"{epp}\n"
        for n, epp in enumerate(epps.read_text().splitlines())
    }
    outcome = epp_performance(_facts(read_fact(CpuFreq, root=tree(files))), SETTINGS)
    assert outcome.status == Status.FAIL
    assert outcome.observed.startswith("balance_power: CPUs 0-11 (12 of 12 CPUs")
    assert "energy_performance_preference" in outcome.fix and "CPU001" in outcome.fix


def test_epp_skips_when_driver_exposes_none(tmp_path: Path) -> None:
    # node_exporter's intel_pstate tree has no EPP files.
    outcome = epp_performance(_facts(_node_exporter_freq(tmp_path)), SETTINGS)
    assert outcome.status == Status.SKIP
    assert "driver intel_pstate" in outcome.observed


def test_epp_skips_in_vm_and_passes_when_performance(tree) -> None:
    vm = epp_performance(_facts(_vm_freq(tree, "h100-ubuntu2404-vm")), SETTINGS)
    assert vm.status == Status.SKIP and "VM" in vm.observed
    ok = epp_performance(_facts(_intel(range(4), "powersave", "performance", 4000, 5000)), SETTINGS)
    assert ok.status == Status.PASS


# --- CPU003 cpu-clock-near-max -----------------------------------------------------------


def test_clock_skips_without_max_clock(tmp_path: Path, tree) -> None:
    topology = CpuTopologyValue()
    # node_exporter's tree has scaling_cur_freq but no cpuinfo_max_freq.
    no_max = cpu_clock_near_max(_facts(_node_exporter_freq(tmp_path), topology=topology), SETTINGS)
    assert no_max.status == Status.SKIP and "cpuinfo_max_freq" in no_max.observed
    vm = cpu_clock_near_max(
        _facts(_vm_freq(tree, "debian12-vm-nogpu"), topology=topology), SETTINGS
    )
    assert vm.status == Status.SKIP and "2600 MHz" in vm.observed


def _hybrid_topology() -> CpuTopologyValue:
    cpus = tuple(CpuInfo(n, core_id=n // 2, socket=0, core_key=str(n // 2)) for n in range(12))
    cpus += tuple(CpuInfo(n, core_id=n, socket=0, core_key=str(n)) for n in range(12, 16))
    return CpuTopologyValue(cpus, tuple(range(12)), tuple(range(12, 16)), "kernel")


def test_clock_passes_when_top_pcores_near_max() -> None:
    # P-cores at 4.8-4.9 GHz of 4.9; E-cores (lower max, lower clock) are not looked at.
    freq = CpuFreqValue(
        tuple(
            CpuFreqInfo(n, "intel_pstate", "performance", "performance", 4800 + (n % 2) * 100, 4900)
            for n in range(12)
        )
        + tuple(
            CpuFreqInfo(n, "intel_pstate", "performance", "performance", 800, 3600)
            for n in range(12, 16)
        )
    )
    outcome = cpu_clock_near_max(_facts(freq, topology=_hybrid_topology()), SETTINGS)
    assert outcome.status == Status.PASS
    assert outcome.observed.startswith("highest 6 P-core clocks 4900 MHz of max 4900 MHz")
    assert len(outcome.details) == 6 and all("/ 4900 MHz" in d for d in outcome.details)


def test_clock_warns_when_pcores_stay_low() -> None:
    freq = _intel(range(12), "powersave", "balance_power", 1200, 4900)
    outcome = cpu_clock_near_max(_facts(freq, topology=_hybrid_topology()), SETTINGS)
    assert outcome.status == Status.WARN
    assert "(24%)" in outcome.observed and "85%" in outcome.expected
    assert "CPU001" in outcome.fix and "under load" in outcome.fix


# --- CPU004 hybrid-pcores ----------------------------------------------------------------


def test_hybrid_passes_with_public_lists(tree) -> None:
    folder = PUBLIC / "intel-hybrid-cpu_core-cpu_atom"
    root = tree(
        {
            "/sys/devices/cpu_core/cpus": (folder / "sys-devices-cpu_core-cpus.txt").read_text(),
            "/sys/devices/cpu_atom/cpus": (folder / "sys-devices-cpu_atom-cpus.txt").read_text(),
        }
    )
    outcome = hybrid_pcores(_facts(topology=read_fact(CpuTopology, root=root)), SETTINGS)
    assert outcome.status == Status.PASS
    assert outcome.observed.startswith("P-cores 0-1,3,6,8,10 (6 cores), E-cores 12-21")
    assert outcome.details == (
        "pin: taskset -c 0-1,3,6,8,10 llama-server ... -t 6",
        "service: CPUAffinity=0-1,3,6,8,10 (systemd unit [Service])",
    )


def test_hybrid_counts_physical_pcores_for_threads() -> None:
    outcome = hybrid_pcores(_facts(topology=_hybrid_topology()), SETTINGS)
    assert outcome.status == Status.PASS
    assert outcome.details[0] == "pin: taskset -c 0-11 llama-server ... -t 6"


def test_hybrid_skips_on_recorded_vm(tree) -> None:
    files = grep_h_files(RECORDED / "h100-ubuntu2404-vm" / "sys-cpu-topology.grep-H.txt")
    outcome = hybrid_pcores(_facts(topology=read_fact(CpuTopology, root=tree(files))), SETTINGS)
    assert outcome.status == Status.SKIP
    assert outcome.observed == "not a hybrid CPU: all 16 CPUs are one core type"
    unread = hybrid_pcores(_facts(topology=CpuTopologyValue()), SETTINGS)
    assert unread.status == Status.SKIP and "could not be read" in unread.observed


def test_settings_opt_outs_skip_the_tuned_and_headless_checks() -> None:
    from llmtune.checks.power import tuned_profile
    from llmtune.checks.system import headless
    from llmtune.findings import Status as S

    empty = FactValues({})
    assert tuned_profile(empty, HostSettings(tuned=False)).status == S.SKIP
    assert headless(empty, HostSettings(headless=False)).status == S.SKIP
