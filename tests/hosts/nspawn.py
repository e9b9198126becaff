"""Real systemd test hosts: Debian 12 containers booted with systemd-nspawn, reached over SSH.

The deploys are tested against real hosts: each :class:`Host` is a Debian 12 (bookworm) root
filesystem booted by ``systemd-nspawn -b``, so systemd (PID 1 of the container), dbus, logind,
sshd, apt, tuned... all run for real. pyinfra reaches a host over SSH on ``127.0.0.1:PORT``
(:meth:`Host.pyinfra_host`); test assertions enter it directly with ``nsenter``
(:meth:`Host.run`, :meth:`Host.read`, :meth:`Host.snapshot`).

Lifecycle
---------
* :func:`build_rootfs` debootstraps the root filesystem ONCE into a cache directory
  (``/var/tmp/llmtune-test`` or ``$LLMTUNE_TEST_CACHE``) and reuses it on later runs. A stamp
  file, written last and holding a hash of the recipe, marks a complete build: an interrupted
  build (or a changed recipe) is redone from scratch.
* Each :class:`Host` gets its own writable copy of that root filesystem (an overlayfs whose lower
  layer is the cached rootfs, or a ``cp -a`` copy where overlayfs is not available), its own
  hostname, machine-id and sshd port. Its disk lives until :meth:`Host.destroy`, so
  :meth:`Host.restart` is a real reboot that keeps what the deploy wrote on disk.
* :class:`Fleet` starts N hosts in parallel and always tears them down (containers killed,
  overlays unmounted, copies removed), also on failure and KeyboardInterrupt. Containers left
  over by a test run that was killed outright are reaped by the next run (:func:`reap_stale_runs`),
  and a container's ``systemd-nspawn`` gets SIGTERM (an orderly shutdown) when the test process
  dies (``setpriv --pdeathsig``).

The containers share this machine's network (no ``--private-network``): each sshd listens on its
own port on 127.0.0.1 only, and apt inside reaches Debian's mirrors like this machine does.
Anything else a deploy starts listens on the SHARED network: two hosts running a service on the
same port collide.

Sysfs stand-ins (what is real and what is not)
----------------------------------------------
Inside a container ``/sys`` is the kernel's sysfs mounted read-only, and the test machines are
VMs with no cpufreq at all. So the harness bind-mounts WRITABLE plain directories over the
sysfs paths the deploys and ``llmtune doctor`` write and read (``--bind=HOSTDIR:/sys/...``):

* ``/sys/kernel/mm/transparent_hugepage``: a copy of this machine's real directory (every
  readable file, ``enabled`` = ``always [madvise] never``, ``defrag`` =
  ``always defer defer+madvise [madvise] never`` on a stock kernel).
* ``/sys/devices/system/cpu``: a copy of this machine's real directory (online, possible,
  present, cpuN/topology/*, cpuN/uevent, the ``cpuN/subsystem -> ../../../../bus/cpu`` links
  that udev/pyudev follow to enumerate CPUs...) plus a synthesized intel_pstate (HWP) cpufreq in
  the real layout: ``cpufreq/policyN/*`` with ``cpuN/cpufreq -> ../cpufreq/policyN``,
  ``intel_pstate/*`` and ``cpuN/power/energy_perf_bias``. Boot defaults: driver
  ``intel_pstate``, governor ``powersave``, EPP ``balance_performance``
  (see :data:`CPUFREQ_DEFAULTS`).

The kernel is modelled honestly on one point that matters to the tests: these files are kernel
state, not disk state. On every (re)boot (:meth:`Host.start`, :meth:`Host.restart`) the
harness resets the stand-ins to their boot defaults, exactly as a real reboot resets sysfs. A
setting survives a restart only if the deploy made it persistent inside the host (tuned's
profile applied again at boot, a tmpfiles.d/sysctl.d/systemd unit that writes it at boot...).

What a write does is modelled too (:class:`KernelModel`): right after a file is written, the
harness rewrites it the way sysfs would show it (``echo always > enabled`` reads back
``[always] madvise never``; intel_pstate's ``performance`` governor forces EPP to
``performance``, which is how ``tuned-adm profile throughput-performance`` - governor only -
ends with EPP ``performance`` on real Intel hosts), and undoes writes the kernel would refuse
(invalid values, read-only attributes, EPP changes under the performance governor). Limits: the
writer never gets the kernel's EINVAL/EBUSY, and for about a millisecond after a write the file
holds the raw written text.

One more harness-only setting inside each host, because the stand-ins are plain
directories, not sysfs: ``SYSTEMD_DEVICE_VERIFY_SYSFS=0`` in systemd's DefaultEnvironment and
/etc/environment (udev otherwise refuses the cpu stand-in's devices: tuned then sees no CPU and
sets no governor). Reads from the container of every other sysfs path see this VM's real,
read-only sysfs (tuned's writes to /sys/block/*/queue/read_ahead_kb and to /proc/sys fail
there, which tuned logs and survives).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# --- configuration ------------------------------------------------------------------------------

CACHE_DIR = Path(os.environ.get("LLMTUNE_TEST_CACHE", "/var/tmp/llmtune-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("LLMTUNE_TEST_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,python3,iproute2,procps,kmod,sudo,ca-certificates"
)
# Packages this machine needs to build and boot the hosts (Debian package names).
HOST_PACKAGES = ("debootstrap", "systemd-container", "openssh-client")
HOST_TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "setpriv", "ssh", "ssh-keygen")
FIRST_PORT = 2201
CGROUP_PARENT = "llmtune-test"  # each host's cgroup: /sys/fs/cgroup/.../llmtune-test/RUN/NAME
BOOT_TIMEOUT = 180.0  # seconds; 3 hosts booting at once on 2 vCPUs take far less

# Bump when anything in _configure_rootfs changes: the stamp then no longer matches and the
# cached rootfs is rebuilt.
RECIPE_VERSION = "1"

THP_PATH = "/sys/kernel/mm/transparent_hugepage"
CPU_PATH = "/sys/devices/system/cpu"

# Boot defaults of the synthesized intel_pstate cpufreq (HWP active, as on a recent Intel CPU).
CPUFREQ_DEFAULTS = {
    "scaling_driver": "intel_pstate",
    "scaling_governor": "powersave",
    "scaling_available_governors": "performance powersave",
    "energy_performance_preference": "balance_performance",
    "energy_performance_available_preferences": (
        "default performance balance_performance balance_power power"
    ),
    "cpuinfo_max_freq": "4700000",
    "cpuinfo_min_freq": "800000",
    "cpuinfo_transition_latency": "0",
    "base_frequency": "2400000",
    "scaling_cur_freq": "2400000",
    "scaling_max_freq": "4700000",
    "scaling_min_freq": "800000",
    "scaling_setspeed": "<unsupported>",
}
INTEL_PSTATE_DEFAULTS = {
    "status": "active",
    "hwp_dynamic_boost": "0",
    "max_perf_pct": "100",
    "min_perf_pct": "17",
    "no_turbo": "0",
    "num_pstates": "40",
    "turbo_pct": "49",
}
ENERGY_PERF_BIAS_DEFAULT = "6"  # "normal"
# Used where this machine's kernel has no THP directory at all.
THP_DEFAULTS = {
    "enabled": "always [madvise] never",
    "defrag": "always defer defer+madvise [madvise] never",
    "use_zero_page": "1",
    "hpage_pmd_size": "2097152",
    "shmem_enabled": "always within_size advise [never] deny force",
}

_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr (building rootfs, booting host X, ready in N s) for long CI runs."""
    print(f"[test-hosts +{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class HarnessError(RuntimeError):
    """The harness could not build, boot or reach a host."""


# --- this machine ------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise HarnessError(
            "the real-host tests (systemd-nspawn containers) must run as root: they mount, "
            "debootstrap and boot containers. CI runs them as root; run `sudo scripts/test.sh` "
            "(or deselect them with `-m 'not container'` when you only want the unit tests)."
        )


def ensure_host_tools() -> None:
    """Install debootstrap, systemd-container, openssh-client with apt-get where missing."""
    require_root()
    if all(shutil.which(t) for t in HOST_TOOLS):
        return
    log(f"installing {' '.join(HOST_PACKAGES)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *HOST_PACKAGES], check=True, env=env)
    missing = [t for t in HOST_TOOLS if not shutil.which(t)]
    if missing:
        raise HarnessError(f"still missing after apt-get install: {missing}")


def prepare_host() -> None:
    """What systemd PID 1 would provide on this machine and nspawn relies on (idempotent).

    * a tmpfs on /run/systemd/nspawn: without it nspawn refuses with ``Attempted to remove disk
      file system under "/run/systemd/nspawn/propagate/..."`` and the container exits;
    * /run/systemd/inaccessible/{reg,dir,fifo,chr,blk}, mode 000: systemd inside the container
      bind-mounts them over paths it makes inaccessible (ProtectSystem=, InaccessiblePaths=).
    """
    ensure_host_tools()
    nspawn_run = Path("/run/systemd/nspawn")
    nspawn_run.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(nspawn_run):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(nspawn_run)], check=True
        )
    inaccessible = Path("/run/systemd/inaccessible")
    inaccessible.mkdir(parents=True, exist_ok=True)
    nodes = {
        "reg": lambda p: p.touch(),
        "dir": lambda p: p.mkdir(),
        "fifo": lambda p: os.mkfifo(p),
        "chr": lambda p: os.mknod(p, 0o600 | 0o020000, os.makedev(0, 0)),
        "blk": lambda p: os.mknod(p, 0o600 | 0o060000, os.makedev(0, 0)),
    }
    for name, make in nodes.items():
        path = inaccessible / name
        if not os.path.lexists(path):
            make(path)
        os.chmod(path, 0)


# --- the cached root filesystem ----------------------------------------------------------------


@dataclass(frozen=True)
class Rootfs:
    """A complete, read-only-by-convention Debian rootfs and the root SSH key its hosts accept."""

    path: Path
    key: Path  # private key; ``key.pub`` is in the rootfs's /root/.ssh/authorized_keys


_SSHD_CONFIG = """\
# llmtune test host: root logs in with the harness's key only, on 127.0.0.1 only (the
# containers share this machine's network). The port is set per host in port.conf.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
ListenAddress 127.0.0.1
"""


def _recipe_hash() -> str:
    recipe = "\n".join([RECIPE_VERSION, SUITE, MIRROR, PACKAGES, _SSHD_CONFIG])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _chroot(root: Path, *cmd: str) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    subprocess.run(["chroot", str(root), *cmd], check=True, env=env)


def _configure_rootfs(root: Path, key: Path) -> None:
    """Everything on top of debootstrap. Bump RECIPE_VERSION when changing this."""
    # apt inside the hosts: the deploys `apt-get install tuned`, so keep apt's lists in the rootfs
    # (fresh ones: debootstrap's are not always usable by apt).
    (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)  # nspawn replaces it at boot (shared network)
    _chroot(root, "apt-get", "update", "-qq")
    _chroot(root, "apt-get", "clean")
    # sshd: root with the harness key; the port is per host (Host._prepare_disk).
    (root / "etc/ssh/sshd_config.d/llmtune-test.conf").write_text(_SSHD_CONFIG)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # Hostname and machine-id are per host; an empty machine-id here would make every host's
    # first boot a "first boot" (systemctl preset-all), so each host gets a real one instead.
    (root / "etc/hostname").write_text("llmtune-test\n")
    (root / "etc/machine-id").write_text("")


def build_rootfs(cache_dir: Path = CACHE_DIR) -> Rootfs:
    """Debootstrap Debian 12 into ``cache_dir`` once and return it; reuse a complete build.

    Safe to call many times and from several processes (a lock file serializes the build).
    """
    require_root()
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir / f"rootfs-{SUITE}"
    stamp = cache_dir / f"rootfs-{SUITE}.complete"
    key = cache_dir / "id_ed25519"
    recipe = _recipe_hash()
    with _locked(cache_dir / "rootfs.lock"):
        if stamp.exists() and stamp.read_text().strip() == recipe and root.is_dir():
            return Rootfs(root, key)
        ensure_host_tools()
        started = time.monotonic()
        log(f"building the Debian {SUITE} rootfs in {root} (debootstrap, about a minute)")
        stamp.unlink(missing_ok=True)
        for stale in (root, cache_dir / f"rootfs-{SUITE}.tmp"):
            if stale.exists():
                shutil.rmtree(stale)
        for path in (key, Path(f"{key}.pub")):
            path.unlink(missing_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmtune-test", "-f", str(key)],
            check=True,
        )
        tmp = cache_dir / f"rootfs-{SUITE}.tmp"
        debs = cache_dir / "debs"  # downloaded .debs, reused by a rebuild
        debs.mkdir(exist_ok=True)
        proc = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                f"--cache-dir={debs}",
                SUITE,
                str(tmp),
                MIRROR,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise HarnessError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
        _configure_rootfs(tmp, key)
        tmp.rename(root)
        stamp.write_text(recipe + "\n")  # last: marks the build complete
        log(f"rootfs built in {time.monotonic() - started:.0f} s")
    return Rootfs(root, key)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


# --- sysfs stand-ins ---------------------------------------------------------------------------


def _copy_sysfs(src: Path, dst: Path) -> None:
    """Copy a sysfs tree as plain files: readable files with their content (sysfs reports 4096
    bytes for every file, so read them), symlinks as symlinks, unreadable files empty."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir(follow_symlinks=False):
            _copy_sysfs(Path(entry.path), target)
        else:
            try:
                with open(entry.path, "rb") as f:
                    content = f.read()
            except OSError:
                content = b""  # write-only (probe, release...) or EIO on read
            target.write_bytes(content)
            os.chmod(target, entry.stat(follow_symlinks=False).st_mode & 0o777)


# Synthesized files the kernel lets root write (0644); all others are read-only (0444).
WRITABLE_FILES = {
    "scaling_governor",
    "energy_performance_preference",
    "scaling_max_freq",
    "scaling_min_freq",
    "scaling_setspeed",
    "energy_perf_bias",
    "hwp_dynamic_boost",
    "max_perf_pct",
    "min_perf_pct",
    "no_turbo",
    "status",
    *THP_DEFAULTS,
}


def _write_files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content + "\n")
        os.chmod(directory / name, 0o644 if name in WRITABLE_FILES else 0o444)


def build_sysfs_template(dst: Path) -> None:
    """The boot-default content of the stand-ins: ``dst/thp`` and ``dst/cpu`` (see module doc)."""
    thp = dst / "thp"
    if Path(THP_PATH).is_dir():
        _copy_sysfs(Path(THP_PATH), thp)
    else:
        _write_files(thp, THP_DEFAULTS)

    cpu = dst / "cpu"
    _copy_sysfs(Path(CPU_PATH), cpu)
    cpus = sorted(
        int(p.name[3:]) for p in cpu.iterdir() if p.name[3:].isdigit() and p.name[:3] == "cpu"
    )
    # Replace whatever cpufreq this machine has by the synthesized intel_pstate one.
    shutil.rmtree(cpu / "cpufreq", ignore_errors=True)
    shutil.rmtree(cpu / "intel_pstate", ignore_errors=True)
    for n in cpus:
        policy = cpu / "cpufreq" / f"policy{n}"
        _write_files(policy, {**CPUFREQ_DEFAULTS, "affected_cpus": str(n), "related_cpus": str(n)})
        link = cpu / f"cpu{n}" / "cpufreq"
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(f"../cpufreq/policy{n}")
        _write_files(cpu / f"cpu{n}" / "power", {"energy_perf_bias": ENERGY_PERF_BIAS_DEFAULT})
    _write_files(cpu / "intel_pstate", INTEL_PSTATE_DEFAULTS)


_template_lock = threading.Lock()
_template_dirs: dict[Path, Path] = {}


def sysfs_template(cache_dir: Path = CACHE_DIR) -> Path:
    """Build the stand-in template once per process (from this machine's real sysfs)."""
    with _template_lock:
        if cache_dir not in _template_dirs:
            runs = cache_dir / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            tmpl = Path(tempfile.mkdtemp(prefix=f"sysfs-{os.getpid()}-", dir=runs))
            build_sysfs_template(tmpl)
            _template_dirs[cache_dir] = tmpl
            atexit.register(shutil.rmtree, tmpl, True)
        return _template_dirs[cache_dir]


# --- the kernel's side of the stand-ins ---------------------------------------------------------

# /sys/devices/system/cpu/cpuN/power/energy_perf_bias accepts these names and shows the number.
EPB_NAMES = {
    "performance": 0,
    "balance-performance": 4,
    "normal": 6,
    "normal-powersave": 7,
    "balance-power": 8,
    "power": 15,
}
_IN_CLOSE_WRITE = 0x00000008
_IN_IGNORED = 0x00008000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


class _Inotify:
    """One inotify instance and a daemon thread calling ``handler(path)`` after each write to a
    file (IN_CLOSE_WRITE) in a watched directory."""

    def __init__(self) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise HarnessError(f"inotify_init1: errno {ctypes.get_errno()}")
        self._watches: dict[int, tuple[Path, object]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="sysfs-kernel-model", daemon=True).start()

    def watch(self, directory: Path, handler) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), _IN_CLOSE_WRITE)
        if wd < 0:
            raise HarnessError(f"inotify_add_watch {directory} failed")
        with self._lock:
            self._watches[wd] = (directory, handler)

    def _loop(self) -> None:
        import select
        import struct

        while True:
            select.select([self.fd], [], [])
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode()
                offset += 16 + size
                with self._lock:
                    directory, handler = self._watches.get(wd, (None, None))
                    if mask & _IN_IGNORED:  # the directory was removed (a reboot's reset)
                        self._watches.pop(wd, None)
                if handler is None or not name or not mask & _IN_CLOSE_WRITE:
                    continue
                try:
                    handler(directory / name)
                except Exception as exc:  # never let the model thread die
                    log(f"sysfs kernel model: {directory / name}: {exc!r}")


_inotify: _Inotify | None = None
_inotify_lock = threading.Lock()


def _watcher() -> _Inotify:
    global _inotify
    with _inotify_lock:
        if _inotify is None:
            _inotify = _Inotify()
        return _inotify


class KernelModel:
    """What the kernel does when a stand-in file is written, applied right after the write.

    The container writes plain files; a real sysfs attribute validates and transforms the write.
    Right after each write (inotify IN_CLOSE_WRITE, within a millisecond or so) this model
    rewrites the file the way the kernel would show it, or puts the previous content back where
    the kernel would have refused the write (the writer got no error, though: a plain file
    cannot fail a write the way sysfs does with EINVAL/EBUSY):

    * selectors (THP ``enabled``, ``defrag``, ``shmem_enabled``, ``hugepages-*/enabled``): a
      valid choice reads back bracketed (``always`` -> ``[always] madvise never``);
    * ``scaling_governor``: one of ``scaling_available_governors``. intel_pstate (HWP) semantics:
      ``performance`` forces EPP to ``performance`` and refuses other EPP values while it lasts;
      back to ``powersave`` restores the EPP from before;
    * ``energy_performance_preference``: one of the available preferences or 0-255;
      ``default`` reads back as the boot default;
    * ``energy_perf_bias``: 0-15 or a name (``performance`` -> ``0``, ``normal`` -> ``6``...);
    * numbers (``min_perf_pct``, ``scaling_max_freq``...): integers; ``intel_pstate/status``:
      active/passive/off;
    * read-only attributes (``scaling_driver``, ``cpuinfo_*``, ``online``...): writes undone;
    * everything read back ends with a newline, as sysfs does.
    """

    def __init__(self, thp_dir: Path, cpu_dir: Path) -> None:
        self.thp_dir = thp_dir
        self.cpu_dir = cpu_dir
        self._last: dict[Path, str] = {}  # the content the "kernel" last showed, per file
        self._epp_before_performance: dict[Path, str] = {}

    def attach(self) -> None:
        """Record the boot content and watch the directories (after each reset)."""
        self._last.clear()
        self._epp_before_performance.clear()
        dirs = [
            self.thp_dir,
            *self.thp_dir.glob("hugepages-*"),
            self.cpu_dir,
            self.cpu_dir / "intel_pstate",
            *self.cpu_dir.glob("cpufreq/policy*"),
            *self.cpu_dir.glob("cpu[0-9]*/power"),
        ]
        for directory in dirs:
            if not directory.is_dir() or directory.is_symlink():
                continue
            for f in directory.iterdir():
                if f.is_file() and not f.is_symlink():
                    self._last[f] = f.read_text()
            _watcher().watch(directory, self.on_write)

    def _show(self, path: Path, content: str) -> None:
        self._last[path] = content
        if path.read_text() != content:
            with open(path, "w") as f:
                f.write(content)

    def on_write(self, path: Path) -> None:
        if path not in self._last:
            return  # a file the kernel would not have let anyone create; left alone
        written = path.read_text()
        if written == self._last[path]:
            return  # our own rewrite, or the same content again
        value = written.strip()
        previous = self._last[path]
        shown = self._accept(path, value, previous)
        self._show(path, previous if shown is None else shown)

    def _accept(self, path: Path, value: str, previous: str) -> str | None:
        """The content the kernel shows after writing ``value``; None: refused."""
        name = path.name
        if "[" in previous:  # a selector: always [madvise] never
            choices = previous.replace("[", "").replace("]", "").split()
            if value not in choices:
                return None
            return " ".join(f"[{c}]" if c == value else c for c in choices) + "\n"
        if not path.stat().st_mode & 0o200:
            return None  # read-only attribute
        policy = path.parent
        if name == "scaling_governor":
            available = (policy / "scaling_available_governors").read_text().split()
            if value not in available:
                return None
            epp = policy / "energy_performance_preference"
            old = previous.strip()
            if epp in self._last and value == "performance" and old != "performance":
                self._epp_before_performance[policy] = self._last[epp]
                self._show(epp, "performance\n")
            elif epp in self._last and old == "performance" and value != "performance":
                restored = self._epp_before_performance.pop(
                    policy, CPUFREQ_DEFAULTS["energy_performance_preference"] + "\n"
                )
                self._show(epp, restored)
            return value + "\n"
        if name == "energy_performance_preference":
            available = (policy / "energy_performance_available_preferences").read_text().split()
            if self._last.get(policy / "scaling_governor", "").strip() == "performance":
                return None if value != "performance" else "performance\n"  # EBUSY
            if value == "default":
                return CPUFREQ_DEFAULTS["energy_performance_preference"] + "\n"
            if value in available or (value.isdigit() and int(value) <= 255):
                return value + "\n"
            return None
        if name == "energy_perf_bias":
            if value in EPB_NAMES:
                return f"{EPB_NAMES[value]}\n"
            return value + "\n" if value.isdigit() and int(value) <= 15 else None
        if name == "status":
            return value + "\n" if value in ("active", "passive", "off") else None
        if previous.strip().lstrip("-").isdigit():
            return value + "\n" if value.lstrip("-").isdigit() else None
        return value + "\n"


# --- containers --------------------------------------------------------------------------------


def _overlay_works(cache_dir: Path) -> bool:
    """Whether overlayfs mounts here (instant per-host disks instead of a 300 MB copy)."""
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=cache_dir))
    try:
        for d in ("lower", "upper", "work", "merged"):
            (probe / d).mkdir()
        opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        ok = (
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe / "merged")], check=False)
        return ok
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _container_init(nspawn_pid: int) -> int | None:
    """The container's PID 1 (its systemd) seen from here: the descendant of systemd-nspawn
    whose NSpid ends in 1 (nspawn forks an intermediate child, then the init)."""
    todo = _children(nspawn_pid)
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and len(ids := line.split()[1:]) > 1 and ids[-1] == "1":
                return pid
        todo += _children(pid)
    return None


def _cgroup_roots() -> list[Path]:
    """The cgroup hierarchies systemd uses: the unified one alone (cgroup v2), or, on a hybrid
    setup like these VMs', the name=systemd v1 hierarchy plus the unified one."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [base / h for h in ("systemd", "unified") if (base / h / "cgroup.procs").exists()]


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup subtree bottom-up (cgroups empty of processes can be removed)."""
    if not path.is_dir():
        return
    for sub, _dirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(sub)


def _kill_cgroup(path: Path, timeout: float = 10) -> None:
    """SIGKILL every process in a cgroup subtree and wait until it is empty."""
    deadline = time.monotonic() + timeout
    while path.is_dir():
        pids = set()
        for procs in path.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


UDEV_ENV = "SYSTEMD_DEVICE_VERIFY_SYSFS=0"
CONTAINER_ENV = [
    UDEV_ENV,
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "TERM=dumb",
]


class Host:
    """One container: its disk, its stand-ins, its sshd port; boot, reboot, kill, inspect.

    The host-side paths: ``root`` (its disk as seen from here), ``thp_dir`` and ``cpu_dir`` (the
    stand-ins bound over /sys/kernel/mm/transparent_hugepage and /sys/devices/system/cpu),
    ``log_path`` (nspawn's output: the container's console). ``pid`` is its systemd, seen from
    here, while it runs.
    """

    def __init__(
        self, name: str, port: int, rootfs: Rootfs, workdir: Path, *, overlay: bool = True
    ) -> None:
        self.name = name
        self.port = port
        self.rootfs = rootfs
        self.dir = workdir / name
        self.overlay = overlay
        self.root = self.dir / ("merged" if overlay else "root")
        self.sysfs_dir = self.dir / "sys"
        self.thp_dir = self.sysfs_dir / "thp"
        self.cpu_dir = self.sysfs_dir / "cpu"
        self.log_path = self.dir / "console.log"
        self.kernel = KernelModel(self.thp_dir, self.cpu_dir)
        self.boots = 0
        self.boot_seconds: float | None = None
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self._disk_ready = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Host {self.name} port={self.port} {state}>"

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def key(self) -> Path:
        return self.rootfs.key

    def pyinfra_host(self) -> tuple[str, dict[str, object]]:
        """An inventory entry for pyinfra's API or an inventory file."""
        return (
            self.name,
            {
                "ssh_hostname": "127.0.0.1",
                "ssh_port": self.port,
                "ssh_user": "root",
                "ssh_key": str(self.key),
                "ssh_known_hosts_file": "/dev/null",
                "ssh_strict_host_key_checking": "no",
            },
        )

    def ssh_command(self, command: str | None = None) -> list[str]:
        """``ssh`` argv that logs into the host (for tests that shell out, e.g. llmtune doctor)."""
        argv = [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "root@127.0.0.1",
        ]
        return [*argv, command] if command is not None else argv

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the running container as root (nsenter into all its namespaces,
        clean environment). A string goes through /bin/sh -c. Raises on non-zero if ``check``."""
        if not self.running:
            raise HarnessError(f"{self.name} is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = [
            "nsenter",
            "-t",
            str(self.pid),
            "-a",
            "-r",
            "-w",
            "env",
            "-i",
            *CONTAINER_ENV,
            *argv,
        ]
        proc = subprocess.run(
            full, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and proc.returncode != 0:
            raise HarnessError(
                f"{self.name}: {cmd!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def read(self, path: str) -> str | None:
        """A file's content as the running container sees it (its mounts included), or None."""
        if not self.running:
            raise HarnessError(f"{self.name} is not running")
        try:
            return Path(f"/proc/{self.pid}/root{path}").read_text()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def unit_state(self, unit: str) -> tuple[str, str]:
        """``(systemctl is-enabled, systemctl is-active)``, e.g. ``("enabled", "active")``;
        ``is-enabled`` says ``not-found`` for a unit that does not exist."""
        enabled = self.run(["systemctl", "is-enabled", unit], check=False)
        active = self.run(["systemctl", "is-active", unit], check=False)
        return (enabled.stdout.strip() or "not-found", active.stdout.strip() or "unknown")

    def snapshot(
        self, paths: Iterable[str] = (), units: Iterable[str] = ()
    ) -> dict[str, dict[str, object]]:
        """The state a deploy may change, to compare before/after (e.g. ``--dry`` must change
        nothing): ``{"files": {path: content or None}, "units": {unit: (enabled, active)}}``."""
        return {
            "files": {p: self.read(p) for p in paths},
            "units": {u: self.unit_state(u) for u in units},
        }

    def system_state(self) -> str:
        """``systemctl is-system-running``: running, degraded, starting, stopping..."""
        return self.run(["systemctl", "is-system-running"], check=False).stdout.strip()

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def cgroups(self) -> list[Path]:
        """This host's own cgroup in each hierarchy (nspawn and the container live under it)."""
        return [base / CGROUP_PARENT / self.dir.parent.name / self.name for base in _cgroup_roots()]

    @property
    def running(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None and _alive(self.pid)

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot the container (stand-ins reset to boot defaults) and wait until it is up."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start booting, without waiting. Call from the main thread (see ``setpriv`` below)."""
        if self._nspawn is not None and self._nspawn.poll() is None:
            raise HarnessError(f"{self.name} is already running")
        self._prepare_disk()
        self._reset_sysfs()
        self.boots += 1
        self._started = time.monotonic()
        log(f"booting {self.name} (sshd on port {self.port}, boot #{self.boots})")
        argv = [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(self.root),
            "-b",
            # No machined/system bus on this machine: don't register, stay in our cgroup.
            "--register=no",
            "--keep-unit",
            "-M",
            self.name,
            "--hostname",
            self.name,
            "--console=read-only",  # the console goes to console.log
            f"--bind={self.thp_dir}:{THP_PATH}",
            f"--bind={self.cpu_dir}:{CPU_PATH}",
        ]
        # Its own cgroup: with --keep-unit nspawn puts the container under the caller's cgroup
        # (".../payload"), and two containers in the same one would manage the SAME unit cgroups
        # (system.slice/ssh.service...): stopping a unit in one host would kill the other's.
        procs = []
        for cgroup in self.cgroups:
            cgroup.mkdir(parents=True, exist_ok=True)
            procs.append(str(cgroup / "cgroup.procs"))
        argv = [
            "/bin/sh",
            "-c",
            'for p in $CGROUP_PROCS; do echo $$ > "$p" || exit 97; done; exec "$@"',
            "sh",
            *argv,
        ]
        if threading.current_thread() is threading.main_thread():
            # If the test process dies, nspawn gets SIGTERM and shuts its container down. Only
            # from the main thread: the death signal fires when the forking THREAD exits.
            argv = [*argv[:4], "setpriv", "--pdeathsig", "SIGTERM", "--", *argv[4:]]
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== boot #{self.boots} =====\n".encode())
            out.flush()
            self._nspawn = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not to nspawn
                env=dict(os.environ, CGROUP_PROCS=" ".join(procs)),
            )
        self.pid = None
        (self.dir / "nspawn.pid").write_text(f"{self._nspawn.pid}\n")

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Wait until systemd says running/degraded and sshd answers on the host's port."""
        deadline = self._started + timeout
        state = "no init yet"
        while time.monotonic() < deadline:
            if self._nspawn is None or self._nspawn.poll() is not None:
                raise HarnessError(f"{self.name}: systemd-nspawn exited\n{self.console_tail()}")
            if self.pid is None:
                self.pid = _container_init(self._nspawn.pid)
            if self.pid is not None:
                state = self.system_state()
                if state in ("running", "degraded") and _ssh_banner(self.port):
                    self.boot_seconds = time.monotonic() - self._started
                    log(f"{self.name} ready in {self.boot_seconds:.1f} s ({state})")
                    return
            time.sleep(0.25)
        raise HarnessError(
            f"{self.name} not ready after {timeout:.0f} s (system state: {state!r}, "
            f"ssh on {self.port}: {_ssh_banner(self.port)})\n{self.console_tail()}"
        )

    def stop(self, timeout: float = 60) -> None:
        """Orderly shutdown (what `poweroff` does): nspawn forwards SIGTERM to the container's
        systemd as a halt request. Falls back to :meth:`kill` after ``timeout`` seconds."""
        if self._nspawn is None or self._nspawn.poll() is not None:
            self._nspawn = None
            self.pid = None
            return
        log(f"stopping {self.name}")
        self._nspawn.send_signal(signal.SIGTERM)
        try:
            self._nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in {timeout:.0f} s: killing it")
            self.kill()
        self._nspawn = None
        self.pid = None

    def kill(self) -> None:
        """Pull the plug, now: usable in the middle of a deploy (pyinfra's SSH session drops).
        SIGKILL to the container's PID 1 kills every process of its PID namespace."""
        if self._nspawn is None:
            return
        log(f"killing {self.name}")
        init = self.pid or _container_init(self._nspawn.pid)
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        try:
            self._nspawn.wait(15)
        except subprocess.TimeoutExpired:
            self._nspawn.kill()
            self._nspawn.wait(15)
        for cgroup in self.cgroups:  # anything that escaped the PID namespace's end
            _kill_cgroup(cgroup)
        self._nspawn = None
        self.pid = None

    def restart(self, *, hard: bool = False, timeout: float = BOOT_TIMEOUT) -> None:
        """A real reboot keeping the disk: orderly shutdown (or, ``hard=True``, a power cut),
        sysfs stand-ins back to boot defaults, boot again, wait until ready."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def destroy(self) -> None:
        """Kill the container and remove its disk, overlay and stand-ins."""
        self.kill()
        if self.overlay and os.path.ismount(self.root):
            subprocess.run(["umount", "-l", str(self.root)], check=False)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)
        shutil.rmtree(self.dir, ignore_errors=True)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- internals --------------------------------------------------------------------------------

    def _prepare_disk(self) -> None:
        """The host's own disk, created on its first boot and kept until destroy()."""
        if self._disk_ready:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.overlay:
            for d in ("upper", "work", "merged"):
                (self.dir / d).mkdir(exist_ok=True)
            opts = f"lowerdir={self.rootfs.path},upperdir={self.dir}/upper,workdir={self.dir}/work"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)], check=True
            )
        else:
            subprocess.run(
                ["cp", "-a", "--reflink=auto", str(self.rootfs.path), str(self.root)], check=True
            )
        etc = self.root / "etc"
        (etc / "hostname").write_text(f"{self.name}\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (etc / "ssh/sshd_config.d/port.conf").write_text(f"Port {self.port}\n")
        # udev (sd-device) refuses device directories that are not on a real sysfs mount, and the
        # cpu stand-in is a plain directory: without this, tuned's cpu plugin (pyudev) finds no
        # CPU ("instance cpu: no matching devices available") and sets no governor. systemd's
        # documented test switch, for every service and every login (pam_env reads
        # /etc/environment for SSH sessions).
        conf = etc / "systemd/system.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "llmtune-test.conf").write_text(f"[Manager]\nDefaultEnvironment={UDEV_ENV}\n")
        environment = (etc / "environment").read_text() if (etc / "environment").exists() else ""
        (etc / "environment").write_text(f"{environment}{UDEV_ENV}\n")
        hosts = (etc / "hosts").read_text() if (etc / "hosts").exists() else ""
        (etc / "hosts").write_text(f"127.0.1.1\t{self.name}\n{hosts}")
        self._disk_ready = True

    def _reset_sysfs(self) -> None:
        """Boot defaults, as a real reboot gives: a fresh copy of the template."""
        shutil.rmtree(self.sysfs_dir, ignore_errors=True)
        shutil.copytree(sysfs_template(self.rootfs.path.parent), self.sysfs_dir, symlinks=True)
        self.kernel.attach()


# --- fleets and stale runs ---------------------------------------------------------------------


def reap_stale_runs(cache_dir: Path = CACHE_DIR) -> None:
    """Remove the containers and disks of earlier test runs whose process is gone (a run killed
    with SIGKILL cannot clean up after itself)."""
    runs = cache_dir / "runs"
    if not runs.is_dir():
        return
    for run in runs.iterdir():
        owner = run / "owner.pid"
        if not owner.exists():
            if run.name.startswith("sysfs-") and not _alive(int(run.name.split("-")[1])):
                shutil.rmtree(run, ignore_errors=True)
            continue
        try:
            if _alive(int(owner.read_text())):
                continue
        except ValueError:
            pass
        log(f"reaping the containers of a dead test run: {run}")
        for base in _cgroup_roots():  # every process of its containers, nspawn included
            _kill_cgroup(base / CGROUP_PARENT / run.name)
        for host_dir in run.iterdir():
            merged = host_dir / "merged"
            if os.path.ismount(merged):
                subprocess.run(["umount", "-l", str(merged)], check=False)
        for base in _cgroup_roots():
            _remove_cgroup(base / CGROUP_PARENT / run.name)
        shutil.rmtree(run, ignore_errors=True)


@dataclass(eq=False)
class Fleet:
    """N hosts started in parallel; always torn down by :meth:`close` (or ``with``)."""

    hosts: list[Host] = field(default_factory=list)
    workdir: Path | None = None
    start_seconds: float | None = None

    @classmethod
    def start(
        cls,
        count: int = 1,
        *,
        names: Sequence[str] | None = None,
        cache_dir: Path = CACHE_DIR,
        first_port: int = FIRST_PORT,
        overlay: bool | None = None,
        timeout: float = BOOT_TIMEOUT,
    ) -> Fleet:
        """Build (or reuse) the rootfs, boot ``count`` hosts at once and wait for all of them.

        ``names`` default to host1..hostN; ports are the first free ones from ``first_port``.
        On any failure (or KeyboardInterrupt) everything started so far is torn down.
        """
        names = list(names or [f"host{i + 1}" for i in range(count)])
        rootfs = build_rootfs(cache_dir)
        prepare_host()
        reap_stale_runs(cache_dir)
        if overlay is None:
            overlay = _overlay_works(cache_dir)
        runs = cache_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        fleet = cls(workdir=Path(tempfile.mkdtemp(prefix="run-", dir=runs)))
        assert fleet.workdir is not None
        (fleet.workdir / "owner.pid").write_text(f"{os.getpid()}\n")
        _live_fleets.add(fleet)
        try:
            port = first_port
            for name in names:
                while not _port_free(port):
                    port += 1
                fleet.hosts.append(Host(name, port, rootfs, fleet.workdir, overlay=overlay))
                port += 1
            started = time.monotonic()
            sysfs_template(cache_dir)
            for host in fleet.hosts:
                host.launch()  # main thread: see Host.launch
            with ThreadPoolExecutor(len(fleet.hosts)) as pool:
                for future in [pool.submit(h.wait_ready, timeout) for h in fleet.hosts]:
                    future.result()
            fleet.start_seconds = time.monotonic() - started
            log(f"{len(fleet.hosts)} host(s) ready in {fleet.start_seconds:.1f} s")
        except BaseException:
            fleet.close()
            raise
        return fleet

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def pyinfra_hosts(self) -> list[tuple[str, dict[str, object]]]:
        return [h.pyinfra_host() for h in self.hosts]

    def close(self) -> None:
        """Kill every container, unmount and remove every disk. Idempotent."""
        if self.hosts:
            log(f"tearing down {', '.join(h.name for h in self.hosts)}")
        errors: list[BaseException] = []
        for host in self.hosts:
            try:
                host.destroy()
            except BaseException as exc:  # keep tearing the others down
                errors.append(exc)
        self.hosts = []
        if self.workdir is not None:
            for base in _cgroup_roots():
                _remove_cgroup(base / CGROUP_PARENT / self.workdir.name)
                with contextlib.suppress(OSError):  # the parent too, once no run uses it
                    os.rmdir(base / CGROUP_PARENT)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _live_fleets.discard(self)
        if errors:
            raise errors[0]


_live_fleets: set[Fleet] = set()


@atexit.register
def _close_live_fleets() -> None:
    """Last resort: a fleet nobody closed (an interpreter exiting on an exception)."""
    for fleet in list(_live_fleets):
        with contextlib.suppress(BaseException):
            fleet.close()
