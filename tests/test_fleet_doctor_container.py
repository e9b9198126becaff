"""``llmtune doctor -i INVENTORY`` on three real systemd hosts over SSH: the hosts are checked at
once (the run takes about as long as one host), and a host killed before the run is reported
unreachable in its own row while the others finish."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hosts import fleet_fixture

from llmtune.checks.registry import CATEGORIES

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parent.parent
NAMES = ["node1", "node2", "node3"]

fleet = fleet_fixture(3, names=NAMES)


@pytest.fixture(scope="module")
def inventory(fleet, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inventory")
    entries = ", ".join(repr(host.pyinfra_host()) for host in fleet)
    (root / "fleet.py").write_text(
        f"from llmtune.inventory import group\nnodes = group(__file__, 'nodes', [{entries}])\n"
    )
    return root / "fleet.py"


def doctor(inventory: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "llmtune", "doctor", "-i", str(inventory), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, time.monotonic() - start


def evidence(label: str, text: str) -> None:
    # Shown with `pytest -s`: the figures quoted when the work is reported.
    print(f"EVIDENCE {label}:\n{text}")


def test_hosts_are_checked_at_once(inventory: Path) -> None:
    one, one_wall = doctor(inventory, "--limit", "node1", "--format", "json")
    three, three_wall = doctor(inventory, "--format", "json")
    assert three.returncode == 1, three.stderr  # stock hosts fail the tuning checks
    documents = json.loads(three.stdout)
    assert documents["schema"] == "llmtune.doctor.fleet/v1"
    hosts = documents["hosts"]
    assert [h["host"]["hostname"] for h in hosts] == NAMES  # inventory order
    assert all(h["findings"] and h["exit_code"] == 1 for h in hosts)
    # One after another, the run could not take less than the sum of the hosts' own durations
    # (the CLI's start-up comes on top); at once, it takes about as long as one host.
    durations = [h["duration_s"] for h in hosts]
    alone = json.loads(one.stdout)["hosts"][0]["duration_s"]
    each = ", ".join(f"{d:.2f}" for d in durations)
    evidence(
        "timing",
        f"1 host: {one_wall:.2f} s wall (its check {alone:.2f} s); 3 hosts: {three_wall:.2f} s "
        f"wall, their checks {each} s (sum {sum(durations):.2f} s)",
    )
    assert three_wall < sum(durations)
    assert three_wall < 2 * one_wall


def test_a_limit_that_matches_nothing_is_a_usage_error(inventory: Path) -> None:
    proc, _ = doctor(inventory, "--limit", "node1,nodd")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--limit nodd: no such host or group" in proc.stderr
    proc, _ = doctor(inventory, "--limit", "node1,nodes", "--only", "MEM003", "--format", "json")
    assert [h["host"]["hostname"] for h in json.loads(proc.stdout)["hosts"]] == NAMES


def test_a_killed_host_is_unreachable_and_the_others_finish(fleet, inventory: Path) -> None:
    _, one_wall = doctor(inventory, "--limit", "node1")
    fleet.host("node3").kill()
    proc, wall = doctor(inventory)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    evidence("fleet table", out)
    evidence("timing with node3 killed", f"{wall:.2f} s wall (1 host alone: {one_wall:.2f} s)")
    lines = out.splitlines()
    assert lines[0].startswith("llmtune doctor ") and "3 host(s), level quick" in lines[0]
    # Columns are two or more spaces apart; a cell ("FAIL 2") has one inside.
    header, *rows = (re.split(r"\s{2,}", line) for line in lines[2:6])
    assert header == ["HOST", *CATEGORIES]
    table = {row[0]: dict(zip(header[1:], row[1:], strict=False)) for row in rows}
    assert list(table) == NAMES
    for name in ("node1", "node2"):
        # The stock hosts: THP madvise, governor and EPP not performance, no tuned, no GPU.
        assert len(table[name]) == len(CATEGORIES)
        assert table[name]["memory"] == "FAIL 1"
        assert table[name]["cpu"] == "FAIL 2"
        assert table[name]["power"] == "FAIL 1"
        assert table[name]["gpu"] == "skip"
    [reason] = table["node3"].values()
    assert reason.startswith("unreachable: Could not connect") and "port" in reason
    # Each failure once, with the hosts that have it.
    assert "  FAIL MEM003 Transparent hugepages always on" in lines
    assert "       hosts:    node1, node2" in lines
    assert lines[-1] == "2 failing, 1 unreachable"
    assert wall < 2 * one_wall

    data = json.loads(doctor(inventory, "--format", "json")[0].stdout)
    node3 = data["hosts"][2]
    assert node3["host"]["hostname"] == "node3" and node3["findings"] == []
    assert node3["origin"].startswith("unreachable: ") and node3["exit_code"] == 1
