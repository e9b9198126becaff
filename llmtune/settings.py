"""Host settings: what the deploys should make of a host, what the user knows that the host
cannot tell (the RAM kit's rated speed), and the doctor's thresholds.

Settings come from YAML mappings (an inventory's group_vars and host_vars, or doctor --settings);
every key is checked against the schema below before any host is read or changed, and a bad one
stops with the file, the key and what is allowed (exit 2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class SettingsError(ValueError):
    """A settings file or key is wrong; carries where, so the user can fix it."""

    def __init__(self, source: str, key: str | None, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "a positive integer"
    return None


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None else _positive_int(value)


def _ratio(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        return "a number greater than 0 and at most 1"
    return None


def _percent(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10000:
        return "a percentage of one CPU (e.g. 20, or 150 for one and a half CPUs)"
    return None


def _celsius(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 20 <= value <= 130:
        return "a temperature in °C between 20 and 130"
    return None


def _swappiness(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 200:
        return "an integer between 0 and 200"
    return None


def _names(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "a list of process names"
    return None


def _ref(value: Any) -> str | None:
    # A branch name would float: only tags (b1234, v1.2) and commits are pins.
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{7,40}|b\d+|v?\d+(\.\d+)+", value):
        return "a commit (7-40 hex digits) or a release tag like b8149 (never a branch)"
    return None


def _optional_path(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else "a file path"


def _count(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 50:
        return "an integer between 0 and 50"
    return None


def _url(value: Any) -> str | None:
    ok = isinstance(value, str) and re.match(r"^(https://|ssh://|git@|file://|/)", value)
    return None if ok else "a git URL (https://, ssh://, git@ or a path)"


def _cmake_defs(value: Any) -> str | None:
    pattern = re.compile(r"-D[A-Za-z0-9_]+(:[A-Z]+)?=\S*")
    if isinstance(value, list) and all(isinstance(v, str) and pattern.fullmatch(v) for v in value):
        return None
    return "a list of CMake definitions like -DGGML_CUDA_FORCE_MMQ=ON"


def _abs_path(value: Any) -> str | None:
    ok = value is None or (isinstance(value, str) and value.startswith("/") and "\n" not in value)
    return None if ok else "an absolute path on the host"


def _port(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return "a TCP port (1-65535)"
    return None


def _bind(value: Any) -> str | None:
    ok = isinstance(value, str) and re.fullmatch(r"[0-9A-Za-z.:_-]+", value)
    return None if ok else "an IP address or host name to listen on (e.g. 127.0.0.1)"


def _user(value: Any) -> str | None:
    ok = isinstance(value, str) and re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", value)
    return None if ok else "a system user name (lowercase letters, digits, '_', '-')"


def _alias(value: Any) -> str | None:
    ok = value is None or (isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9._:/-]+", value))
    return None if ok else "a model name without spaces or commas"


def _args(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) and "\n" not in v for v in value):
        return None
    return "a list of llama-server arguments, e.g. ['--metrics']"


def _optional_mib(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        return "a size in MiB (an integer, 0 or more)"
    return None


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(choices)

    return check


def _on_off_auto(value: Any) -> str | None:
    # YAML 1.1 reads a bare on/off as true/false: take them as meant.
    return None if isinstance(value, bool) or value in ("auto", "on", "off") else "auto, on or off"


def _profile_name(value: Any) -> str | None:
    ok = isinstance(value, str) and value and all(c.isalnum() or c in "-_." for c in value)
    return None if ok else "a tuned profile name (letters, digits, '-', '_', '.')"


Validator = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class HostSettings:
    """Every field is a settings key; the comment on each says what it means."""

    # --- what the deploys make of the host ---
    # Manage CPU power through tuned (install it, replace power-profiles-daemon, activate a
    # profile that includes throughput-performance). False: the cpu and memory deploys write
    # governor, EPP and THP themselves and persist them with systemd-tmpfiles.
    tuned: bool = True
    # The tuned profile llmtune writes and activates (it includes throughput-performance).
    tuned_profile: str = "llmtune"
    # Transparent hugepages mode the memory deploy sets (and MEM003 expects).
    thp: str = "always"
    # CPU frequency governor and energy-performance preference (CPU001, CPU002 expect them).
    cpu_governor: str = "performance"
    cpu_epp: str = "performance"
    # Boot to multi-user.target with the display manager disabled (SYS001 expects it).
    headless: bool = True
    # Also switch the running system to multi-user.target now (ends a running desktop session).
    headless_switch_now: bool = False
    # A RAM module below its rated speed fails the memory deploy ("fail") or only warns.
    ram_below_rated: str = "fail"

    # --- llama.cpp, built from source on the host ---
    # Build llama.cpp as part of deploys/all.py.
    llama_cpp_build: bool = True
    # The pinned source: a tag or commit (never a floating branch) of this git repository...
    llama_cpp_ref: str = "0c1e570"
    llama_cpp_git_url: str = "https://github.com/ggml-org/llama.cpp"
    # ...or a source tarball on the machine running the deploy, for offline hosts (its commit
    # and build number come from the JSON beside it, see scripts/llama_cpp_source.py).
    llama_cpp_source_tarball: str | None = None
    # CUDA build: "auto" when the host has NVIDIA GPUs, "on" (require them), "off" (CPU only).
    llama_cpp_cuda: str = "auto"
    llama_cpp_lto: bool = False
    # Extra CMake definitions, e.g. ["-DGGML_CUDA_FORCE_MMQ=ON"] (part of the build id).
    llama_cpp_cmake_extra: list[str] = field(default_factory=list)
    # Builds kept besides the current one, for rollback.
    llama_cpp_keep_builds: int = 2
    # Install the distro's CUDA toolkit when a CUDA build needs nvcc and the host lacks it.
    cuda_toolkit_install: bool = False

    # Install build tools (cmake, ninja, a compiler, git, ccache) with the package manager. False
    # for hosts that have them already and cannot reach a package mirror.
    llama_cpp_install_build_tools: bool = True

    # --- llama-server as a systemd service (deploys/llama_server.py; needs model_path) ---
    # The GGUF model on the host; no model: no service.
    model_path: str | None = None
    # The name clients ask for (--alias); default: the file name without .gguf.
    model_alias: str | None = None
    # "text", "vision" (needs mmproj_path) or "mtp" (the model's own MTP layers draft tokens).
    workload: str = "text"
    mmproj_path: str | None = None
    # Context size in tokens; default: the model's trained context, at most 32768.
    context_size: int | None = None
    # Concurrent requests (server slots): 1 for a single user.
    parallel: int = 1
    server_port: int = 8080
    # Listen address; anything beyond loopback needs an API key (server_api_key: file).
    server_bind: str = "127.0.0.1"
    # "file": a key generated once into a 0600 file of the service user (--api-key-file);
    # "none": no key (refused unless server_bind is a loopback address).
    server_api_key: str = "file"
    # The dedicated system user the service runs as.
    server_user: str = "llama"
    # VRAM (MiB per GPU) that --fit leaves free; default llama.cpp's 1024, vision at least 2048.
    # A large value makes a large card act small (how the 4 GB budget scenario is measured).
    fit_target_mib: int | None = None
    # KV cache type: "auto" (the planner decides), or f16, q8_0, q4_0.
    kv_cache_type: str = "auto"
    # CPU threads for generation; default: the P-cores' physical cores.
    threads: int | None = None
    # Physical batch (-ub) in tokens; default: the planner's (llama.cpp's 512). `llmtune tune`
    # writes the measured best here.
    ubatch_size: int | None = None
    # Flash attention: "auto" (the planner's: on), "on" or "off" (off needs an f16 KV cache).
    flash_attn: str = "auto"
    # Extra llama-server arguments, checked against the installed binary's --help.
    server_extra_args: list[str] = field(default_factory=list)

    # --- what the host cannot tell, and the doctor's thresholds ---
    # The speed (MT/s) the RAM kit is rated for with XMP/EXPO. SMBIOS often reports the JEDEC
    # speed as the module's "Speed", so without this the doctor can only compare with that.
    ram_rated_mts: int | None = None
    # Memory channels in use, when the DIMM slot names do not tell (for the bandwidth probe).
    memory_channels: int | None = None
    # Lowest share of the theoretical RAM bandwidth the full level's probe must reach.
    memory_bandwidth_min_ratio: float = 0.5
    # P-core clocks below this share of their maximum are reported (warn).
    cpu_mhz_min_ratio: float = 0.85
    # A background process above this CPU share (percent of one CPU) is a hog.
    cpu_hog_percent: float = 20.0
    # vm.swappiness above this is reported when swap is in use.
    swappiness_max: int = 10
    # GPU temperatures: warn at or above, fail at or above.
    gpu_temp_warn_c: float = 83.0
    gpu_temp_fail_c: float = 90.0
    # Thermal zones (CPU package, ACPI) at or above this warn; at their own trip points fail.
    thermal_warn_c: float = 85.0
    # VRAM other processes may hold (MiB) before the doctor reports them.
    vram_other_max_mib: int = 256
    # Processes that are part of the inference stack: never reported as hogs or VRAM holders.
    inference_processes: list[str] = field(
        default_factory=lambda: ["llama-server", "llama-bench", "llama-cli"]
    )


_VALIDATORS: dict[str, Validator] = {
    "tuned": _bool,
    "tuned_profile": _profile_name,
    "thp": _one_of("always", "madvise", "never"),
    "cpu_governor": _one_of("performance", "powersave", "schedutil", "ondemand"),
    "cpu_epp": _one_of("performance", "balance_performance", "default"),
    "headless": _bool,
    "headless_switch_now": _bool,
    "ram_below_rated": _one_of("fail", "warn"),
    "llama_cpp_build": _bool,
    "llama_cpp_ref": _ref,
    "llama_cpp_git_url": _url,
    "llama_cpp_source_tarball": _optional_path,
    "llama_cpp_cuda": _one_of("auto", "on", "off"),
    "llama_cpp_lto": _bool,
    "llama_cpp_cmake_extra": _cmake_defs,
    "llama_cpp_keep_builds": _count,
    "cuda_toolkit_install": _bool,
    "llama_cpp_install_build_tools": _bool,
    "model_path": _abs_path,
    "model_alias": _alias,
    "workload": _one_of("text", "vision", "mtp"),
    "mmproj_path": _abs_path,
    "context_size": _optional_positive_int,
    "parallel": _positive_int,
    "server_port": _port,
    "server_bind": _bind,
    "server_api_key": _one_of("file", "none"),
    "server_user": _user,
    "fit_target_mib": _optional_mib,
    "kv_cache_type": _one_of("auto", "f16", "q8_0", "q4_0"),
    "threads": _optional_positive_int,
    "ubatch_size": _optional_positive_int,
    "flash_attn": _on_off_auto,
    "server_extra_args": _args,
    "ram_rated_mts": _optional_positive_int,
    "memory_channels": _optional_positive_int,
    "memory_bandwidth_min_ratio": _ratio,
    "cpu_mhz_min_ratio": _ratio,
    "cpu_hog_percent": _percent,
    "swappiness_max": _swappiness,
    "gpu_temp_warn_c": _celsius,
    "gpu_temp_fail_c": _celsius,
    "thermal_warn_c": _celsius,
    "vram_other_max_mib": _positive_int,
    "inference_processes": _names,
}


def validate_mapping(data: Mapping[str, Any], source: str) -> None:
    """Check every key and value of one settings file (a layer); raise SettingsError on the first
    problem, naming the file and the key."""
    known = {f.name for f in fields(HostSettings)}
    for key, value in data.items():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise SettingsError(source, str(key), f"unknown key; allowed keys: {allowed}")
        problem = _VALIDATORS[key](value)
        if problem:
            raise SettingsError(source, key, f"got {value!r}; expected {problem}")


def settings_from_mapping(data: Mapping[str, Any], source: str) -> HostSettings:
    validate_mapping(data, source)
    values = dict(data)
    if isinstance(values.get("flash_attn"), bool):
        values["flash_attn"] = "on" if values["flash_attn"] else "off"
    settings = HostSettings(**values)
    if settings.gpu_temp_warn_c > settings.gpu_temp_fail_c:
        raise SettingsError(source, "gpu_temp_warn_c", "must not be above gpu_temp_fail_c")
    if settings.server_api_key == "none" and not is_loopback(settings.server_bind):
        raise SettingsError(
            source,
            "server_api_key",
            f"'none' with server_bind {settings.server_bind!r} would serve the model to the "
            "network without a key: use server_api_key: file, or bind 127.0.0.1",
        )
    if settings.flash_attn == "off" and settings.kv_cache_type in ("q8_0", "q4_0"):
        raise SettingsError(
            source,
            "flash_attn",
            f"'off' with kv_cache_type {settings.kv_cache_type}: llama.cpp needs flash attention "
            "for a quantized V cache; use flash_attn: on, or kv_cache_type: f16",
        )
    if settings.workload == "vision" and not settings.mmproj_path:
        raise SettingsError(source, "mmproj_path", "workload: vision needs the mmproj GGUF's path")
    return settings


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: reachable from this host only."""
    return address in ("localhost", "::1") or address.startswith("127.")


def read_mapping(path: Path) -> dict[str, Any]:
    """Read one YAML settings file as a validated mapping (empty file: no settings)."""
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(source, None, f"cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(source, None, f"not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(source, None, "expected a mapping of setting: value")
    validate_mapping(data, source)
    return data


def load_settings(path: Path | None) -> HostSettings:
    """Read and validate a settings YAML file; ``None`` gives the defaults."""
    if path is None:
        return HostSettings()
    return settings_from_mapping(read_mapping(path), str(path))
