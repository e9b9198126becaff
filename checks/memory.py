"""Checks of category memory: RAM speed and bandwidth, hugepages, swap."""

from __future__ import annotations

from llmtune.checks.registry import FactValues, check
from llmtune.facts.memory import Thp
from llmtune.findings import Outcome, Severity, failed, passed, skipped
from llmtune.settings import DoctorSettings

THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


@check(
    id="MEM003",
    name="thp-always",
    title="Transparent hugepages always on",
    category="memory",
    severity=Severity.MEDIUM,
    source="seed 004 §7.4 (Transparent Huge Pages)",
    facts=(Thp,),
)
def thp_always(facts: FactValues, settings: DoctorSettings) -> Outcome:
    thp = facts[Thp]
    if thp.enabled is None:
        return skipped("this kernel has no transparent hugepages (no sysfs THP knob)")
    if thp.enabled == "always":
        return passed(f"enabled={thp.enabled}, defrag={thp.defrag}", "always")
    return failed(
        f"enabled={thp.enabled}",
        "always",
        f"echo always | sudo tee {THP_ENABLED}   # persistently: the llmtune memory deploy",
    )
