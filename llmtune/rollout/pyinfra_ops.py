"""The rollout's real apply and rollback: pyinfra's own CLI, run as a subprocess on a batch.

``python -m pyinfra INVENTORY deploys/all.py --limit H1 --limit H2 -y --json`` with this
interpreter: the same deploy an owner runs by hand, with its logging, its --limit semantics and
its per-host failure handling (one host failing does not stop the others). Who succeeded comes
from pyinfra's ``--json`` results (``failed_hosts``, per operation ``success``/``error``); why
a host failed, and whether it was reached at all, from its ``[HOST]`` log lines on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import llmtune.deploys
from llmtune.rollout.run import ApplyResult, ApplyStatus

DEPLOYS = Path(llmtune.deploys.__file__).resolve().parent
ALL_DEPLOY = DEPLOYS / "all.py"
ROLLBACK_DEPLOY = DEPLOYS / "llama_cpp_rollback.py"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# pyinfra prefixes each host's log line with "[NAME]" padded to the longest name.
_HOST_LINE = re.compile(r"^\s*\[(.+?)\]\s+(.*)$")
# A host's lines that say nothing about why it failed.
_ROUTINE = ("Connected", "Ready:", "Success", "No changes", "Skipped", "Loaded fact")
_DETAIL_LINES = 3
_OPERATION = "--> Starting operation:"
# The last line of a Python traceback: "IndentationError: unexpected indent".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception)\b")


def limit_pattern(host: str) -> str:
    """pyinfra's --limit takes fnmatch patterns: a host named ``gpu[1]`` must match only itself.
    (One value per host: a comma-separated list is a single pattern that matches nothing.)"""
    return re.sub(r"([*?\[])", r"[\1]", host)


def pyinfra_argv(inventory: Path, deploy: Path, hosts: Sequence[str]) -> list[str]:
    limits = [arg for host in hosts for arg in ("--limit", limit_pattern(host))]
    return [sys.executable, "-m", "pyinfra", str(inventory), str(deploy), *limits, "-y", "--json"]


def _results_json(stdout: str) -> dict[str, Any] | None:
    """pyinfra's --json document: the last stdout line that is one (a deploy may print too)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("results"), dict):
                return data["results"]
    return None


def host_lines(stderr: str, hosts: Sequence[str]) -> dict[str, list[str]]:
    """Each host's own log lines, ``[NAME]`` prefix and colours removed, in order."""
    lines: dict[str, list[str]] = {h: [] for h in hosts}
    for raw in _ANSI.sub("", stderr).splitlines():
        match = _HOST_LINE.match(raw)
        if match and match.group(1) in lines:
            lines[match.group(1)].append(match.group(2).strip())
    return lines


def failing_operations(stderr: str) -> dict[str, str]:
    """Host -> the operation during which it logged its first ``Error``, from the log alone
    (pyinfra prints no JSON when its last host fails)."""
    current = ""
    failing: dict[str, str] = {}
    for raw in _ANSI.sub("", stderr).splitlines():
        if raw.startswith(_OPERATION):
            current = raw[len(_OPERATION) :].strip()
            continue
        match = _HOST_LINE.match(raw)
        if match and match.group(2).startswith("Error") and current:
            failing.setdefault(match.group(1), current)
    return failing


def _last_words(lines: Sequence[str], fallback: str) -> str:
    telling = [line for line in lines if not line.startswith(_ROUTINE)]
    return " / ".join(telling[-_DETAIL_LINES:]) or fallback


def _general_error(stderr: str, returncode: int) -> str:
    """Why a whole run failed: the exception pyinfra reports ("ModuleNotFoundError: ...", from a
    deploy file that does not load), or its own complaint ("--> pyinfra error: ...")."""
    lines = [line.strip() for line in _ANSI.sub("", stderr).splitlines() if line.strip()]
    for telling in (_EXCEPTION_LINE.match, lambda line: line.startswith("--> pyinfra error")):
        found = [line for line in lines if telling(line)]
        if found:
            return found[-1]
    return f"pyinfra exited {returncode}" + (f": {lines[-1]}" if lines else "")


def parse_run(
    hosts: Sequence[str], returncode: int, stdout: str, stderr: str
) -> dict[str, ApplyResult]:
    """Each host's result of one ``pyinfra ... --json`` run.

    * ``failed_hosts`` of the JSON results, or, with no JSON (pyinfra stops before its results
      when no host is left: "No hosts remaining!", or a broken inventory or deploy file), every
      host when the exit status is not 0;
    * a failed host that never logged ``Connected`` but logged something (its "Could not
      connect", "Authentication error"...) was unreachable; one that logged nothing at all
      failed with pyinfra's general error (nothing ran: e.g. the deploy file did not load);
    * ``changed``: the operations whose ``success`` (changed) list holds the host.
    """
    results = _results_json(stdout)
    lines = host_lines(stderr, hosts)
    from_log = failing_operations(stderr)
    if results is not None:
        failed = set(results.get("failed_hosts") or ())
        if returncode != 0 and not failed:
            failed = set(hosts)  # an exit status pyinfra did not explain per host
    else:
        failed = set(hosts) if returncode != 0 else set()
    operations = (results or {}).get("operations") or []
    out: dict[str, ApplyResult] = {}
    for host in hosts:
        own = lines[host]
        if host not in failed:
            changed = sum(host in op.get("success", ()) for op in operations)
            out[host] = ApplyResult(host, ApplyStatus.OK, changed=changed)
            continue
        connected = any(line.startswith("Connected") for line in own)
        if own and not connected:
            out[host] = ApplyResult(host, ApplyStatus.UNREACHABLE, own[-1])
            continue
        failing_op = next(
            (op.get("name", "") for op in operations if host in op.get("error", ())),
            from_log.get(host, ""),
        )
        why = _last_words(own, _general_error(stderr, returncode))
        out[host] = ApplyResult(
            host, ApplyStatus.FAILED, f"{failing_op}: {why}" if failing_op else why
        )
    return out


def run_pyinfra(
    inventory: Path,
    deploy: Path,
    hosts: Sequence[str],
    *,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> dict[str, ApplyResult]:
    """Run ``deploy`` on ``hosts`` and return each host's result. pyinfra's log (stderr) goes to
    ``on_line`` as it comes, a long build shows its progress; a run past ``timeout_s`` is killed
    and every host of it counts as failed. ``cwd``: where pyinfra runs (and writes its
    pyinfra-debug.log after an internal error); this process's own by default."""
    if not hosts:
        return {}
    argv = pyinfra_argv(inventory, deploy, hosts)
    killed = threading.Event()
    # stdout (one JSON line, large for a big batch) to a file: a pipe read only at the end could
    # fill up and block pyinfra while stderr is being read.
    with tempfile.TemporaryFile("w+") as stdout_file:
        proc = subprocess.Popen(
            argv,
            stdout=stdout_file,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
        )

        def kill() -> None:
            killed.set()
            proc.kill()

        # A timer, not a check between lines: a hung run may print nothing at all.
        watchdog = threading.Timer(timeout_s, kill) if timeout_s is not None else None
        if watchdog is not None:
            watchdog.start()
        try:
            assert proc.stderr is not None
            stderr_lines = []
            for line in proc.stderr:
                stderr_lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            returncode = proc.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if proc.poll() is None:  # on_line raised, or KeyboardInterrupt
                proc.kill()
                proc.wait()
        stdout_file.seek(0)
        stdout = stdout_file.read()
    if killed.is_set():
        return {
            h: ApplyResult(h, ApplyStatus.FAILED, f"pyinfra run killed after {timeout_s:.0f} s")
            for h in hosts
        }
    return parse_run(hosts, returncode, stdout, "".join(stderr_lines))


def pyinfra_apply(
    inventory: Path,
    deploy: Path = ALL_DEPLOY,
    *,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> Callable[[list[str]], Mapping[str, ApplyResult]]:
    """The rollout's ``apply``: deploys/all.py on a batch of hosts of ``inventory``."""

    def apply(hosts: list[str]) -> Mapping[str, ApplyResult]:
        return run_pyinfra(inventory, deploy, hosts, timeout_s=timeout_s, on_line=on_line, cwd=cwd)

    return apply


def pyinfra_rollback(
    inventory: Path,
    *,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> Callable[[list[str]], Mapping[str, ApplyResult]]:
    """The rollout's ``rollback``: deploys/llama_cpp_rollback.py (``current`` back to the
    previous complete llama.cpp build) on the hosts whose verify failed."""
    return pyinfra_apply(inventory, ROLLBACK_DEPLOY, timeout_s=timeout_s, on_line=on_line, cwd=cwd)


def inventory_hosts(
    inventory: Path, limit: Sequence[str] = ()
) -> tuple[list[str], dict[str, list[str]]]:
    """The inventory's host names (in ``limit``), in order, and each host's group names: what
    plan.plan_batches takes."""
    # Imported here: loading an inventory imports pyinfra_cli, which monkey-patches the stdlib
    # for gevent; a caller that only runs the subprocesses does not need that.
    from llmtune.doctor.inventory_run import load_inventory

    hosts = load_inventory(inventory, limit)
    names = [h.name for h in hosts]
    groups = {h.name: [getattr(g, "name", g) for g in h.groups] for h in hosts}
    return names, groups
