"""Kernel facts: loaded modules, the modules configured to load at boot, the kernel command line.

All three read files only (/proc, /etc, /usr/lib...), each with a ``root`` kwarg so tests run the
real command over a recorded tree.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmtune.facts.probe import (
    MARK,
    LlmtuneFact,
    c_locale,
    join,
    section,
    split_sections,
    sysroot,
)

_UNREADABLE = MARK + "unreadable"


def _read_or_mark(path: str) -> str:
    """``cat`` a file, or print the unreadable marker: an absent file differs from an empty one."""
    quoted = shlex.quote(_UNREADABLE)
    return f"if [ -r {path} ]; then cat {path}; else echo {quoted}; fi"


def module_key(name: str) -> str:
    """Module names compare with ``-`` and ``_`` alike (modprobe nvidia-uvm loads nvidia_uvm)."""
    return name.strip().replace("-", "_")


# --- loaded modules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelModule:
    """A /proc/modules line: ``nvidia_uvm 2076672 0 - Live 0x0000000000000000 (POE)``."""

    name: str
    size: int | None = None
    refcount: int | None = None
    state: str = ""


@dataclass(frozen=True)
class KernelModulesValue:
    """Example: ``KernelModulesValue(readable=True, modules=(KernelModule("nvidia_uvm", 2076672,
    0, "Live"), ...), nvidia_version="580.159.04")``. ``readable`` is False where /proc/modules
    does not exist (a kernel without module support) or cannot be read."""

    readable: bool = False
    modules: tuple[KernelModule, ...] = ()
    # /sys/module/nvidia/version: the version of the loaded nvidia module, "" when not loaded.
    nvidia_version: str = ""

    def loaded(self, name: str) -> bool:
        key = module_key(name)
        return any(module_key(m.name) == key for m in self.modules)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_proc_modules(lines: Iterable[str]) -> tuple[KernelModule, ...]:
    modules: list[KernelModule] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or line.startswith(MARK):
            continue
        modules.append(
            KernelModule(
                name=parts[0],
                size=_int(parts[1]),
                refcount=_int(parts[2]),
                state=parts[4] if len(parts) > 4 else "",
            )
        )
    return tuple(modules)


class KernelModules(LlmtuneFact[KernelModulesValue]):
    """The loaded kernel modules (/proc/modules) and the loaded nvidia module's version."""

    def command(self, root: str = "") -> str:
        version = sysroot(root, "/sys/module/nvidia/version")
        return c_locale(
            join(
                section("modules", _read_or_mark(sysroot(root, "/proc/modules"))),
                section("nvidia-version", f"cat {version} 2>/dev/null; true"),
            )
        )

    def process(self, output: list[str]) -> KernelModulesValue:
        parts = split_sections(output)
        lines = parts.get("modules")
        if lines is None or _UNREADABLE in lines:
            return KernelModulesValue(readable=False)
        version = next((v.strip() for v in parts.get("nvidia-version", []) if v.strip()), "")
        return KernelModulesValue(
            readable=True, modules=parse_proc_modules(lines), nvidia_version=version
        )


# --- modules loaded at boot ------------------------------------------------------------

# systemd-modules-load reads these directories; a file name in an earlier one overrides the same
# name in a later one, and a link to /dev/null masks it (modules-load.d(5)). /lib/modules-load.d
# is the same place as /usr/lib/... on merged-/usr systems and a separate one on older Debian.
MODULES_LOAD_DIRS = (
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",
)
# Debian's /etc/modules (module per line, optional arguments); read at boot through the
# /etc/modules-load.d/modules.conf link (or by the kmod init script on older releases).
ETC_MODULES = "/etc/modules"
# Arch/CachyOS: modules in mkinitcpio's MODULES=(...) are loaded from the initramfs, earliest.
MKINITCPIO = ("/etc/mkinitcpio.conf", "/etc/mkinitcpio.conf.d/*.conf")

_FILE = MARK + "file "
_MASKED = MARK + "masked "
_ROOT = MARK + "root "
_MKINIT_MODULES = re.compile(r"^\s*MODULES\+?=\(([^)]*)\)", re.MULTILINE)


@dataclass(frozen=True)
class ModulesLoadValue:
    """Modules configured to load at boot -> the files that list them. Example::

        ModulesLoadValue(modules={"nvidia_uvm": ("/etc/modules-load.d/nvidia-uvm.conf",)},
                         files=("/etc/modules-load.d/nvidia-uvm.conf",))

    Keys use ``_`` for ``-``. ``files`` are the configuration files that count (after
    overrides and masks); ``masked`` the modules-load.d names linked to /dev/null.
    """

    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    masked: tuple[str, ...] = ()

    def lists(self, module: str) -> bool:
        return module_key(module) in self.modules

    def sources(self, module: str) -> tuple[str, ...]:
        return self.modules.get(module_key(module), ())


def _module_lines(lines: Iterable[str]) -> list[str]:
    """Module names of a modules-load.d file or /etc/modules: first word, no comments."""
    names: list[str] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith(("#", ";")):
            continue
        names.append(text.split()[0])
    return names


def _mkinitcpio_modules(lines: Iterable[str]) -> list[str]:
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    names: list[str] = []
    for match in _MKINIT_MODULES.finditer(text):
        for word in match.group(1).split():
            word = word.strip("\"'")
            # "nvidia?" in mkinitcpio means "if it exists"; still a request to load it.
            word = word.rstrip("?")
            if word and not word.startswith("#"):
                names.append(word)
    return names


class ModulesLoadConfig(LlmtuneFact[ModulesLoadValue]):
    """Which modules the host loads at boot: modules-load.d, /etc/modules, mkinitcpio MODULES."""

    def command(self, root: str = "") -> str:
        conf_globs = [sysroot(root, f"{d}/*.conf") for d in MODULES_LOAD_DIRS]
        others = [sysroot(root, ETC_MODULES)] + [sysroot(root, p) for p in MKINITCPIO]
        # Name every file first: an empty overriding file prints no content, a mask none either.
        listing = (
            f"for f in {' '.join(conf_globs)}; do "
            f'if [ -L "$f" ] && [ "$(readlink "$f")" = /dev/null ]; '
            f'then echo {shlex.quote(_MASKED)}"$f"; '
            f'elif [ -e "$f" ]; then echo {shlex.quote(_FILE)}"$f"; fi; done'
        )
        contents = f"grep -s -H . {' '.join(conf_globs + others)} 2>/dev/null; true"
        return c_locale(join(f"echo {shlex.quote(_ROOT + root)}", listing, contents))

    def process(self, output: list[str]) -> ModulesLoadValue:
        root = ""
        present: list[str] = []
        masked: list[str] = []
        content: dict[str, list[str]] = {}
        for line in output:
            if line.startswith(_ROOT):
                root = line[len(_ROOT) :].strip().rstrip("/")
            elif line.startswith(_FILE):
                present.append(_strip_root(line[len(_FILE) :], root))
            elif line.startswith(_MASKED):
                masked.append(_strip_root(line[len(_MASKED) :], root))
            elif not line.startswith(MARK):
                path, sep, value = line.partition(":")
                if sep:
                    content.setdefault(_strip_root(path, root), []).append(value)
        # The winning file of each name: the first directory in MODULES_LOAD_DIRS that has it.
        winners: dict[str, str | None] = {}
        for directory in MODULES_LOAD_DIRS:
            for path in masked:
                if path.startswith(directory + "/"):
                    winners.setdefault(path.rsplit("/", 1)[-1], None)
            for path in present:
                if path.startswith(directory + "/"):
                    winners.setdefault(path.rsplit("/", 1)[-1], path)
        # Files seen only through their contents (no listing line) still count.
        for path in content:
            if any(path.startswith(d + "/") for d in MODULES_LOAD_DIRS):
                winners.setdefault(path.rsplit("/", 1)[-1], path)
        modules: dict[str, list[str]] = {}
        files: list[str] = []

        def add(path: str, names: list[str]) -> None:
            files.append(path)
            for name in names:
                sources = modules.setdefault(module_key(name), [])
                if path not in sources:
                    sources.append(path)

        for path in sorted(p for p in winners.values() if p):
            add(path, _module_lines(content.get(path, [])))
        for path, lines in sorted(content.items()):
            if path == ETC_MODULES:
                add(path, _module_lines(lines))
            elif path == MKINITCPIO[0] or path.startswith("/etc/mkinitcpio.conf.d/"):
                add(path, _mkinitcpio_modules(lines))
        return ModulesLoadValue(
            modules={k: tuple(v) for k, v in modules.items()},
            files=tuple(files),
            masked=tuple(sorted(masked)),
        )


def _strip_root(path: str, root: str) -> str:
    return path[len(root) :] if root and path.startswith(root) else path


# --- kernel command line ------------------------------------------------------------


@dataclass(frozen=True)
class KernelCmdlineValue:
    """/proc/cmdline as ``key -> value`` (None for a bare flag like ``quiet``). Example::

        KernelCmdlineValue(raw="BOOT_IMAGE=/vmlinuz root=UUID=... ro quiet splash",
                           params={"BOOT_IMAGE": "/vmlinuz", "root": "UUID=...", "ro": None,
                                   "quiet": None, "splash": None})

    ``raw`` is None when /proc/cmdline cannot be read; ``init_args`` are the words after ``--``
    (handed to init, not kernel parameters). When a key repeats, the last one wins, as it does
    for most kernel parameters.
    """

    raw: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    init_args: tuple[str, ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of ``name``; ``-`` and ``_`` compare equal, as the kernel compares them."""
        key = module_key(name)
        found = default
        for param, value in self.params.items():
            if module_key(param) == key:
                found = value
        return found

    def has(self, name: str) -> bool:
        key = module_key(name)
        return any(module_key(param) == key for param in self.params)


def split_cmdline(text: str) -> list[str]:
    """Split like the kernel's next_arg(): whitespace separates, double quotes group, and the
    quotes are dropped (``a="b c"`` -> ``a=b c``)."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    started = False
    for char in text:
        if char == '"':
            quoted = not quoted
            started = True
        elif char.isspace() and not quoted:
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        words.append("".join(current))
    return words


def parse_cmdline(text: str) -> KernelCmdlineValue:
    words = split_cmdline(text)
    params: dict[str, str | None] = {}
    init_args: tuple[str, ...] = ()
    for i, word in enumerate(words):
        if word == "--":
            init_args = tuple(words[i + 1 :])
            break
        key, sep, value = word.partition("=")
        params.pop(key, None)  # a repeated key moves to the end: last one wins, in order
        params[key] = value if sep else None
    return KernelCmdlineValue(raw=text.strip(), params=params, init_args=init_args)


class KernelCmdline(LlmtuneFact[KernelCmdlineValue]):
    """The kernel command line (/proc/cmdline), e.g. for ``transparent_hugepage=``."""

    def command(self, root: str = "") -> str:
        return c_locale(_read_or_mark(sysroot(root, "/proc/cmdline")))

    def process(self, output: list[str]) -> KernelCmdlineValue:
        if not output or _UNREADABLE in output:
            return KernelCmdlineValue()
        return parse_cmdline(" ".join(line for line in output if not line.startswith(MARK)))
