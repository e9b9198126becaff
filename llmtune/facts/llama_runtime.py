"""The llama-server processes running on the host, as the kernel sees them.

What a process runs is ``/proc/PID/exe`` (the binary it was started from, even after
``current`` moved on; " (deleted)" once the file is gone), not its command line: the service
starts ``.../current/bin/llama-server``, a path through a symlink that may point elsewhere now.
Its arguments, CPU affinity and memory-lock limit are what the doctor compares with the plan.
Reading another user's ``exe`` and ``limits`` needs root: run the doctor with sudo.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from llmtune.facts.cpu import parse_cpulist
from llmtune.facts.llama import ROOT_DIR
from llmtune.facts.probe import LlmtuneFact, c_locale, join, section, split_sections, sysroot

PROCESS_NAME = "llama-server"
# /proc/PID/cmdline separates arguments with NUL; the probe prints them on one line separated by
# the ASCII unit separator, which no sane argument holds.
ARG_SEP = "\x1f"
DELETED = " (deleted)"


@dataclass(frozen=True)
class LlamaServerProcess:
    """One llama-server process.

    ``exe`` is ``readlink /proc/PID/exe`` ("" when unreadable: not root); ``memlock_soft`` and
    ``memlock_hard`` are bytes, None for unlimited, -1 when unreadable.
    """

    pid: int
    exe: str = ""
    argv: tuple[str, ...] = ()
    cpus_allowed: tuple[int, ...] = ()
    memlock_soft: int | None = -1
    memlock_hard: int | None = -1
    vm_lck_kib: int = 0
    vm_rss_kib: int = 0

    @property
    def exe_deleted(self) -> bool:
        return self.exe.endswith(DELETED)

    @property
    def exe_path(self) -> str:
        return self.exe.removesuffix(DELETED)

    def option(self, *spellings: str) -> str | None:
        """The value after the first of ``spellings`` on the command line (``--port 8080`` or
        ``--port=8080``); "" for a flag without a value; None when absent."""
        args = self.argv[1:]
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            if name in spellings:
                if eq:
                    return value
                nxt = args[i + 1] if i + 1 < len(args) else ""
                # "-ngl -1" is a value; "--metrics --port" is a flag followed by the next one.
                return "" if not nxt or (nxt.startswith("-") and not _number(nxt)) else nxt
        return None


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class LlamaServerProcessesValue:
    """Example::

    LlamaServerProcessesValue(current_binary="/opt/llmtune/llama.cpp/builds/0c1e570-ab12/build/bin/llama-server",
                              processes=(LlamaServerProcess(pid=812, exe="/opt/.../llama-server",
                                         argv=("/opt/llmtune/llama.cpp/current/bin/llama-server",
                                               "-m", "/srv/models/m.gguf", ...),
                                         cpus_allowed=(0, 1, 2, 3), memlock_soft=None,
                                         memlock_hard=None, vm_lck_kib=4266060),))

    ``current_binary`` is where ``current/bin/llama-server`` resolves to ("" without a build).
    """

    current_binary: str = ""
    processes: tuple[LlamaServerProcess, ...] = ()


def _limit(text: str) -> int | None:
    """One column of /proc/PID/limits: "unlimited" -> None, "65536" -> 65536."""
    if text == "unlimited":
        return None
    return int(text) if text.isdigit() else -1


def _kib(text: str) -> int:
    number = text.split()[0] if text.split() else ""
    return int(number) if number.isdigit() else 0


def parse_process(pid: int, lines: list[str]) -> LlamaServerProcess:
    fields: dict[str, str] = {}
    argv: tuple[str, ...] = ()
    soft: int | None = -1
    hard: int | None = -1
    for line in lines:
        if line.startswith("exe="):
            fields["exe"] = line[4:]
        elif line.startswith("argv="):
            # cmdline ends with a NUL, so the last separator closes the last argument.
            argv = tuple(line[5:].removesuffix(ARG_SEP).split(ARG_SEP)) if line[5:] else ()
        elif line.startswith("Max locked memory"):
            # "Max locked memory         8388608              8388608              bytes"
            cols = line[len("Max locked memory") :].split()
            if len(cols) >= 2:
                soft, hard = _limit(cols[0]), _limit(cols[1])
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return LlamaServerProcess(
        pid=pid,
        exe=fields.get("exe", ""),
        argv=argv,
        cpus_allowed=parse_cpulist(fields.get("Cpus_allowed_list", "")),
        memlock_soft=soft,
        memlock_hard=hard,
        vm_lck_kib=_kib(fields.get("VmLck", "")),
        vm_rss_kib=_kib(fields.get("VmRSS", "")),
    )


class LlamaServerProcesses(LlmtuneFact[LlamaServerProcessesValue]):
    """Every running llama-server: binary, arguments, CPU affinity, memory lock."""

    stable = False

    def command(self, root_dir: str = ROOT_DIR, root: str = "") -> str:
        proc = shlex.quote(sysroot(root, "/proc"))
        current = shlex.quote(sysroot(root, root_dir) + "/current/bin/llama-server")
        name = shlex.quote(PROCESS_NAME)
        sep = "\\037"
        per_process = (
            f"for d in {proc}/[0-9]*; do "
            f'[ "$(cat "$d/comm" 2>/dev/null)" = {name} ] || continue; '
            'echo "@@llmtune section pid ${d##*/}"; '
            'echo "exe=$(readlink "$d/exe" 2>/dev/null)"; '
            f"printf 'argv='; tr '\\000' '{sep}' < \"$d/cmdline\" 2>/dev/null; echo; "
            "grep -s -E '^(Cpus_allowed_list|VmLck|VmRSS):' \"$d/status\"; "
            "grep -s '^Max locked memory' \"$d/limits\"; "
            "done; true"
        )
        return c_locale(
            join(
                section("current", f"readlink -f {current} 2>/dev/null; true"),
                per_process,
            )
        )

    def process(self, output: list[str]) -> LlamaServerProcessesValue:
        parts = split_sections(output)
        current_lines = [ln.strip() for ln in parts.pop("current", []) if ln.strip()]
        processes = []
        for name, lines in parts.items():
            kind, _, pid = name.partition(" ")
            if kind == "pid" and pid.isdigit():
                processes.append(parse_process(int(pid), lines))
        return LlamaServerProcessesValue(
            current_binary=current_lines[0] if current_lines else "",
            processes=tuple(sorted(processes, key=lambda p: p.pid)),
        )
