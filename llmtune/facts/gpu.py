"""NVIDIA GPU facts (nvidia-smi). The value types below are shared with other checks (headless)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuProcess:
    """A process holding GPU memory, as nvidia-smi lists it.

    ``type`` is nvidia-smi's: "C" compute, "G" graphics (display servers, compositors, browsers),
    "C+G" both. ``used_mib`` is None where the driver cannot tell (e.g. "N/A" in a VM).
    """

    gpu: int | None
    pid: int | None
    type: str
    name: str
    used_mib: int | None


@dataclass(frozen=True)
class GpuProcessesValue:
    """``available`` is False when nvidia-smi is missing or failed; ``reason`` then says why."""

    available: bool
    reason: str = ""
    processes: tuple[GpuProcess, ...] = ()
