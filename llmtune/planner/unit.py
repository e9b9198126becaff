"""The llama-server systemd unit: what it runs, as whom, where, and in which sandbox.

:class:`ServiceSpec` is the plan (pure data, decided from settings and facts elsewhere);
:func:`render_unit` lays it out through ``templates/llama-server.service.j2``. Everything that
becomes part of a command line goes through :func:`systemd_quote`, so an argument reaches
llama-server exactly as given, whatever spaces, quotes, ``%`` or ``$`` it holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import jinja2

from llmtune.facts.cpu import format_cpulist

TEMPLATE = "llama-server.service.j2"
UNIT_DIR = "/etc/systemd/system"
# The build layout of llmtune/ops/llama_build.py: <prefix>/current/bin/llama-server.
DEFAULT_BINARY = "/opt/llmtune/llama.cpp/current/bin/llama-server"
DEFAULT_ENV_FILE = "/etc/llmtune/llama-server.env"
DEFAULT_API_KEY_FILE = "/etc/llmtune/llama-server.key"
NVIDIA_MODPROBE = "/usr/bin/nvidia-modprobe"
# The credential's name: llama-server reads it as %d/api-key ($CREDENTIALS_DIRECTORY/api-key).
API_KEY_CREDENTIAL = "api-key"

# NVIDIA's fixed character major (NV_MAJOR_DEVICE_NUMBER): /dev/nvidiaN is 195:N, nvidiactl
# 195:255. nvidia-uvm and nvidia-caps get a major at load time: only their /proc/devices name
# (char-nvidia-uvm) can name them before the module is in.
NVIDIA_MAJOR = 195
NVIDIACTL_MINOR = 255
_GPU_NODE = re.compile(r"/dev/nvidia(\d+)")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_UNIT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Where ProtectHome= hides things: a model there needs ProtectHome=tmpfs and a bind mount.
_HOME_DIRS = ("/home/", "/root/", "/run/user/")

# The gate before a GPU start: the module is in and every node exists, else no start.
_GPU_GATE = (
    'for p in "$@"; do [ -e "$p" ] || '
    '{ echo "llmtune: $p is missing: CUDA would fall back to the CPU" >&2; exit 1; }; done'
)


class UnitError(ValueError):
    """A ServiceSpec that cannot become a correct unit (a relative path, a newline...)."""


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the unit says. ``argv`` holds llama-server's arguments only: no binary, and
    never the API key (see ``api_key_file``)."""

    argv: tuple[str, ...]
    name: str = "llama-server"
    user: str = "llama"
    group: str = "llama"
    binary: str = DEFAULT_BINARY
    env_file: str = DEFAULT_ENV_FILE
    # CPU ids the server is pinned to (the P-cores); empty: no pinning.
    cpu_affinity: tuple[int, ...] = ()
    # The model and mmproj GGUF files: read-only in the sandbox (reachable under /home too).
    model_paths: tuple[str, ...] = ()
    # The key file on the host (0600); loaded as a systemd credential, passed as
    # --api-key-file %d/api-key. None: no key (loopback only, checked by the settings).
    api_key_file: str | None = DEFAULT_API_KEY_FILE
    # The GPUs' nodes (/dev/nvidia0, /dev/nvidia1...); empty: a CPU host.
    gpu_devices: tuple[str, ...] = ()
    description: str = "llama.cpp llama-server (llmtune)"
    nvidia_modprobe: str = NVIDIA_MODPROBE

    def __post_init__(self) -> None:
        # Lists are welcome; stored as tuples so a spec stays hashable and comparable.
        for attr in ("argv", "cpu_affinity", "model_paths", "gpu_devices"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        _check(self)

    @property
    def unit_name(self) -> str:
        return f"{self.name}.service"

    @property
    def unit_path(self) -> str:
        return f"{UNIT_DIR}/{self.unit_name}"

    @property
    def gpu(self) -> bool:
        return bool(self.gpu_devices)

    @property
    def gpu_minors(self) -> list[int]:
        """The GPUs' minor numbers: /dev/nvidia3 is 195:3."""
        return sorted({int(node.removeprefix("/dev/nvidia")) for node in self.gpu_devices})


def _check(spec: ServiceSpec) -> None:
    # These go into the unit as they are: a newline would end the line (argv is quoted and may
    # hold one, escaped); NUL cannot be passed at all.
    texts = [spec.name, spec.user, spec.group, spec.binary, spec.env_file, spec.description]
    texts += [*spec.model_paths, *spec.gpu_devices, spec.nvidia_modprobe]
    texts += [spec.api_key_file or ""]
    for text in [*texts, *spec.argv]:
        if not isinstance(text, str) or "\0" in text:
            raise UnitError(f"{text!r}: expected a string without NUL")
    for text in texts:
        if "\n" in text or "\r" in text:
            raise UnitError(f"{text!r}: no newlines here")
    if not _UNIT_NAME.fullmatch(spec.name):
        raise UnitError(f"{spec.name!r} is not a unit name")
    for who in (spec.user, spec.group):
        if not _USER.fullmatch(who):
            raise UnitError(f"{who!r} is not a system user or group name")
    paths = [spec.binary, spec.env_file, spec.nvidia_modprobe, *spec.model_paths]
    paths += [spec.api_key_file] if spec.api_key_file else []
    for path in paths:
        # Relative paths mean nothing to systemd; whitespace and % would need escaping in
        # directives that take paths unquoted (ReadOnlyPaths=, LoadCredential=...).
        if not path.startswith("/") or re.search(r"[\s%\\\"']", path):
            raise UnitError(f"{path!r}: an absolute path without spaces, quotes, % or \\")
    if spec.api_key_file and ":" in spec.api_key_file:
        raise UnitError(f"{spec.api_key_file!r}: ':' separates LoadCredential= fields")
    for path in spec.model_paths:
        if ":" in path:
            raise UnitError(f"{path!r}: ':' separates BindReadOnlyPaths= fields")
    for node in spec.gpu_devices:
        if not _GPU_NODE.fullmatch(node):
            raise UnitError(f"{node!r}: expected a GPU node like /dev/nvidia0")
    for arg in spec.argv:
        # The key on the command line is readable by every local user (ps, /proc/PID/cmdline).
        if arg.split("=", 1)[0] in ("--api-key", "--api-key-file"):
            raise UnitError(f"{arg!r}: the API key is passed by the unit, never in argv")
    for cpu in spec.cpu_affinity:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
            raise UnitError(f"{cpu!r} is not a CPU id")


def systemd_quote(arg: str) -> str:
    """One argument for an ``Exec*=`` line, so systemd passes exactly ``arg`` to the program.

    systemd expands specifiers (``%``) when it loads the unit and variables (``$``) when it runs
    the command, over quoted and unquoted words alike: ``%%`` and ``$$`` keep them literal.
    Words split on whitespace; double quotes keep one together, and inside them ``\\`` escapes
    (C style). A lone ``;`` would separate two commands.
    """
    if "\0" in arg:
        raise UnitError("an argument cannot hold NUL")
    text = arg.replace("%", "%%").replace("$", "$$")
    escaped = []
    for char in text:
        if char in '\\"':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02x}")
        else:
            escaped.append(char)
    body = "".join(escaped)
    plain = body == text and text and text != ";" and not re.search(r"[\s'\"\\]", text)
    return body if plain else f'"{body}"'


def exec_line(argv: Iterable[str], prefix: str = "") -> str:
    """An ``Exec*=`` value: ``prefix`` (systemd's ``+``, ``-``...) then the quoted argv."""
    words = [systemd_quote(a) for a in argv]
    if not words or not words[0].startswith("/"):
        raise UnitError(f"{list(argv)!r}: the command must start with an absolute path")
    return prefix + " ".join(words)


def format_cpu_affinity(cpus: Iterable[int]) -> str:
    """``CPUAffinity=`` value, in the kernel's list syntax: ``(0, 1, 2, 3, 8)`` -> ``0-3,8``
    (systemd takes ranges); empty: no pinning (the template then leaves the line out)."""
    return format_cpulist(cpus)


def device_allow(spec: ServiceSpec) -> list[str]:
    """``DeviceAllow=`` entries of a GPU host (empty on a CPU host).

    GPUs and nvidiactl by ``/dev/char/MAJ:MIN``, which systemd resolves without the node: at the
    start the nodes may not exist yet (the ``+`` steps create them). rwm: those steps mknod in
    this unit's cgroup; the server has no CAP_MKNOD, so "m" gives it nothing.
    """
    if not spec.gpu:
        return []
    entries = [f"/dev/char/{NVIDIA_MAJOR}:{m} rwm" for m in spec.gpu_minors]
    entries.append(f"/dev/char/{NVIDIA_MAJOR}:{NVIDIACTL_MINOR} rwm")
    entries.append("char-nvidia-uvm rwm")  # /dev/nvidia-uvm and /dev/nvidia-uvm-tools
    entries.append("char-nvidia-caps r")
    return entries


def gpu_exec_start_pre(spec: ServiceSpec) -> list[str]:
    """The privileged steps before a GPU start: create the nodes, then the gate."""
    if not spec.gpu:
        return []
    minors = spec.gpu_minors
    # Without -u, -c=N creates /dev/nvidiaN (and nvidiactl); with -u, minor 0 is the UVM base:
    # /dev/nvidia-uvm and /dev/nvidia-uvm-tools. Two calls, as nvidia-modprobe(1) takes them.
    gpus = [spec.nvidia_modprobe, *(f"--create-nvidia-device-file={m}" for m in minors)]
    uvm = [spec.nvidia_modprobe, "--unified-memory", "--create-nvidia-device-file=0"]
    nodes = ["/dev/nvidiactl", *(f"/dev/nvidia{m}" for m in minors)]
    nodes += ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    gate = ["/bin/sh", "-c", _GPU_GATE, "llmtune-gpu-gate", "/sys/module/nvidia_uvm", *nodes]
    return [exec_line(gpus, "+-"), exec_line(uvm, "+-"), exec_line(gate, "+")]


def _under_home(path: str) -> bool:
    return path.startswith(_HOME_DIRS)


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text."""
    home_models = [p for p in spec.model_paths if _under_home(p)]
    argv = [spec.binary, *spec.argv]
    exec_start = exec_line(argv)
    if spec.api_key_file:
        # Not quoted: %d is the specifier for the credentials directory (systemd >= 248).
        exec_start += f" --api-key-file %d/{API_KEY_CREDENTIAL}"
    context = {
        "unit_name": spec.unit_name,
        "name": spec.name,
        "description": spec.description,
        "user": spec.user,
        "group": spec.group,
        "env_file": spec.env_file,
        "gpu": spec.gpu,
        "credential": (f"{API_KEY_CREDENTIAL}:{spec.api_key_file}" if spec.api_key_file else None),
        "exec_start_pre": gpu_exec_start_pre(spec),
        "exec_start": exec_start,
        "cpu_affinity": format_cpu_affinity(spec.cpu_affinity),
        # "-": a missing file is llama-server's error to report ("failed to load model"), not
        # a namespace failure (status 226) that says nothing about the model.
        "read_only_paths": [f"-{p}" for p in spec.model_paths if not _under_home(p)],
        # ProtectHome=yes makes /home inaccessible: nothing below it can be re-exposed. tmpfs
        # gives an empty /home where systemd can bind the model file alone.
        "bind_read_only_paths": [f"-{p}" for p in home_models],
        "protect_home": "tmpfs" if home_models else "yes",
        "device_allow": device_allow(spec),
    }
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    source = resources.files("llmtune").joinpath("templates", TEMPLATE).read_text()
    return env.from_string(source).render(**context)
