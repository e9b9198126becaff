"""Real systemd test hosts for the deploy tests (systemd-nspawn containers over SSH).

Usage in a test module::

    import pytest
    from hosts import fleet_fixture, pyinfra_state

    pytestmark = pytest.mark.container
    fleet = fleet_fixture(2)  # a module-scoped fixture named "fleet": 2 booted hosts

    def test_something(fleet):
        host = fleet[0]
        state = pyinfra_state(fleet)  # connected over SSH
        add_op(state, files.line, path="/etc/x.conf", line="a=1")  # pyinfra.api
        run_ops(state)
        host.restart()  # a real reboot: disk kept, sysfs stand-ins back to boot defaults
        assert host.read("/etc/x.conf") == "a=1\\n"
        assert host.read(THP_PATH + "/enabled") == "always [madvise] never\\n"

See :mod:`hosts.nspawn` for what the hosts are and how the sysfs stand-ins behave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest

from .nspawn import (
    CPU_PATH,
    CPUFREQ_DEFAULTS,
    INTEL_PSTATE_DEFAULTS,
    THP_PATH,
    Fleet,
    HarnessError,
    Host,
    KernelModel,
    Rootfs,
    build_rootfs,
    log,
    reap_stale_runs,
)

__all__ = [
    "CPUFREQ_DEFAULTS",
    "CPU_PATH",
    "INTEL_PSTATE_DEFAULTS",
    "THP_PATH",
    "Fleet",
    "HarnessError",
    "Host",
    "KernelModel",
    "Rootfs",
    "build_rootfs",
    "fleet_fixture",
    "log",
    "pyinfra_state",
    "reap_stale_runs",
    "uncaptured",
]


@contextlib.contextmanager
def uncaptured(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let the harness's progress lines (stderr) through pytest's capture, so a CI log shows
    "building rootfs", "booting host1", "ready in N s" as they happen."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
    else:
        with capman.global_and_fixture_disabled():
            yield


def fleet_fixture(
    count: int = 1,
    *,
    scope: str = "module",
    names: Sequence[str] | None = None,
    **start_kwargs: Any,
):
    """A pytest fixture (assign it to a module-level name: that name is the fixture's) that
    yields a started :class:`Fleet` of ``count`` hosts and always tears it down.

    The rootfs is built once per test run (cached on disk across runs, see build_rootfs). Not
    root, or a host that cannot boot: the test fails with the reason (never skips: CI is root).
    ``start_kwargs`` go to :meth:`Fleet.start` (``first_port``, ``overlay``, ``timeout``...).
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
        error = None
        with uncaptured(request):
            try:
                fleet = Fleet.start(count, names=names, **start_kwargs)
            except HarnessError as exc:
                error = str(exc)
        if error is not None:
            pytest.fail(error, pytrace=False)
        try:
            yield fleet
        finally:
            with uncaptured(request):
                fleet.close()

    return _fleet


def pyinfra_state(hosts: Iterable[Host], **config: Any):
    """A pyinfra ``State`` over ``hosts``, connected over SSH (raises if one cannot connect).

    Then: ``add_op(state, files.line, ...)`` and ``run_ops(state)`` (pyinfra.api), or
    ``state.inventory.get_host(name).get_fact(...)``; ``config`` goes to pyinfra's ``Config``.
    """
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all

    hosts = list(hosts)
    inventory = Inventory(([h.pyinfra_host() for h in hosts], {}))
    state = State(inventory, Config(**config))
    connect_all(state)
    connected = {h.name for h in state.activated_hosts}
    missing = [h.name for h in hosts if h.name not in connected]
    if missing:
        raise HarnessError(f"pyinfra could not connect to {missing}")
    return state
