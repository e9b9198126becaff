"""The llmtune tuned profile: throughput-performance plus what llama-server needs."""

from __future__ import annotations

from llmtune.facts.tuned import THROUGHPUT_PERFORMANCE
from llmtune.settings import HostSettings


def render_profile(settings: HostSettings, manage_thp: bool) -> str:
    """tuned.conf text. Sections merge with the included profile's; ours win (tuned's loader)."""
    lines = [
        "# Written by llmtune (deploys/power.py); changes here are overwritten on the next apply.",
        "[main]",
        "summary=llmtune: throughput-performance for llama.cpp inference",
        f"include={THROUGHPUT_PERFORMANCE}",
        "",
        "[cpu]",
        f"governor={settings.cpu_governor}",
        f"energy_performance_preference={settings.cpu_epp}",
    ]
    if manage_thp:
        lines += ["", "[vm]", f"transparent_hugepages={settings.thp}"]
    return "\n".join(lines) + "\n"
