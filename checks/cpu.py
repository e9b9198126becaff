"""Checks of category cpu: governor, EPP, clocks, hybrid P-cores."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from llmtune.checks.registry import FactUnavailable, FactValues, check
from llmtune.facts.cpu import CpuFreq, CpuFreqValue, CpuTopology, format_cpulist
from llmtune.facts.host import HostInfo, HostInfoValue
from llmtune.findings import Outcome, Severity, failed, passed, skipped, warned
from llmtune.settings import HostSettings

CPUFREQ = "/sys/devices/system/cpu/cpu*/cpufreq"
# The seed's `grep "cpu MHz" /proc/cpuinfo | sort -rn | head -6`: the busiest few P-cores tell
# whether the CPU reaches its boost clock; idle ones clock down whatever the settings.
TOP_CLOCKS = 6
PERSIST = "# persistently: tuned (throughput-performance) or the llmtune cpu deploy"


def no_cpufreq_reason(facts: FactValues, freq: CpuFreqValue) -> str:
    """Why there is no cpufreq, in the host's terms (VM, container, bare metal)."""
    try:
        host = facts[HostInfo]
    except FactUnavailable:
        host = HostInfoValue()
    virt = host.virtualization
    mhz = sorted(set(round(v) for v in freq.cpuinfo_mhz.values()))
    clock = f"; /proc/cpuinfo reports {'/'.join(map(str, mhz))} MHz" if mhz else ""
    if host.container:
        return f"no cpufreq in this container ({virt}): the host owns CPU clocks{clock}"
    if (virt and virt != "none") or freq.hypervisor:
        what = virt if virt and virt != "none" else "CPU flag hypervisor"
        return f"no cpufreq in this VM ({what}): the hypervisor owns CPU clocks{clock}"
    return (
        f"no cpufreq driver ({CPUFREQ} is absent): the firmware owns CPU clocks, or "
        f"intel_pstate/acpi-cpufreq is not loaded{clock}"
    )


def _groups(values: dict[int, str]) -> list[str]:
    """``{cpu: value}`` -> ``["powersave: CPUs 0-3,8"]``, one line per distinct value."""
    by_value: dict[str, list[int]] = {}
    for cpu, value in values.items():
        by_value.setdefault(value, []).append(cpu)
    return [f"{value}: CPUs {format_cpulist(cpus)}" for value, cpus in sorted(by_value.items())]


def _all_equal(
    freq: CpuFreqValue, knob: str, values: dict[int, str | None], want: str, fix: str
) -> Outcome:
    """Every CPU's ``knob`` is ``want`` (performance, unless the settings say otherwise)."""
    shown = {cpu: value or "unreadable" for cpu, value in values.items()}
    drivers = ", ".join(freq.drivers) or "unknown driver"
    others = {cpu: value for cpu, value in shown.items() if value != want}
    if not others:
        return passed(f"{knob}={want} on all {len(shown)} CPUs ({drivers})", f"{want} on every CPU")
    return failed(
        "; ".join(_groups(others)) + f" ({len(others)} of {len(shown)} CPUs, {drivers})",
        f"{want} on every CPU",
        fix,
        tuple(_groups(shown)),
    )


@check(
    id="CPU001",
    name="governor-performance",
    title="CPU frequency governor is performance",
    category="cpu",
    severity=Severity.HIGH,
    source="seed 004 §22 #2, §7.4 (CPU Governor and Power Profile)",
    facts=(CpuFreq, HostInfo),
)
def governor_performance(facts: FactValues, settings: HostSettings) -> Outcome:
    freq = facts[CpuFreq]
    if not freq.available:
        return skipped(no_cpufreq_reason(facts, freq))
    want = settings.cpu_governor
    return _all_equal(
        freq,
        "scaling_governor",
        {c.cpu: c.governor for c in freq.cpus},
        want,
        f"echo {want} | sudo tee {CPUFREQ}/scaling_governor   {PERSIST}",
    )


@check(
    id="CPU002",
    name="epp-performance",
    title="Energy-performance preference (EPP) is performance",
    category="cpu",
    severity=Severity.HIGH,
    source="seed 004 §22 #3, §7.4 (CPU Governor and Power Profile)",
    facts=(CpuFreq, HostInfo),
)
def epp_performance(facts: FactValues, settings: HostSettings) -> Outcome:
    freq = facts[CpuFreq]
    if not freq.available:
        return skipped(no_cpufreq_reason(facts, freq))
    with_epp = {c.cpu: c.epp for c in freq.cpus if c.epp is not None}
    if not with_epp:
        drivers = ", ".join(freq.drivers) or "its cpufreq driver"
        return skipped(
            f"no CPU exposes energy_performance_preference (driver {drivers}; EPP exists with "
            "intel_pstate or amd-pstate in active mode)"
        )
    want = settings.cpu_epp
    return _all_equal(
        freq,
        "energy_performance_preference",
        dict(with_epp),
        want,
        f"echo {want} | sudo tee {CPUFREQ}/energy_performance_preference   "
        "# after the governor (CPU001); persistently: tuned or the llmtune cpu deploy",
    )


def _span(values: Iterable[float], fmt: Callable[[float], str]) -> str:
    ordered = sorted(values)
    low, high = fmt(ordered[0]), fmt(ordered[-1])
    return low if low == high else f"{low}-{high}"


@check(
    id="CPU003",
    name="cpu-clock-near-max",
    title="P-core clocks reach their maximum",
    category="cpu",
    severity=Severity.MEDIUM,
    source="seed 004 §22 #4, §7.4 (Verify actual P-core frequency near max boost)",
    facts=(CpuFreq, CpuTopology, HostInfo),
)
def cpu_clock_near_max(facts: FactValues, settings: HostSettings) -> Outcome:
    freq = facts[CpuFreq]
    if not freq.available:
        return skipped(no_cpufreq_reason(facts, freq))
    topology = facts[CpuTopology]
    pcores = set(topology.pcores) or {c.cpu for c in freq.cpus}
    clocks: list[tuple[float, int, int]] = []  # (current MHz, max MHz, cpu)
    for info in freq.cpus:
        current = freq.current_mhz(info.cpu)
        if info.cpu in pcores and info.max_mhz and current is not None:
            clocks.append((current, info.max_mhz, info.cpu))
    if not clocks:
        return skipped("cpufreq exposes no cpuinfo_max_freq/current clock for the P-cores")
    top = sorted(clocks, key=lambda c: (-c[0], c[2]))[:TOP_CLOCKS]
    ratio = settings.cpu_mhz_min_ratio
    which = "P-core" if topology.hybrid else "CPU"
    observed = (
        f"highest {len(top)} {which} clocks {_span((c[0] for c in top), lambda v: f'{v:.0f}')} "
        f"MHz of max {_span((c[1] for c in top), lambda v: f'{v:.0f}')} MHz "
        f"({_span((c[0] / c[1] for c in top), lambda v: f'{v:.0%}')})"
    )
    expected = f">= {ratio:.0%} of max on the {len(top)} fastest {which}s"
    details = tuple(f"cpu {cpu}: {cur:.0f} / {mx} MHz ({cur / mx:.0%})" for cur, mx, cpu in top)
    if all(cur >= ratio * mx for cur, mx, _ in top):
        return passed(observed, expected, details)
    return warned(
        observed,
        expected,
        "idle cores clock down: re-check under load (`grep 'cpu MHz' /proc/cpuinfo | sort -k4 -rn"
        " | head -6` while llama-bench runs); if still low, set governor and EPP to performance"
        " (CPU001, CPU002), then check cooling (THM001) and the BIOS power limits (PL1/PL2)",
        details,
    )


@check(
    id="CPU004",
    name="hybrid-pcores",
    title="Hybrid CPU: P-cores identified for pinning",
    category="cpu",
    severity=Severity.MEDIUM,
    source="seed 004 §6.3, §14.3, §22 Known TG Variability Root Causes (E-cores in thread range)",
    facts=(CpuTopology,),
)
def hybrid_pcores(facts: FactValues, settings: HostSettings) -> Outcome:
    topology = facts[CpuTopology]
    if not topology.hybrid:
        if not topology.cpus:
            return skipped("CPU topology could not be read (/sys/devices/system/cpu)")
        return skipped(f"not a hybrid CPU: all {topology.threads} CPUs are one core type")
    pcores = format_cpulist(topology.pcore_cpus)
    ecores = format_cpulist(topology.ecore_cpus)
    p_physical = topology.pcore_physical_cores
    return passed(
        f"P-cores {pcores} ({p_physical} cores), E-cores {ecores} (from {topology.hybrid_source})",
        "inference on the P-cores only",
        (
            f"pin: taskset -c {pcores} llama-server ... -t {p_physical}",
            f"service: CPUAffinity={pcores} (systemd unit [Service])",
        ),
    )
