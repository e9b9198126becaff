"""A real rollout on three Debian 12 systemd hosts over SSH: deploys/all.py applied by pyinfra
batch by batch, each host verified by the real remote doctor, the llama.cpp build rolled back by
deploys/llama_cpp_rollback.py where the verify failed, later batches left untouched.

The regression is real too: node2 runs a rogue service that sets the CPU governor back to
powersave every half second (as a competing power daemon would), so the tuning all.py applies
does not hold there and the doctor's CPU001 fails. The llama.cpp builds are stand-ins (two
complete build directories and ``current``: what the rollback switches); building llama.cpp
has its own test (test_llama_cpp_container.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hosts import fleet_fixture

from llmtune.ops.llama_build import DEFAULT_PREFIX
from llmtune.rollout.plan import Batch, plan_batches
from llmtune.rollout.pyinfra_ops import (
    ALL_DEPLOY,
    pyinfra_apply,
    pyinfra_rollback,
    run_pyinfra,
)
from llmtune.rollout.run import ApplyStatus, VerifyResult, rollout
from llmtune.rollout.summary import HostState, render_summary

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parent.parent
NAMES = ["node1", "node2", "node3"]
# The checks whose state all.py owns on these hosts (no GPU, no llama-server model).
OWNED = "MEM003,CPU001,CPU002,PWR001"
RECORD = "/var/lib/llmtune/original/power.json"  # written by all.py's first change
STAND_IN_BUILDS = f"""
set -e
cd {DEFAULT_PREFIX}
mkdir -p builds/old builds/new
echo '{{"build_id": "old"}}' > builds/old/build-info.json
echo '{{"build_id": "new"}}' > builds/new/build-info.json
touch -d '1 hour ago' builds/old
ln -sfn builds/new current
"""
ROGUE_UNIT = """[Unit]
Description=A competing power daemon: the governor back to powersave, again and again
[Service]
ExecStart=/bin/sh -c 'while :; do for f in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do echo powersave > "$f"; done; sleep 0.5; done'
"""  # noqa: E501

fleet = fleet_fixture(3, names=NAMES)


@pytest.fixture(scope="module")
def inventory(fleet, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inventory")
    first, *others = (repr(host.pyinfra_host()) for host in fleet)
    (root / "fleet.py").write_text(
        "from llmtune.inventory import group\n"
        f"canary = group(__file__, 'canary', [{first}])\n"
        f"nodes = group(__file__, 'nodes', [{', '.join(others)}])\n"
    )
    (root / "group_vars").mkdir()
    (root / "group_vars" / "all.yaml").write_text(
        (REPO / "inventories/group_vars/all.yaml")
        .read_text()
        .replace("llama_cpp_build: true", "llama_cpp_build: false")
    )
    return root / "fleet.py"


def doctor_verify(inventory: Path):
    """The verify callable: ``llmtune doctor`` (the real CLI, over SSH) on the owned checks."""

    def verify(host: str) -> VerifyResult:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "llmtune", "doctor", "-i", str(inventory)),
                *("--limit", host, "--only", OWNED, "--format", "json"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        [report] = json.loads(proc.stdout)["hosts"]
        bad = [f for f in report["findings"] if f["status"] != "pass"]
        if not report["findings"] or bad:
            why = "; ".join(f"{f['id']} {f['status']}: {f['observed']}" for f in bad)
            return VerifyResult(host, False, f"doctor: {why or report['origin']}")
        return VerifyResult(host, True, f"doctor: {len(report['findings'])} owned checks pass")

    return verify


def current_build(host) -> str:
    return host.run(["readlink", f"{DEFAULT_PREFIX}/current"]).stdout.strip()


def evidence(label: str, text: str) -> None:
    print(f"EVIDENCE {label}:\n{text}")


def test_inventory_hosts_and_the_plan(inventory: Path) -> None:
    # In a subprocess: loading an inventory monkey-patches the stdlib for gevent, which the
    # harness's threads in this process must not meet.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pathlib import Path; "
            "from llmtune.rollout.pyinfra_ops import inventory_hosts; "
            "print(json.dumps(inventory_hosts(Path(sys.argv[1]))))",
            str(inventory),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    names, groups = json.loads(proc.stdout)
    assert names == NAMES
    assert "canary" in groups["node1"] and "nodes" in groups["node3"]
    assert plan_batches(names, 1, groups=groups) == [
        Batch(("node1",), canary=True),
        Batch(("node2",)),
        Batch(("node3",)),
    ]


def test_rollout_stops_at_the_regressed_host_and_rolls_it_back(fleet, inventory: Path) -> None:
    for host in fleet:
        host.run(["mkdir", "-p", DEFAULT_PREFIX])
        host.run(STAND_IN_BUILDS)
    rogue = fleet.host("node2")
    rogue.run(["sh", "-c", "cat > /etc/systemd/system/rogue-governor.service"], input=ROGUE_UNIT)
    rogue.run(["systemctl", "daemon-reload"])
    rogue.run(["systemctl", "start", "rogue-governor.service"])

    batches = plan_batches(NAMES, 1, groups={"node1": ["canary"]})
    messages: list[str] = []
    start = time.monotonic()
    summary = rollout(
        batches,
        pyinfra_apply(inventory, cwd=inventory.parent),
        doctor_verify(inventory),
        pyinfra_rollback(inventory, cwd=inventory.parent),
        messages.append,
    )
    took = time.monotonic() - start
    evidence("rollout progress", "\n".join(messages))
    evidence(f"rollout summary ({took:.0f} s)", render_summary(summary))

    states = {o.host: o.state for o in summary.outcomes}
    assert states == {
        "node1": HostState.VERIFIED,
        "node2": HostState.ROLLED_BACK,
        "node3": HostState.UNTOUCHED,
    }
    assert summary.stopped_at == 2 and summary.exit_code == 1
    node2 = summary.outcomes[1]
    assert node2.verify.startswith("doctor: CPU001 fail: powersave")
    # The real effects on the hosts.
    assert current_build(fleet.host("node1")) == "builds/new"
    assert current_build(fleet.host("node2")) == "builds/old"
    assert current_build(fleet.host("node3")) == "builds/new"
    assert fleet.host("node1").read(RECORD) is not None
    assert fleet.host("node2").read(RECORD) is not None
    assert fleet.host("node3").read(RECORD) is None  # all.py never ran there


def test_a_host_lost_mid_apply_failed_and_a_dead_one_is_unreachable(fleet, inventory) -> None:
    victim = fleet.host("node3")
    result: dict[str, dict] = {}
    run = threading.Thread(
        target=lambda: result.setdefault(
            "r", run_pyinfra(inventory, ALL_DEPLOY, ["node3"], cwd=inventory.parent)
        )
    )
    run.start()
    deadline = time.monotonic() + 300
    while victim.read(RECORD) is None:  # killed once the deploy has changed it
        assert time.monotonic() < deadline, "the deploy never reached node3"
        time.sleep(0.2)
    victim.kill()
    run.join()
    lost = result["r"]["node3"]
    evidence("node3 killed mid-apply", repr(lost))
    assert lost.status == ApplyStatus.FAILED and lost.detail

    # node3 stays down: pyinfra cannot connect to it, node1 (already applied) changes nothing.
    results = run_pyinfra(inventory, ALL_DEPLOY, ["node1", "node3"], cwd=inventory.parent)
    evidence("node1 again, node3 down", repr(results))
    assert results["node1"].status == ApplyStatus.OK
    assert results["node1"].changed == 0
    assert results["node3"].status == ApplyStatus.UNREACHABLE
    assert results["node3"].detail.startswith("Could not connect")
