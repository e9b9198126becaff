"""Where a bench or a verify runs: this machine, or an inventory host through pyinfra.

The two differ only in how a fact is read and a command run; everything above them (what to run,
how to read it, how to compare) is the same code.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ShellResult:
    ok: bool
    stdout: tuple[str, ...]
    stderr: tuple[str, ...]


class Target(Protocol):
    name: str

    def fact(self, fact: type, **kwargs: Any) -> Any: ...

    def shell(self, command: str, timeout_s: float = 600.0) -> ShellResult: ...


class LocalTarget:
    """This machine (as the user running llmtune: root for llama-bench's mlock and the store)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or socket.gethostname()

    def fact(self, fact: type, **kwargs: Any) -> Any:
        result = self.shell(fact().command(**kwargs), timeout_s=getattr(fact, "timeout_s", 60))
        return fact().process(list(result.stdout))

    def shell(self, command: str, timeout_s: float = 600.0) -> ShellResult:
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ShellResult(False, (), (f"timed out after {timeout_s:.0f} s",))
        lines = proc.stdout.splitlines(), proc.stderr.splitlines()
        return ShellResult(proc.returncode == 0, tuple(lines[0]), tuple(lines[1]))


class PyinfraTarget:
    """A connected pyinfra host (SSH, @local, ...): facts and commands go through its connector."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.name = host.name

    def fact(self, fact: type, **kwargs: Any) -> Any:
        return self.host.get_fact(fact, **kwargs)

    def shell(self, command: str, timeout_s: float = 600.0) -> ShellResult:
        ok, output = self.host.run_shell_command(command, _timeout=int(timeout_s))
        return ShellResult(bool(ok), tuple(output.stdout_lines), tuple(output.stderr_lines))


def measuring_command(argv: Sequence[str]) -> str:
    """A llama-bench (or fit-params) command line as bench and tune run it: mlock allowed as the
    service has it (LimitMEMLOCK=infinity), in /tmp (it writes nothing)."""
    return f"ulimit -l unlimited 2>/dev/null; cd /tmp && {shlex.join(argv)}"


@contextmanager
def service_stopped(
    target: Target, service: str, active: bool, why: str, progress: Callable[[str], None]
) -> Iterator[None]:
    """Stop ``service`` (when ``active``) for measurements, and start it again whatever happens:
    it holds VRAM, which --fit would see as taken, and would share the GPU and the cores."""
    if active:
        progress(f"stopping {service} for {why}")
        target.shell(f"systemctl stop {shlex.quote(service)}")
    try:
        yield
    finally:
        if active:
            target.shell(f"systemctl start {shlex.quote(service)}")
            progress(f"{service} started again")
