"""TunedState on recorded tuned-adm outputs and real tuned profile trees (tuned 2.20 and 2.25)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_systemd_state import RECORDED, fact_output, run_with_path, stub_bin

from llmtune.facts.tuned import (
    NEW_LAYOUT,
    OLD_LAYOUT,
    PpdConfig,
    TunedState,
    TunedStateValue,
    include_path,
    includes_throughput_performance,
    parse_ppd_conf,
    parse_tuned_adm_active,
)

D12 = RECORDED / "debian12-nspawn"
D13 = RECORDED / "debian13-nspawn"


def recorded_tuned(tmp_path: Path, scenario: Path, tree: Path) -> TunedStateValue:
    """The real command: recorded tuned-adm output, real grep over a copy of a recorded tree."""
    root = tmp_path / "root"
    shutil.copytree(tree, root, dirs_exist_ok=True)
    bin_dir = stub_bin(tmp_path, scenario)
    return run_with_path(TunedState(), f"{bin_dir}:/usr/bin:/bin", root=str(root))  # type: ignore[return-value]


def test_real_command_on_a_host_without_tuned(tree, tmp_path):
    # A PATH without tuned-adm (it lives in sbin), whether or not this machine has tuned.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    value = run_with_path(TunedState(), f"{empty}:/usr/bin:/bin", root=tree({}))
    assert value == TunedStateValue(reason="tuned-adm not installed")
    assert not value.available and value.profiles == ()


def test_debian12_virtual_guest_includes_throughput_performance(tmp_path):
    value = recorded_tuned(tmp_path, D12 / "tuned-installed", D12 / "tuned-tree")
    assert value.available and value.daemon_running
    assert value.active_profile == "virtual-guest"
    assert value.layout == OLD_LAYOUT[1]
    assert value.ppd is None  # tuned 2.20: no tuned-ppd
    assert include_path(value, "virtual-guest") == ("virtual-guest", "throughput-performance")
    assert include_path(value, "throughput-performance") == ("throughput-performance",)
    # The llmtune profile under /etc/tuned/<name>/ (legacy layout).
    assert include_path(value, "llmtune") == ("llmtune", "throughput-performance")
    # ${f:virt_check:virtual-guest:throughput-performance}: both branches reach it.
    assert include_path(value, "openshift") == (
        "openshift",
        "virtual-guest",
        "throughput-performance",
    )
    for name in ("balanced", "powersave", "desktop", "latency-performance", "realtime", "missing"):
        assert not includes_throughput_performance(value, name), name


def test_only_main_section_include_counts(tmp_path):
    # realtime's [variables] has "include = /etc/tuned/realtime-variables.conf".
    value = recorded_tuned(tmp_path, D12 / "tuned-installed", D12 / "tuned-tree")
    realtime = value.find_profile("realtime")
    assert realtime is not None and realtime.includes == ("network-latency",)
    assert realtime.location == "/usr/lib/tuned"


def test_debian12_llmtune_active(tmp_path):
    value = recorded_tuned(tmp_path, D12 / "tuned-llmtune-profile", D12 / "tuned-tree")
    assert value.active_profile == "llmtune" and value.active_profiles == ("llmtune",)
    llmtune = value.find_profile("llmtune")
    assert llmtune is not None and llmtune.location == "/etc/tuned"


def test_no_current_active_profile(tmp_path):
    value = recorded_tuned(tmp_path, D12 / "tuned-off", D12 / "tuned-tree")
    # Exit status 1, but an answer: tuned runs with no profile.
    assert value.available and value.daemon_running and value.active_profile == ""


@pytest.mark.parametrize(
    ("scenario", "preset"),
    [
        (D12 / "tuned-stopped", "throughput-performance"),
        (D13 / "tuned-ppd-tuned-stopped", "llmtune"),
    ],
)
def test_daemon_stopped_reports_preset(tmp_path, scenario, preset):
    value = recorded_tuned(tmp_path, scenario, D12 / "tuned-tree")
    assert value.available and not value.daemon_running
    assert value.active_profile == "" and value.preset_profile == preset


def test_debian13_new_layout_and_ppd(tmp_path):
    value = recorded_tuned(tmp_path, D13 / "tuned-ppd-llmtune-mapped", D13 / "tuned-tree")
    assert value.layout == NEW_LAYOUT[1]
    assert value.active_profile == "llmtune" and value.saved_profile == "llmtune"
    assert value.profile_mode == "manual"
    assert include_path(value, "llmtune") == ("llmtune", "throughput-performance")
    assert not includes_throughput_performance(value, "balanced")
    assert value.ppd == PpdConfig(
        default="balanced",
        base_profile="performance",
        profiles=(
            ("power-saver", "powersave"),
            ("balanced", "balanced"),
            ("performance", "llmtune"),
        ),
        battery=(("balanced", "balanced-battery"),),
    )
    assert value.ppd.startup_profile == "llmtune"


def test_ppd_package_default_starts_balanced():
    text = (D13 / "tuned-ppd-installed" / "etc-tuned-ppd.conf").read_text()
    base = (D13 / "tuned-ppd-installed" / "etc-tuned-ppd_base_profile").read_text()
    ppd = parse_ppd_conf(text, base)
    assert ppd is not None
    assert ppd.startup_ppd_profile == "balanced" and ppd.startup_profile == "balanced"
    assert ppd.tuned_profile_for("performance") == "throughput-performance"
    # No saved base profile yet: tuned-ppd falls back to [main] default.
    assert parse_ppd_conf(text, "").startup_profile == "balanced"  # type: ignore[union-attr]
    assert parse_ppd_conf(None, "performance") is None


@pytest.mark.parametrize(("host", "scenario"), [("debian13-nspawn", "fact-llmtune-ppd-default")])
def test_fact_output_recorded_in_systemd_host(host, scenario):
    value = TunedState().process(fact_output(host, scenario, "TunedState"))
    assert value.active_profile == "llmtune" and value.layout == NEW_LAYOUT[1]
    assert len(value.profiles) == 40
    assert value.ppd is not None and value.ppd.startup_profile == "throughput-performance"
    assert include_path(value, "atomic-guest") == (
        "atomic-guest",
        "virtual-guest",
        "throughput-performance",
    )


def test_debian12_fact_output_legacy_layout():
    value = TunedState().process(
        fact_output("debian12-nspawn", "fact-headless-tuned-tp", "TunedState")
    )
    assert value.active_profile == "throughput-performance" and value.layout == OLD_LAYOUT[1]
    assert include_path(value, "llmtune") == ("llmtune", "throughput-performance")
    assert include_path(value, "hpc-compute") is None


def _d12_with_overrides(tmp_path: Path, files: dict[str, str]) -> TunedStateValue:
    """The Debian 12 tree plus profile files a user put in /etc/tuned (config input)."""
    tree = tmp_path / "tree"
    shutil.copytree(D12 / "tuned-tree", tree)
    for path, content in files.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return recorded_tuned(tmp_path, D12 / "tuned-installed", tree)


def test_etc_overrides_usr_lib_and_may_include_its_namesake(tmp_path):
    llmtune_conf = (D12 / "tuned-tree" / "etc/tuned/llmtune/tuned.conf").read_text()
    value = _d12_with_overrides(
        tmp_path,
        {
            # A user's "balanced" in /etc wins over the system one.
            "/etc/tuned/balanced/tuned.conf": llmtune_conf,
            # An /etc profile including its own name loads the /usr/lib one (tuned's loader
            # skips files already loaded).
            "/etc/tuned/virtual-guest/tuned.conf": "[main]\ninclude=virtual-guest\n",
        },
    )
    assert include_path(value, "balanced") == ("balanced", "throughput-performance")
    assert include_path(value, "virtual-guest") == (
        "virtual-guest",
        "virtual-guest",
        "throughput-performance",
    )


def test_several_includes_and_cycles(tmp_path):
    value = _d12_with_overrides(
        tmp_path,
        {
            "/etc/tuned/multi/tuned.conf": "[main]\ninclude = balanced, latency-performance;"
            " virtual-guest  # last one\n",
            "/etc/tuned/loop-a/tuned.conf": "[main]\ninclude=loop-b\n",
            "/etc/tuned/loop-b/tuned.conf": "[main]\ninclude=loop-a\n",
            "/etc/tuned/cond/tuned.conf": "[main]\ninclude=-not-there,${f:unknown:x}\n",
        },
    )
    assert include_path(value, "multi") == ("multi", "virtual-guest", "throughput-performance")
    assert include_path(value, "loop-a") is None
    assert include_path(value, "cond") is None


def test_public_tuned_adm_active_nixos():
    # tuned 2.26.0 on NixOS (GitHub issue, see the fixture's SOURCE.md).
    text = (FIXTURES / "public" / "tuned-adm-active" / "tuned-adm-active.txt").read_text()
    assert parse_tuned_adm_active(text.splitlines()) == (True, "balanced", "")


@pytest.mark.parametrize(
    "lines",
    [[], ["junk"], ["@@llmtune section active", "Current active profile:", "@@llmtune rc 0"]],
)
def test_empty_and_garbage(lines):
    value = TunedState().process(lines)
    assert value.active_profile == "" and value.profiles == () and value.ppd is None
