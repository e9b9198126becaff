"""NVIDIA GPU facts (nvidia-smi). The value types below are shared with other checks (headless).

- ``NvidiaGpus``: ``nvidia-smi --query-gpu`` (identity, VRAM, PCIe link, temperature, clock event
  reasons) for every GPU.
- ``GpuProcesses``: the processes holding VRAM, graphics ones included, from plain
  ``nvidia-smi``'s Processes table.
- ``PcieLoadProbe`` (full level): the PCIe link read while the link is loaded
  (``probes/pcie_load.py``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmtune.facts.probe import LlmtuneFact, ToolOutput, c_locale, parse_tool, tool

# NVML's clocks event reason bits (nvml.h ``nvmlClocksEventReason*``, called
# ``nvmlClocksThrottleReason*`` before driver 535; same values).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "GpuIdle"),
    (0x2, "ApplicationsClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
)

_BASE_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "compute_cap",
    "memory.total",
    "memory.used",
    "memory.free",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "temperature.gpu",
    "driver_version",
)
# Tried in order while nvidia-smi answers 'Field "..." is not a valid field to query.': drivers
# before 535 only know clocks_throttle_reasons.active, and drivers before ~510 lack compute_cap.
QUERY_FIELD_SETS: tuple[tuple[str, ...], ...] = (
    (*_BASE_FIELDS, "clocks_event_reasons.active"),
    (*_BASE_FIELDS, "clocks_throttle_reasons.active"),
    (*(f for f in _BASE_FIELDS if f != "compute_cap"), "clocks_throttle_reasons.active"),
)
_REASON_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")

# A header cell: a field name, with its unit in brackets when units are printed.
_HEADER_CELL = re.compile(r"^[a-z][A-Za-z0-9_.]*(?:\s*\[[^\]]*\])?$")
_UNIT = re.compile(r"\s*\[[^\]]*\]$")
# A number with an optional unit: "81559 MiB", "121.78 W", "16x", "0 %", "35".
_NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)\s*[A-Za-z%/]*$")


def decode_clock_event_reasons(mask: int | None) -> tuple[str, ...]:
    """NVML reason names of a bitmask; unknown bits as ``Unknown(0x...)``.

    >>> decode_clock_event_reasons(0x21)
    ('GpuIdle', 'SwThermalSlowdown')
    """
    if mask is None:
        return ()
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    known = 0
    for bit, _ in CLOCK_EVENT_REASONS:
        known |= bit
    if mask & ~known:
        names.append(f"Unknown(0x{mask & ~known:x})")
    return tuple(names)


def smi_value(cell: str | None) -> str | None:
    """A CSV cell, or None for what nvidia-smi prints when it has no value.

    ``[N/A]``, ``N/A``, ``[Not Supported]``, ``[Requested functionality has been deprecated]``,
    ``[Unknown Error]`` and empty cells are all "no value".
    """
    if cell is None:
        return None
    text = cell.strip()
    if not text or (text.startswith("[") and text.endswith("]")):
        return None
    if text.upper() in ("N/A", "NOT SUPPORTED", "UNKNOWN ERROR"):
        return None
    return text


def smi_number(cell: str | None) -> float | None:
    """A numeric cell with or without its unit (``81559 MiB`` or ``81559``, ``16x``)."""
    text = smi_value(cell)
    match = _NUMBER.match(text) if text else None
    return float(match.group(1)) if match else None


def smi_int(cell: str | None) -> int | None:
    number = smi_number(cell)
    return None if number is None else round(number)


def smi_mask(cell: str | None) -> int | None:
    text = smi_value(cell)
    if not text:
        return None
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def parse_query_csv(
    lines: Iterable[str], headerless: Sequence[Sequence[str]] = ()
) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-*=... --format=csv[,noheader][,nounits]`` as ``{field: cell}``.

    The header names the columns (units in brackets are dropped), so the parser reads any field
    list and order; rows of the wrong width are skipped and a later header starts a new table.
    Before any header, a row as wide as one of the ``headerless`` field lists is read with it
    (``noheader`` output of a known query); other lines there (warnings) are skipped.
    """
    header: list[str] | None = None
    by_width = {len(fields): list(fields) for fields in reversed(headerless)}
    rows: list[dict[str, str]] = []
    for line in lines:
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) >= 2 and all(_HEADER_CELL.match(cell) for cell in cells):
            header = [_UNIT.sub("", cell) for cell in cells]
            continue
        names = header if header is not None else by_width.get(len(cells))
        if names is not None and len(cells) == len(names) and len(cells) >= 2:
            rows.append(dict(zip(names, cells, strict=True)))
    return rows


def tool_reason(output: ToolOutput, name: str = "nvidia-smi") -> str:
    """Why a tool gave no answer: not installed, cut short, or its exit status and message."""
    if output.missing:
        return f"{name} is not installed"
    if output.rc is None:
        first = next((line.strip() for line in output.lines if line.strip()), "")
        return f"{name} did not finish" + (f" (it printed: {first})" if first else "")
    return f"{name} failed ({output.brief()})"


@dataclass(frozen=True)
class NvidiaGpu:
    """One GPU as ``nvidia-smi --query-gpu`` reports it; None where it printed no value.

    Example (the H100 VM)::

        NvidiaGpu(index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-...", bus_id="00000000:00:06.0",
                  compute_cap="9.0", memory_total_mib=81559, memory_used_mib=0,
                  memory_free_mib=81079, pcie_gen_current=5, pcie_gen_max=5,
                  pcie_width_current=16, pcie_width_max=16, temperature_c=35,
                  clock_event_mask=0x1, clock_event_reasons=("GpuIdle",))
    """

    index: int | None = None
    name: str = ""
    uuid: str = ""
    bus_id: str = ""
    compute_cap: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    memory_free_mib: int | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    temperature_c: int | None = None
    clock_event_mask: int | None = None
    clock_event_reasons: tuple[str, ...] = ()

    @property
    def cuda_arch(self) -> int | None:
        """The compute capability as CMAKE_CUDA_ARCHITECTURES spells it: "9.0" -> 90."""
        major, sep, minor = (self.compute_cap or "").partition(".")
        if not (sep and major.isdigit() and minor.isdigit()):
            return None
        return int(major) * 10 + int(minor)

    @property
    def label(self) -> str:
        return f"GPU {self.index if self.index is not None else '?'} ({self.name or 'unknown'})"


@dataclass(frozen=True)
class NvidiaGpusValue:
    """``available`` is False when nvidia-smi is missing or failed; ``reason`` then says why.

    Example: ``NvidiaGpusValue(available=True, installed=True, driver="580.159.04",
    gpus=(NvidiaGpu(index=0, ...),))``; without a driver: ``NvidiaGpusValue(available=False,
    installed=True, reason="nvidia-smi failed (exit status 9: NVIDIA-SMI has failed because it
    couldn't communicate with the NVIDIA driver. ...)")``.
    """

    available: bool
    reason: str = ""
    # nvidia-smi is on PATH (it may still have failed).
    installed: bool = False
    driver: str = ""
    gpus: tuple[NvidiaGpu, ...] = ()
    # nvidia-smi's own words when it failed (all lines), for the check's details.
    message: tuple[str, ...] = ()


def _gpu_from_row(row: dict[str, str]) -> NvidiaGpu:
    mask_cell = next((row[f] for f in _REASON_FIELDS if f in row), None)
    mask = smi_mask(mask_cell)
    return NvidiaGpu(
        index=smi_int(row.get("index")),
        name=smi_value(row.get("name")) or "",
        uuid=smi_value(row.get("uuid")) or "",
        bus_id=smi_value(row.get("pci.bus_id")) or "",
        compute_cap=smi_value(row.get("compute_cap")),
        memory_total_mib=smi_int(row.get("memory.total")),
        memory_used_mib=smi_int(row.get("memory.used")),
        memory_free_mib=smi_int(row.get("memory.free")),
        pcie_gen_current=smi_int(row.get("pcie.link.gen.current")),
        pcie_gen_max=smi_int(row.get("pcie.link.gen.max")),
        pcie_width_current=smi_int(row.get("pcie.link.width.current")),
        pcie_width_max=smi_int(row.get("pcie.link.width.max")),
        temperature_c=smi_int(row.get("temperature.gpu")),
        clock_event_mask=mask,
        clock_event_reasons=decode_clock_event_reasons(mask),
    )


def parse_nvidia_gpus(lines: Sequence[str]) -> NvidiaGpusValue:
    """Parse the output of :class:`NvidiaGpus`'s command (a :func:`tool` run of nvidia-smi)."""
    output = parse_tool(lines)
    if not output.ok:
        return NvidiaGpusValue(
            available=False,
            reason=tool_reason(output),
            installed=not output.missing and output.rc is not None,
            message=tuple(line for line in output.lines if line.strip()),
        )
    rows = parse_query_csv(output.lines, QUERY_FIELD_SETS)
    gpus = tuple(_gpu_from_row(row) for row in rows)
    driver = next((smi_value(r.get("driver_version")) or "" for r in rows), "")
    if not gpus:
        first = next((line.strip() for line in output.lines if line.strip()), "")
        return NvidiaGpusValue(
            available=False,
            reason="nvidia-smi listed no GPU" + (f": {first}" if first else ""),
            installed=True,
            message=tuple(line for line in output.lines if line.strip()),
        )
    return NvidiaGpusValue(available=True, installed=True, driver=driver, gpus=gpus)


def _query_command() -> str:
    """nvidia-smi --query-gpu, retried with older field names while it rejects a field."""
    sets = " ".join(shlex.quote(",".join(fields)) for fields in QUERY_FIELD_SETS)
    # A subshell so that tool() sees one command whose status is the last query's.
    return (
        f"(for q in {sets}; do "
        'out=$(nvidia-smi --query-gpu="$q" --format=csv,nounits 2>&1); rc=$?; '
        'case "$out" in *"not a valid field"*) continue;; esac; break; done; '
        'printf "%s\\n" "$out"; exit $rc)'
    )


class NvidiaGpus(LlmtuneFact[NvidiaGpusValue]):
    """Every NVIDIA GPU: identity, VRAM, PCIe link (idle), temperature, clock event reasons.

    The CSV is asked for with its header (``--format=csv,nounits``) so the parser maps columns by
    name whichever field list the driver accepted.
    """

    # Temperature, VRAM use and clock event reasons change between two readings.
    stable = False

    def command(self) -> str:
        return c_locale(tool("nvidia-smi", _query_command()))

    def process(self, output: list[str]) -> NvidiaGpusValue:
        return parse_nvidia_gpus(output)


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


# A row of the Processes table, in both layouts (runs of spaces shortened here):
#   old: "|    0      1495      G   /usr/lib/xorg/Xorg                           172MiB |"
#   new: "|    0   N/A  N/A            2165    C+G   /usr/bin/kwin_wayland           25MiB |"
# The GI/CI pair is optional; a process name may hold spaces; the usage is "NMiB" or "N/A".
_PROCESS_ROW = re.compile(
    r"^\|\s*(?P<gpu>\d+|N/A)\s+(?:(?P<gi>\d+|N/A)\s+(?P<ci>\d+|N/A)\s+)?(?P<pid>\d+)\s+"
    r"(?P<type>[CGM](?:\+[CGM])*)\s+(?P<name>\S.*?)\s+(?P<used>\d+\s*MiB|N/A)\s*\|\s*$"
)


def parse_process_table(lines: Iterable[str]) -> tuple[GpuProcess, ...]:
    """The rows of the Processes section of plain ``nvidia-smi`` output."""
    processes: list[GpuProcess] = []
    in_section = False
    for line in lines:
        if "Processes:" in line:
            in_section = True
            continue
        if not in_section:
            continue
        match = _PROCESS_ROW.match(line.rstrip())
        if not match:
            continue
        used = match.group("used")
        processes.append(
            GpuProcess(
                gpu=int(match.group("gpu")) if match.group("gpu").isdigit() else None,
                pid=int(match.group("pid")),
                type=match.group("type"),
                name=match.group("name"),
                used_mib=int(used[:-3]) if used.endswith("MiB") else None,
            )
        )
    return tuple(processes)


class GpuProcesses(LlmtuneFact[GpuProcessesValue]):
    """Processes holding VRAM, graphics ones (Xorg, gnome-shell, kwin_wayland...) included.

    Plain ``nvidia-smi`` is read rather than ``--query-compute-apps``: the latter lists compute
    processes only (type C and C+G), and the display servers and compositors this fact exists
    to find are type G. ``nvidia-smi pmon`` lists both but samples for a second and reports
    memory only with ``-s m`` on GPUs that support it; the table is one fast call.
    """

    # Processes come and go and their VRAM use moves between two readings.
    stable = False

    def command(self) -> str:
        return c_locale(tool("nvidia-smi", "nvidia-smi"))

    def process(self, output: list[str]) -> GpuProcessesValue:
        result = parse_tool(output)
        if not result.ok:
            return GpuProcessesValue(available=False, reason=tool_reason(result))
        if not any("Processes:" in line for line in result.lines):
            return GpuProcessesValue(
                available=False, reason="nvidia-smi printed no Processes table"
            )
        return GpuProcessesValue(available=True, processes=parse_process_table(result.lines))


# --- PCIe link under load (full level) ---------------------------------------------------------

PCIE_PROBE = Path(__file__).parent / "probes" / "pcie_load.py"
_PROBE_PREFIX = "pcie-load "


@dataclass(frozen=True)
class PcieLoadResult:
    """One GPU's link while host-to-device copies ran. Example (H100 VM)::

    PcieLoadResult(bus_id="0000:00:06.0", index=0, h2d_gb_s=52.1, gen_current=5, gen_max=5,
                   width_current=16, width_max=16)

    ``error`` says why the GPU could not be loaded; the link fields are None when nvidia-smi
    gave no reading during the load.
    """

    bus_id: str
    index: int | None = None
    h2d_gb_s: float | None = None
    gen_current: int | None = None
    gen_max: int | None = None
    width_current: int | None = None
    width_max: int | None = None
    error: str = ""

    @property
    def label(self) -> str:
        where = f"GPU {self.index}" if self.index is not None else "GPU"
        return f"{where} ({self.bus_id})" if self.bus_id else where


@dataclass(frozen=True)
class PcieLoadValue:
    """``available`` is False when nothing could be loaded (no python3, no libcuda.so.1, no
    device); ``reason`` says why."""

    available: bool
    reason: str = ""
    gpus: tuple[PcieLoadResult, ...] = ()


def _key_values(tokens: Sequence[str]) -> tuple[dict[str, str], str]:
    """Leading ``key=value`` tokens, and the rest of the line."""
    values: dict[str, str] = {}
    rest = list(tokens)
    while rest and "=" in rest[0] and not rest[0].startswith("="):
        key, _, value = rest.pop(0).partition("=")
        values[key] = value
    return values, " ".join(rest)


def _bigger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def parse_pcie_load(lines: Sequence[str]) -> PcieLoadValue:
    """Parse the probe's lines (see probes/pcie_load.py for the format)."""
    output = parse_tool(lines)
    if output.missing:
        return PcieLoadValue(available=False, reason="python3 is not installed")
    results: dict[str, PcieLoadResult] = {}
    smi_lines: dict[str, list[str]] = {}
    unavailable = ""
    order: list[str] = []
    for line in output.lines:
        if not line.startswith(_PROBE_PREFIX):
            continue
        kind, _, rest = line[len(_PROBE_PREFIX) :].partition(" ")
        if kind == "unavailable":
            unavailable = rest.strip()
            continue
        if kind == "smi":
            head, _, text = rest.partition(" ")
            bus = head[len("bus=") :] if head.startswith("bus=") else ""
            smi_lines.setdefault(bus, []).append(text)
            continue
        values, text = _key_values(rest.split())
        bus = values.get("bus", "") or f"cuda {values.get('cuda', '?')}"
        if bus not in order:
            order.append(bus)
        if kind == "result":
            gb_s = values.get("gb_s")
            try:
                rate = float(gb_s) if gb_s is not None else None
            except ValueError:
                rate = None
            results[bus] = PcieLoadResult(bus_id=values.get("bus", ""), h2d_gb_s=rate)
        elif kind == "error":
            results[bus] = PcieLoadResult(bus_id=values.get("bus", ""), error=text or "failed")
    gpus: list[PcieLoadResult] = []
    for bus in order:
        result = results[bus]
        index = gen = gen_max = width = width_max = None
        for row in parse_query_csv(smi_lines.get(bus, [])):
            index = smi_int(row.get("index")) if index is None else index
            gen = _bigger(gen, smi_int(row.get("pcie.link.gen.current")))
            gen_max = _bigger(gen_max, smi_int(row.get("pcie.link.gen.max")))
            width = _bigger(width, smi_int(row.get("pcie.link.width.current")))
            width_max = _bigger(width_max, smi_int(row.get("pcie.link.width.max")))
        gpus.append(
            PcieLoadResult(
                bus_id=result.bus_id,
                index=index,
                h2d_gb_s=result.h2d_gb_s,
                gen_current=gen,
                gen_max=gen_max,
                width_current=width,
                width_max=width_max,
                error=result.error,
            )
        )
    if gpus:
        return PcieLoadValue(available=True, gpus=tuple(gpus))
    if unavailable:
        return PcieLoadValue(available=False, reason=unavailable)
    if output.rc not in (None, 0):
        return PcieLoadValue(available=False, reason=f"the probe failed ({output.brief()})")
    return PcieLoadValue(available=False, reason="the probe printed no result")


class PcieLoadProbe(LlmtuneFact[PcieLoadValue]):
    """The PCIe link of each NVIDIA GPU read while ~2 s of host-to-device copies load it.

    Runs ``probes/pcie_load.py`` (stdlib python3 + the driver's libcuda.so.1) on the host; it
    changes no GPU setting. Without python3, the driver library or a device the value says why.
    """

    timeout_s = 60.0
    # It loads the PCIe link and reads a rate: it runs alone, and no two readings are equal.
    exclusive = True
    stable = False

    def command(self) -> str:
        script = PCIE_PROBE.read_text()
        return c_locale(tool("python3", f"python3 -c {shlex.quote(script)}"))

    def process(self, output: list[str]) -> PcieLoadValue:
        return parse_pcie_load(output)
