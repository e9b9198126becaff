"""The llama-server unit: rendered, checked by systemd's own tools, and run by a real systemd.

Three levels, none of them a model of systemd:

* ``systemd-analyze verify`` (systemd's unit loader, offline: no systemd as PID 1 needed; the
  machines here have none) must say nothing at all about either variant; its debug dump shows
  the command line as systemd parsed it, which must be the argv we meant.
* ``systemd-analyze security --offline=true`` scores the sandbox: the exposure may not rise above
  what was measured when the unit was written (GPU 1.4, CPU 1.2).
* A Debian 12 host booted with systemd-nspawn (tests/hosts) runs the unit with a stand-in
  binary that reports what it got: the exact argv, the service user, the CPU pinning, the API
  key through the credential, the sandbox; kill -9 brings it back within 5 s; the GPU variant
  refuses to start where nvidia_uvm and its nodes are missing.

Neither `verify` nor `security` needs the service user to exist (systemd resolves users only
when it starts the unit); `verify` does need ExecStart='s binary to be an executable file.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hosts import fleet_fixture

from llmtune.planner.unit import (
    DEFAULT_BINARY,
    ServiceSpec,
    UnitError,
    exec_line,
    format_cpu_affinity,
    render_unit,
    systemd_quote,
)

# Exposure scores measured with systemd 252 when the unit was written: a hardening line lost
# (or weakened) raises them.
MAX_EXPOSURE = {"gpu": 1.4, "cpu": 1.2}

# Arguments that each break a naive quoting: spaces, both quotes, backslashes, specifiers,
# variables in both spellings, a lone ';' (systemd's command separator), the empty string,
# tabs and a newline, non-ASCII.
TRICKY = [
    "--alias",
    'my "model" it\'s',
    "C:\\models\\x",
    "100%",
    "%n%%d",
    "$HOME",
    "${HOME}",
    "$$",
    ";",
    "",
    "a\tb",
    "two\nlines",
    "naïve ü",
    "--",
]


def gpu_spec(binary: str = DEFAULT_BINARY, **kw) -> ServiceSpec:
    base = {
        "argv": ["-m", "/srv/models/model.gguf", "--port", "8080", "-ngl", "99"],
        "binary": binary,
        "cpu_affinity": (0, 1, 2, 3, 8),
        "model_paths": ("/srv/models/model.gguf", "/srv/models/mmproj.gguf"),
        "gpu_devices": ("/dev/nvidia0", "/dev/nvidia1"),
    }
    return ServiceSpec(**{**base, **kw})


def cpu_spec(binary: str = DEFAULT_BINARY, **kw) -> ServiceSpec:
    base = {
        "argv": ["-m", "/srv/models/model.gguf", "--port", "8080", "--threads", "4"],
        "binary": binary,
        "cpu_affinity": (0, 1, 2, 3),
        "model_paths": ("/srv/models/model.gguf",),
    }
    return ServiceSpec(**{**base, **kw})


VARIANTS = {"gpu": gpu_spec, "cpu": cpu_spec}


def lines(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


@pytest.fixture
def server_binary(tmp_path: Path) -> str:
    """An executable file: `verify` checks that ExecStart's binary is one."""
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def write_unit(tmp_path: Path, spec: ServiceSpec) -> Path:
    # The file name is the unit name systemd-analyze loads it as.
    path = tmp_path / spec.unit_name
    path.write_text(render_unit(spec))
    return path


def analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is part of Debian 12's systemd package: install systemd"
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, check=False, env=env, timeout=60
    )


# --- quoting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("--port", "--port"),
        ("/srv/models/m.gguf", "/srv/models/m.gguf"),
        ("a b", '"a b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("it's", '"it\'s"'),
        ("back\\slash", '"back\\\\slash"'),
        ("100%", "100%%"),
        ("$HOME", "$$HOME"),
        ("${HOME} x", '"$${HOME} x"'),
        ("", '""'),
        (";", '";"'),
        ("a\tb", '"a\\tb"'),
        ("a\nb", '"a\\nb"'),
        ("\x01", '"\\x01"'),
        ("naïve", "naïve"),
    ],
)
def test_systemd_quote(arg: str, quoted: str):
    assert systemd_quote(arg) == quoted


def test_systemd_quote_refuses_nul():
    with pytest.raises(UnitError):
        systemd_quote("a\0b")


def test_exec_line_needs_an_absolute_command():
    assert exec_line(["/bin/sh", "-c", "echo $1"], "+") == '+/bin/sh -c "echo $$1"'
    with pytest.raises(UnitError):
        exec_line(["llama-server", "-m", "x"])


def test_format_cpu_affinity():
    assert format_cpu_affinity((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    assert format_cpu_affinity(()) == ""


@pytest.mark.parametrize(
    "bad",
    [
        {"binary": "bin/llama-server"},
        {"argv": ["--api-key", "secret"]},
        {"argv": ["--api-key-file=/k"]},
        {"argv": ["-m", "x\0y"]},
        {"description": "two\nlines"},
        {"gpu_devices": ("/dev/nvidiactl",)},
        {"model_paths": ("/srv/my models/m.gguf",)},
        {"api_key_file": "relative.key"},
        {"user": "Llama Server"},
        {"cpu_affinity": (-1,)},
    ],
)
def test_spec_refuses_what_would_make_a_wrong_unit(bad: dict):
    with pytest.raises(UnitError):
        cpu_spec(**bad)


# --- what each variant says ---------------------------------------------------------------------


def test_gpu_unit():
    unit = render_unit(gpu_spec())
    assert lines(unit, "DevicePolicy") == ["closed"]
    assert lines(unit, "DeviceAllow") == [
        "/dev/char/195:0 rwm",
        "/dev/char/195:1 rwm",
        "/dev/char/195:255 rwm",
        "char-nvidia-uvm rwm",
        "char-nvidia-caps r",
    ]
    assert lines(unit, "PrivateDevices") == []  # it would hide /dev/nvidia*
    assert lines(unit, "Wants") == [
        "network-online.target",
        "modprobe@nvidia.service modprobe@nvidia_uvm.service",
    ]
    after = lines(unit, "After")
    assert any("modprobe@nvidia_uvm.service" in a and "nvidia-persistenced" in a for a in after)
    pre = lines(unit, "ExecStartPre")
    assert pre[0] == (
        "+-/usr/bin/nvidia-modprobe --create-nvidia-device-file=0 --create-nvidia-device-file=1"
    )
    assert pre[1] == "+-/usr/bin/nvidia-modprobe --unified-memory --create-nvidia-device-file=0"
    assert pre[2].startswith("+/bin/sh -c ")
    assert pre[2].endswith(
        " llmtune-gpu-gate /sys/module/nvidia_uvm /dev/nvidiactl /dev/nvidia0 /dev/nvidia1 "
        "/dev/nvidia-uvm /dev/nvidia-uvm-tools"
    )
    assert lines(unit, "Environment") == ["CUDA_CACHE_PATH=%C/llama-server"]
    assert lines(unit, "MemoryDenyWriteExecute") == ["yes"]
    assert lines(unit, "CPUAffinity") == ["0-3,8"]


def test_cpu_unit():
    unit = render_unit(cpu_spec())
    assert lines(unit, "PrivateDevices") == ["yes"]
    assert lines(unit, "DevicePolicy") == ["closed"]
    assert lines(unit, "DeviceAllow") == []
    assert lines(unit, "ExecStartPre") == []
    assert lines(unit, "CacheDirectory") == []
    settings = [line for line in unit.splitlines() if not line.startswith("#")]
    assert "nvidia" not in "\n".join(settings).lower()
    assert lines(unit, "MemoryDenyWriteExecute") == ["yes"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_common_lines(variant: str):
    unit = render_unit(VARIANTS[variant]())
    expect = {
        "Type": ["exec"],
        "User": ["llama"],
        "Group": ["llama"],
        "EnvironmentFile": ["-/etc/llmtune/llama-server.env"],
        "LoadCredential": ["api-key:/etc/llmtune/llama-server.key"],
        "LimitMEMLOCK": ["infinity"],
        "Restart": ["on-failure"],
        "RestartSec": ["1"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "ProtectKernelLogs": ["yes"],
        "ProtectControlGroups": ["yes"],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "RestrictNamespaces": ["yes"],
        "LockPersonality": ["yes"],
        "RestrictRealtime": ["yes"],
        "SystemCallArchitectures": ["native"],
        "WantedBy": ["multi-user.target"],
    }
    if variant == "cpu":
        expect |= {"Wants": ["network-online.target"], "After": ["network-online.target"]}
    for key, values in expect.items():
        assert lines(unit, key) == values, key
    spec = VARIANTS[variant]()
    assert lines(unit, "ReadOnlyPaths") == [f"-{p}" for p in spec.model_paths]
    exec_start = lines(unit, "ExecStart")[0]
    assert exec_start.startswith(DEFAULT_BINARY + " -m /srv/models/model.gguf --port 8080")
    # The key is a credential: a path (expanded by systemd), never the key itself.
    assert exec_start.endswith(" --api-key-file %d/api-key")


def test_no_key_no_pinning():
    unit = render_unit(cpu_spec(api_key_file=None, cpu_affinity=()))
    assert lines(unit, "LoadCredential") == []
    assert "--api-key-file" not in unit
    assert lines(unit, "CPUAffinity") == []


def test_model_under_home_is_bound_into_an_empty_home():
    # ProtectHome=yes hides /home for good; tmpfs gives an empty one the model is bound into.
    unit = render_unit(cpu_spec(model_paths=("/home/ana/models/m.gguf", "/srv/mmproj.gguf")))
    assert lines(unit, "ProtectHome") == ["tmpfs"]
    assert lines(unit, "BindReadOnlyPaths") == ["-/home/ana/models/m.gguf"]
    assert lines(unit, "ReadOnlyPaths") == ["-/srv/mmproj.gguf"]


# --- systemd's own verdicts (offline) -----------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_systemd_analyze_verify_is_clean(tmp_path: Path, server_binary: str, variant: str):
    path = write_unit(tmp_path, VARIANTS[variant](server_binary, argv=["-m", "/m.gguf", *TRICKY]))
    proc = analyze("verify", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == ""


def test_systemd_analyze_verify_catches_a_missing_binary(tmp_path: Path):
    # So a clean verify above means something: the same unit with no binary is an error.
    proc = analyze("verify", str(write_unit(tmp_path, cpu_spec("/nonexistent/llama-server"))))
    assert proc.returncode != 0
    assert "/nonexistent/llama-server is not executable" in proc.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_security_exposure(tmp_path: Path, server_binary: str, variant: str):
    path = write_unit(tmp_path, VARIANTS[variant](server_binary))
    proc = analyze("security", "--offline=true", "--no-pager", str(path))
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE[variant], proc.stdout


def _unquote_dump(text: str) -> list[str]:
    """Split the "Command Line:" of systemd's unit dump back into argv. systemd writes each
    word plain, or in double quotes with C escapes (\\" \\\\ \\$ \\t \\n \\NNN) inside."""
    simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    words: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
        elif text[i] == '"':
            word, i = [], i + 1
            while text[i] != '"':
                if text[i] == "\\":
                    nxt = text[i + 1]
                    if nxt in "01234567":
                        word.append(chr(int(text[i + 1 : i + 4], 8)))
                        i += 4
                        continue
                    word.append(simple.get(nxt, nxt))
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            words.append("".join(word))
            i += 1
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            words.append(text[i:end])
            i = end
    return words


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_systemd_parses_exec_start_back_to_our_argv(
    tmp_path: Path, server_binary: str, variant: str
):
    """systemd's own parser (verify's unit dump, at debug level) reads ExecStart= back into the
    argv we rendered. "$" is still doubled there: systemd undoubles it when it runs the command
    (the container test below sees the final argv)."""
    spec = VARIANTS[variant](server_binary, argv=["-m", "/m.gguf", *TRICKY], api_key_file=None)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_LEVEL": "debug"}
    proc = analyze("verify", str(write_unit(tmp_path, spec)), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dump = proc.stdout + proc.stderr
    # The newline argument puts a raw newline into the dump's line: take the text up to the
    # next dump key instead of one line.
    match = re.search(r"-> ExecStart:\n\s*Command Line: (.*?)\n\s*\S+: ", dump, re.S)
    assert match, dump[-3000:]
    parsed = _unquote_dump(match.group(1))
    assert parsed == [server_binary, "-m", "/m.gguf", *(a.replace("$", "$$") for a in TRICKY)]


# --- a real systemd -----------------------------------------------------------------------------

# Stands in for llama-server: reports, as one JSON line on stdout (the journal), what the unit
# gave it, then waits like a server.
STUB = r"""#!/usr/bin/python3
import hashlib, json, os, resource, signal, sys

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return exc.strerror

args = sys.argv
key = args[args.index("--api-key-file") + 1] if "--api-key-file" in args else None
report = {
    "argv": args,
    "user": __import__("pwd").getpwuid(os.getuid()).pw_name,
    "uid_map": open("/proc/self/uid_map").read().split(),
    "affinity": sorted(os.sched_getaffinity(0)),
    "key_sha256": hashlib.sha256(open(key, "rb").read()).hexdigest() if key else None,
    "key_source": attempt(lambda: open("/etc/llmtune/llama-server.key").read()),
    "models": [attempt(lambda p=p: open(p).read()) for p in os.environ["STUB_MODELS"].split()],
    "write_etc": attempt(lambda: open("/etc/stub-was-here", "w")),
    "write_tmp": attempt(lambda: open("/tmp/stub-was-here", "w")),
    "dev": sorted(os.listdir("/dev")),
    "no_new_privs": [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")],
    "cap_eff": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")],
}
print("STUB " + json.dumps(report), flush=True)
signal.pause()
"""
KEY = "k3y-with-$pecial %chars\n"
PRIVATE_DEV = {"char", "fd", "full", "hugepages", "log", "mqueue", "null", "ptmx", "pts"}
PRIVATE_DEV |= {"random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"}
MODELS = ("/srv/models/model.gguf", "/home/ana/models/mmproj.gguf")

fleet = fleet_fixture(1, names=["llamahost"])


@pytest.fixture(scope="module")
def host(fleet):
    """The container, prepared as the llama-server deploy leaves a host: the service user, a
    build in the llmtune layout (the stand-in), models, the 0600 key."""
    host = fleet[0]
    host.run(
        "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "
        "llama && install -d /etc/llmtune /srv/models /home/ana/models "
        f"$(dirname {DEFAULT_BINARY})"
    )
    host.run(["sh", "-c", f"cat > {DEFAULT_BINARY} && chmod 755 {DEFAULT_BINARY}"], input=STUB)
    for path in MODELS:
        host.run(["sh", "-c", f"cat > {path} && chmod 644 {path}"], input="GGUF")
    host.run(
        ["sh", "-c", "umask 077 && cat > /etc/llmtune/llama-server.key"],
        input=KEY,
    )
    return host


def install(host, spec: ServiceSpec) -> None:
    unit = render_unit(spec)
    # The stand-in learns which model files to open (a test-only line).
    unit = unit.replace("[Service]\n", f'[Service]\nEnvironment="STUB_MODELS={" ".join(MODELS)}"\n')
    host.run(["sh", "-c", f"cat > {spec.unit_path}"], input=unit)
    host.run(["systemctl", "daemon-reload"])


def reports(host, unit: str) -> list[dict]:
    out = host.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout
    return [json.loads(line[5:]) for line in out.splitlines() if line.startswith("STUB ")]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def main_pid(host, unit: str) -> int:
    out = host.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout
    return int(out.strip() or 0)


@pytest.mark.container
def test_systemd_runs_the_unit_as_rendered(host):
    spec = cpu_spec(argv=["-m", MODELS[0], *TRICKY], cpu_affinity=(0,), model_paths=MODELS)
    install(host, spec)
    host.run(["systemctl", "start", spec.unit_name])
    report = wait_for(lambda: reports(host, spec.unit_name), 10, "the stand-in's report")[-1]
    credentials = f"/run/credentials/{spec.unit_name}"
    # Every tricky argument arrives exactly as given: systemd parsed and expanded our quoting.
    assert report["argv"] == [
        DEFAULT_BINARY,
        "-m",
        MODELS[0],
        *TRICKY,
        "--api-key-file",
        f"{credentials}/api-key",
    ]
    assert report["user"] == "llama"
    assert report["affinity"] == [0]
    # The key arrives through the credential; the source file stays out of reach (root, 0600).
    assert report["key_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()
    assert report["key_source"] == "Permission denied"
    # Both models readable, the one under /home too (bound into an empty /home).
    assert report["models"] == ["ok", "ok"]
    assert report["write_etc"] == "Read-only file system"
    assert report["write_tmp"] == "ok"
    # PrivateDevices: a /dev of pseudo devices only (the container's own has console, net...).
    assert set(report["dev"]) <= PRIVATE_DEV, report["dev"]
    assert report["no_new_privs"] == ["1"]
    assert int(report["cap_eff"][0], 16) == 0
    # PrivateUsers: a user namespace that maps root and the service user only.
    assert len(report["uid_map"]) == 6 and "4294967295" not in report["uid_map"]
    show = host.run(
        ["systemctl", "show", "-p", "LimitMEMLOCK", "-p", "User", "-p", "Restart", spec.unit_name]
    ).stdout.split()
    # nspawn keeps CAP_SYS_RESOURCE from the container, so the running limit stays at 8 MiB
    # there; on a host systemd raises it. What systemd loaded is the unit's value.
    assert sorted(show) == ["LimitMEMLOCK=infinity", "Restart=on-failure", "User=llama"]


@pytest.mark.container
def test_kill_9_is_back_within_5_seconds(host):
    spec = cpu_spec(model_paths=MODELS)
    install(host, spec)
    host.run(["systemctl", "restart", spec.unit_name])
    first = wait_for(lambda: main_pid(host, spec.unit_name), 10, "a main PID")
    wait_for(lambda: reports(host, spec.unit_name), 10, "the stand-in's report")
    killed = time.monotonic()
    host.run(["kill", "-9", str(first)])

    def back() -> int:
        pid = main_pid(host, spec.unit_name)
        active = host.run(["systemctl", "is-active", spec.unit_name], check=False).stdout.strip()
        return pid if pid not in (0, first) and active == "active" else 0

    second = wait_for(back, 5, "llama-server back after kill -9")
    took = time.monotonic() - killed
    assert second != first and took < 5
    restarts = host.run(["systemctl", "show", "-p", "NRestarts", "--value", spec.unit_name])
    assert restarts.stdout.strip() == "1"
    # SIGKILL counts as a failure for Restart=on-failure (Result=signal), unlike a clean exit.
    journal = host.run(["journalctl", "-u", spec.unit_name, "-o", "cat", "--no-pager"]).stdout
    assert "Failed with result 'signal'" in journal
    host.run(["systemctl", "stop", spec.unit_name])


@pytest.mark.container
def test_gpu_unit_refuses_to_start_without_nvidia_uvm(host):
    """The container has no NVIDIA driver: the GPU unit must fail its start, loudly, instead of
    running llama-server on the CPU."""
    spec = gpu_spec(name="llama-gpu", model_paths=MODELS)
    install(host, spec)
    start = host.run(["systemctl", "start", spec.unit_name], check=False)
    assert start.returncode != 0
    journal = host.run(["journalctl", "-u", spec.unit_name, "-o", "cat", "--no-pager"]).stdout
    assert "llmtune: /sys/module/nvidia_uvm is missing: CUDA would fall back to the CPU" in journal
    # The optional nvidia-modprobe steps were skipped ("-"), not fatal.
    assert "Executable /usr/bin/nvidia-modprobe missing, skipping" in journal
    assert reports(host, spec.unit_name) == []  # the server never ran
    host.run(["systemctl", "stop", spec.unit_name], check=False)
