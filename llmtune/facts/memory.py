"""Memory facts: transparent hugepages, RAM modules (SMBIOS), swap, RAM copy bandwidth."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from importlib import resources

from llmtune.facts.probe import (
    LlmtuneFact,
    ToolOutput,
    c_locale,
    join,
    parse_grep_h,
    parse_tool,
    read_files,
    section,
    split_sections,
    sysroot,
    tool,
)

THP_DIR = "/sys/kernel/mm/transparent_hugepage"


def selected_choice(line: str | None) -> str | None:
    """The bracketed choice of a sysfs selector line: ``always [madvise] never`` -> ``madvise``."""
    if line is None:
        return None
    match = re.search(r"\[([^\]]+)\]", line)
    return match.group(1) if match else line.strip() or None


@dataclass(frozen=True)
class ThpValue:
    """Example: ``ThpValue(enabled="madvise", defrag="madvise")``.

    None where the kernel has no THP.
    """

    enabled: str | None = None
    defrag: str | None = None


class Thp(LlmtuneFact[ThpValue]):
    """Transparent hugepage mode (enabled, defrag) from sysfs."""

    def command(self, root: str = "") -> str:
        files = [sysroot(root, f"{THP_DIR}/enabled"), sysroot(root, f"{THP_DIR}/defrag")]
        return c_locale(read_files(files))

    def process(self, output: list[str]) -> ThpValue:
        values = parse_grep_h(output)
        by_name = {path.rsplit("/", 1)[-1]: "\n".join(v) for path, v in values.values.items()}
        return ThpValue(
            enabled=selected_choice(by_name.get("enabled")),
            defrag=selected_choice(by_name.get("defrag")),
        )


# --- RAM modules (SMBIOS type 17 through dmidecode) -------------------------------------------

# dmidecode lives in sbin, which a non-root user's PATH often lacks: without this the tool would
# look "not installed" to a user who only needs sudo.
SBIN_PATH = 'export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin";'


class DmiStatus(str, Enum):
    OK = "ok"
    MISSING = "missing"  # dmidecode is not installed
    NO_DMI = "no-dmi"  # no SMBIOS table (VMs, containers)
    NOT_ROOT = "not-root"  # the table exists but only root may read it
    FAILED = "failed"  # anything else; ``reason`` holds dmidecode's message


@dataclass(frozen=True)
class MemoryModule:
    """One SMBIOS Memory Device (a DIMM slot), values as dmidecode prints them, stripped.

    Speeds are in MT/s: SMBIOS stores MT/s; dmidecode before 3.0 printed the same number with the
    unit "MHz", so ``1333 MHz`` there is 1333 MT/s. None where dmidecode says "Unknown".
    """

    locator: str
    bank_locator: str = ""
    populated: bool = False
    size: str = ""
    size_mib: int | None = None
    type: str = ""
    speed: str = ""
    speed_mts: int | None = None
    configured: str = ""
    configured_mts: int | None = None
    manufacturer: str = ""
    part_number: str = ""


@dataclass(frozen=True)
class MemoryModulesValue:
    """Example (an AM5 desktop, 2 of 4 slots filled)::

    MemoryModulesValue(status=DmiStatus.OK, reason="", version="3.3", uid=0, modules=(
        MemoryModule(locator="DIMM 0", bank_locator="P0 CHANNEL A", populated=False,
                     size="No Module Installed", type="Unknown", speed="Unknown", ...),
        MemoryModule(locator="DIMM 1", bank_locator="P0 CHANNEL A", populated=True,
                     size="32 GB", size_mib=32768, type="DDR5", speed="4800 MT/s",
                     speed_mts=4800, configured="4800 MT/s", configured_mts=4800,
                     manufacturer="Corsair", part_number="CMH64GX5M2B5600Z36"), ...))
    """

    status: DmiStatus
    reason: str = ""
    version: str = ""
    uid: int | None = None
    modules: tuple[MemoryModule, ...] = ()

    @property
    def populated(self) -> tuple[MemoryModule, ...]:
        return tuple(m for m in self.modules if m.populated)


_SIZE_UNITS = {"kB": 1 / 1024, "KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 1024 * 1024}
# What dmidecode prints as the size of an empty slot.
_EMPTY_SIZES = ("no module installed",)


def parse_size_mib(text: str) -> int | None:
    match = re.match(r"(\d+)\s*(kB|KB|MB|GB|TB)\b", text.strip())
    if not match:
        return None
    return int(int(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_speed_mts(text: str) -> int | None:
    """``4800 MT/s`` or (dmidecode < 3.0) ``1333 MHz`` -> the number; ``Unknown`` -> None."""
    match = re.match(r"(\d+)\s*(MT/s|MHz)\b", text.strip())
    value = int(match.group(1)) if match else 0
    return value or None


def _module(fields: dict[str, str]) -> MemoryModule:
    size = fields.get("Size", "")
    size_mib = parse_size_mib(size)
    populated = size.lower() not in _EMPTY_SIZES and bool(size) and size_mib != 0
    # dmidecode 3.1/3.2 still call it "Configured Clock Speed"; 3.3 on "Configured Memory Speed".
    configured = fields.get("Configured Memory Speed", fields.get("Configured Clock Speed", ""))
    return MemoryModule(
        locator=fields.get("Locator", ""),
        bank_locator=fields.get("Bank Locator", ""),
        populated=populated,
        size=size,
        size_mib=size_mib,
        type=fields.get("Type", ""),
        speed=fields.get("Speed", ""),
        speed_mts=parse_speed_mts(fields.get("Speed", "")),
        configured=configured,
        configured_mts=parse_speed_mts(configured),
        manufacturer=fields.get("Manufacturer", ""),
        part_number=fields.get("Part Number", ""),
    )


def parse_memory_devices(lines: Iterable[str]) -> tuple[MemoryModule, ...]:
    """The Memory Device records of dmidecode's output; other record types are ignored.

    A record starts at its unindented title line ``Memory Device`` and holds the indented
    ``Key: Value`` lines after it; an empty or unindented line ends it.
    """
    modules: list[MemoryModule] = []
    current: dict[str, str] | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if line[:1] in ("\t", " ") and line.strip():
            if current is not None and line.count("\t") <= 1:
                key, sep, value = line.strip().partition(":")
                if sep:
                    current.setdefault(key.strip(), value.strip())
            continue
        if current is not None:
            modules.append(_module(current))
            current = None
        if line.strip() == "Memory Device":
            current = {}
    if current is not None:
        modules.append(_module(current))
    return tuple(modules)


def _dmi_status(out: ToolOutput, uid: int | None) -> tuple[DmiStatus, str]:
    if out.missing:
        return DmiStatus.MISSING, "dmidecode is not installed"
    text = out.text()
    message = "; ".join(
        line.strip() for line in out.lines if ": " in line and not line.startswith("#")
    )
    if re.search(r"Permission denied|Operation not permitted", text) and uid != 0:
        return DmiStatus.NOT_ROOT, message or "permission denied"
    if re.search(r"No such file or directory|No SMBIOS nor DMI entry point found", text):
        return DmiStatus.NO_DMI, message or "no SMBIOS/DMI table"
    # dmidecode's own first line is its version: the messages say more than out.brief().
    return DmiStatus.FAILED, message or out.brief()


class MemoryModules(LlmtuneFact[MemoryModulesValue]):
    """The RAM modules SMBIOS lists (``dmidecode -t memory``; root only, absent in most VMs)."""

    def command(self) -> str:
        return c_locale(
            SBIN_PATH
            + " "
            + join(
                section("uid", "id -u"),
                section("dmidecode", tool("dmidecode", "dmidecode -t memory")),
            )
        )

    def process(self, output: list[str]) -> MemoryModulesValue:
        parts = split_sections(output)
        uid_text = next((x.strip() for x in parts.get("uid", []) if x.strip()), "")
        uid = int(uid_text) if uid_text.isdigit() else None
        if "dmidecode" not in parts:
            return MemoryModulesValue(DmiStatus.FAILED, "no output from the probe", uid=uid)
        out = parse_tool(parts["dmidecode"])
        version = next(
            (x[len("# dmidecode ") :].strip() for x in out.lines if x.startswith("# dmidecode ")),
            "",
        )
        if out.ok:
            modules = parse_memory_devices(out.lines)
            return MemoryModulesValue(DmiStatus.OK, "", version, uid, modules)
        status, reason = _dmi_status(out, uid)
        return MemoryModulesValue(status, reason, version, uid)


# Channel names in slot labels: "P0 CHANNEL A", "P0_Node0_Channel0_Dimm0",
# "Controller0-ChannelA-DIMM0" (the letter or number right after "channel").
_CHANNEL = re.compile(r"channel[\s_-]*([a-z](?![a-z])|\d+)", re.IGNORECASE)
# Slot names that carry the channel as a letter: "DIMMA1", "DIMM_B2", "CPU1_DIMM_A1".
_DIMM_LETTER = re.compile(r"dimm[\s_-]*([a-z])[\s_-]*\d", re.IGNORECASE)
# What tells two channels with the same name apart: the socket or memory controller
# ("P0", "CPU1", "Controller1"; Intel names a DDR5 desktop's channels Controller0/1-ChannelA).
_SOCKET = re.compile(r"(?:^|[^a-z])(p|cpu|proc|socket|controller)[\s_-]*(\d+)", re.IGNORECASE)


def channel_key(module: MemoryModule) -> str | None:
    """A name for the memory channel of a slot, from its labels; None when they do not say."""
    text = f"{module.bank_locator} {module.locator}"
    match = _CHANNEL.search(text) or _DIMM_LETTER.search(module.locator)
    if not match:
        return None
    where = "".join(f"{m.group(1).lower()}{m.group(2)}/" for m in _SOCKET.finditer(text))
    return f"{where}{match.group(1).upper()}"


def populated_channels(modules: Iterable[MemoryModule]) -> int | None:
    """How many channels the populated modules sit in; None if any slot's labels do not tell."""
    keys = [channel_key(m) for m in modules if m.populated]
    if not keys or any(k is None for k in keys):
        return None
    return len(set(keys))


# --- Swap --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwapDevice:
    """A line of /proc/swaps (sizes in KiB)."""

    path: str
    type: str
    size_kib: int
    used_kib: int
    priority: int


@dataclass(frozen=True)
class SwapValue:
    """Example (no swap, nothing swapped since boot)::

    SwapValue(swappiness=60, swaps_readable=True, devices=(), total_kib=0, free_kib=0,
              pswpin=0, pswpout=0, pswpin_delta=0, pswpout_delta=0, interval_s=0.25)

    ``pswpin``/``pswpout`` are pages swapped in/out since boot (at the end of the sample), the
    deltas what moved during the ``interval_s`` sample; None where /proc/vmstat lacks them.
    ``swaps_readable`` is False when /proc/swaps does not exist (a kernel built without swap).
    """

    swappiness: int | None = None
    swaps_readable: bool = False
    devices: tuple[SwapDevice, ...] = ()
    total_kib: int | None = None
    free_kib: int | None = None
    pswpin: int | None = None
    pswpout: int | None = None
    pswpin_delta: int | None = None
    pswpout_delta: int | None = None
    interval_s: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.devices)


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _key_values(lines: Iterable[str]) -> dict[str, str]:
    """``pswpin 12`` (vmstat) or ``SwapTotal:  0 kB`` (meminfo) -> {name: first number}."""
    values: dict[str, str] = {}
    for line in lines:
        words = line.replace(":", " ").split()
        if len(words) >= 2:
            values.setdefault(words[0], words[1])
    return values


def parse_proc_swaps(lines: Iterable[str]) -> tuple[SwapDevice, ...]:
    devices: list[SwapDevice] = []
    for line in lines:
        # The path comes first and may itself contain spaces (the kernel escapes them as \040).
        words = line.rsplit(None, 4)
        if len(words) != 5 or words[0] == "Filename":
            continue
        size, used, priority = (_int(w) for w in words[2:])
        if size is None or used is None or priority is None:
            continue
        devices.append(SwapDevice(words[0], words[1], size, used, priority))
    return tuple(devices)


def _delta(start: int | None, end: int | None) -> int | None:
    return None if start is None or end is None else max(0, end - start)


class Swap(LlmtuneFact[SwapValue]):
    """Swap devices, vm.swappiness and the swap-in/out counters sampled ``interval_s`` apart."""

    # Seconds between the two /proc/vmstat readings: short enough for the quick level.
    interval_s = 0.25
    # The counters move between two readings: two collectors may differ.
    stable = False

    def command(self, root: str = "") -> str:
        vmstat = f"grep -s -E '^(pswpin|pswpout) ' {sysroot(root, '/proc/vmstat')}; true"
        meminfo = sysroot(root, "/proc/meminfo")
        return c_locale(
            join(
                section(
                    "swappiness", f"cat {sysroot(root, '/proc/sys/vm/swappiness')} 2>/dev/null"
                ),
                section("swaps", f"cat {sysroot(root, '/proc/swaps')} 2>/dev/null"),
                section("meminfo", f"grep -s -E '^(SwapTotal|SwapFree):' {meminfo}"),
                section("vmstat-start", vmstat),
                f"sleep {self.interval_s}",
                section("vmstat-end", vmstat),
            )
        )

    def process(self, output: list[str]) -> SwapValue:
        parts = split_sections(output)
        meminfo = _key_values(parts.get("meminfo", []))
        start = _key_values(parts.get("vmstat-start", []))
        end = _key_values(parts.get("vmstat-end", []))
        pswpin, pswpout = _int(end.get("pswpin")), _int(end.get("pswpout"))
        return SwapValue(
            swappiness=_int(next(iter(parts.get("swappiness", [])), None)),
            swaps_readable=bool(parts.get("swaps")),
            devices=parse_proc_swaps(parts.get("swaps", [])),
            total_kib=_int(meminfo.get("SwapTotal")),
            free_kib=_int(meminfo.get("SwapFree")),
            pswpin=pswpin,
            pswpout=pswpout,
            pswpin_delta=_delta(_int(start.get("pswpin")), pswpin),
            pswpout_delta=_delta(_int(start.get("pswpout")), pswpout),
            interval_s=self.interval_s,
        )


class SwapSampleLong(Swap):
    """The same reading over a longer sample, for the full level: catches occasional swapping."""

    interval_s = 5.0
    timeout_s = 30.0


# --- RAM copy bandwidth ------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryBandwidthValue:
    """Example (this 2-vCPU VM)::

    MemoryBandwidthValue(available=True, reason="", threads=2, buffer_bytes=1006632960,
                         llc_bytes=503316480, bytes_moved=69457674240, seconds=1.541)

    ``bytes_moved`` counts the bytes read plus the bytes written by every thread together;
    ``buffer_bytes`` is one side (source) of the copy, all threads together.
    """

    available: bool
    reason: str = ""
    threads: int = 0
    buffer_bytes: int = 0
    llc_bytes: int = 0
    bytes_moved: int = 0
    seconds: float = 0.0

    @property
    def gb_per_s(self) -> float:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds > 0 else 0.0


def probe_script() -> str:
    """The probe's source, shipped inside the command (the host needs only python3)."""
    return resources.files("llmtune.facts").joinpath("probes/mem_bandwidth.py").read_text()


class MemoryBandwidth(LlmtuneFact[MemoryBandwidthValue]):
    """RAM copy bandwidth measured on the host with python3's ctypes.memmove, one thread per CPU."""

    timeout_s = 30.0
    stable = False
    exclusive = True

    def command(self) -> str:
        return c_locale(tool("python3", f"python3 -c {shlex.quote(probe_script())}"))

    def process(self, output: list[str]) -> MemoryBandwidthValue:
        out = parse_tool(output)
        if out.missing:
            return MemoryBandwidthValue(False, "python3 is not installed on the host")
        values = dict(line.strip().partition("=")[::2] for line in out.lines if "=" in line)
        if out.rc != 0:
            # A traceback's last line says what went wrong; the first says only "Traceback".
            last = next((x.strip() for x in reversed(out.lines) if x.strip()), "")
            status = "did not finish" if out.rc is None else f"exited {out.rc}"
            return MemoryBandwidthValue(
                False, f"the probe {status}" + (f": {last}" if last else "")
            )
        if "error" in values:
            return MemoryBandwidthValue(False, f"the probe failed: {values['error']}")
        try:
            value = MemoryBandwidthValue(
                available=True,
                threads=int(values["threads"]),
                buffer_bytes=int(values["buffer_bytes"]),
                llc_bytes=int(values.get("llc_bytes", "0")),
                bytes_moved=int(values["bytes"]),
                seconds=float(values["seconds"]),
            )
        except (KeyError, ValueError):
            return MemoryBandwidthValue(False, "the probe printed no result")
        if value.seconds <= 0 or value.bytes_moved <= 0:
            return MemoryBandwidthValue(False, "the probe measured nothing")
        return value
