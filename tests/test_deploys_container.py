"""The tuning deploys applied for real to three Debian 12 systemd hosts over SSH, proven by doctor.

Each host starts as a stock desktop-ish Debian 12: power-profiles-daemon installed and running,
default target graphical.target, THP madvise, intel_pstate governor powersave with EPP
balance_performance (the sysfs stand-ins of tests/hosts/nspawn.py). The tests run in file order,
each building on the last, as an owner would: dry run, first apply (one host killed midway),
doctor, second apply, reboot, revert.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hosts.nspawn import Fleet, Host

from llmtune.facts.memory import selected_choice

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parent.parent
NAMES = ["node1", "node2", "node3"]
# The checks whose state these deploys own: each must pass after an apply.
OWNED = ["MEM003", "CPU001", "CPU002", "PWR001", "PWR002", "SYS001"]
FILES = [
    "/etc/tuned/llmtune/tuned.conf",
    "/etc/tmpfiles.d/llmtune-thp.conf",
    "/etc/tmpfiles.d/llmtune-cpu.conf",
    "/etc/llmtune/cpu.env",
    "/etc/tuned/active_profile",
    "/var/lib/llmtune/original/power.json",
    "/var/lib/llmtune/original/memory.json",
    "/var/lib/llmtune/original/cpu.json",
    "/var/lib/llmtune/original/headless.json",
]
UNITS = ["power-profiles-daemon.service", "tuned.service"]
SYSFS = {
    "thp": "/sys/kernel/mm/transparent_hugepage/enabled",
    "governor": "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
    "epp": "/sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference",
}


def state_of(host: Host) -> dict:
    """Everything the deploys touch, in comparable form (sysfs selectors by their choice)."""
    snapshot = host.snapshot(FILES, UNITS)
    snapshot["sysfs"] = {k: selected_choice(host.read(p)) for k, p in SYSFS.items()}
    snapshot["default_target"] = host.run(["systemctl", "get-default"]).stdout.strip()
    snapshot["packages"] = host.run(
        ["sh", "-c", "dpkg-query -W -f='${Package} ${Status}\\n' tuned 2>/dev/null; true"]
    ).stdout.strip()
    return snapshot


def pyinfra(inventory: Path, deploy: str, *args: str, timeout: float = 900):
    return subprocess.run(
        [sys.executable, "-m", "pyinfra", str(inventory), f"deploys/{deploy}.py", "-y", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def doctor(inventory: Path, name: str) -> dict[str, dict]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmtune",
            "doctor",
            "-i",
            str(inventory),
            "--limit",
            name,
            "--format",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    [report] = json.loads(proc.stdout)["hosts"]
    return {f["id"]: f for f in report["findings"]}


def evidence(label: str, text: str) -> None:
    # Shown with `pytest -s`: the figures quoted when the work is reported.
    print(f"EVIDENCE {label}: {text}")


def grand_total(output: str) -> str:
    return next((line.strip() for line in output.splitlines() if "Grand total" in line), "")


def changed_operations(output: str) -> int:
    """The "Success" column of pyinfra's Grand total: operations that changed something."""
    match = re.search(r"Grand total\s+(\d+)\s+(\S+)", output)
    assert match, output[-2000:]
    return 0 if match.group(2) == "-" else int(match.group(2))


@pytest.fixture(scope="module")
def fleet():
    with Fleet.start(3, names=NAMES) as fleet:
        # A stock desktop power setup: power-profiles-daemon installed, enabled and running.
        threads = [
            threading.Thread(
                target=host.run,
                args=(
                    [
                        "sh",
                        "-c",
                        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                        "power-profiles-daemon >/dev/null && systemctl start power-profiles-daemon",
                    ],
                ),
            )
            for host in fleet
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        yield fleet


@pytest.fixture(scope="module")
def inventory(fleet, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inventory")
    entries = ", ".join(repr(host.pyinfra_host()) for host in fleet)
    (root / "fleet.py").write_text(
        f"from llmtune.inventory import group\nnodes = group(__file__, 'nodes', [{entries}])\n"
    )
    (root / "group_vars").mkdir()
    # The llama.cpp build has tests of its own (test_llama_cpp_container.py).
    (root / "group_vars" / "all.yaml").write_text(
        (REPO / "inventories/group_vars/all.yaml")
        .read_text()
        .replace("llama_cpp_build: true", "llama_cpp_build: false")
    )
    return root / "fleet.py"


@pytest.fixture(scope="module")
def stock(fleet, inventory) -> dict:
    """Each host's state and doctor findings before llmtune touched it."""
    return {
        host.name: {"state": state_of(host), "doctor": doctor(inventory, host.name)}
        for host in fleet
    }


def test_stock_hosts_fail_the_owned_checks(stock) -> None:
    for name in NAMES:
        findings = stock[name]["doctor"]
        for check_id in ["MEM003", "CPU001", "CPU002", "PWR001", "PWR002"]:
            assert findings[check_id]["status"] == "fail", (name, findings[check_id])
        assert findings["SYS001"]["status"] in ("fail", "warn")
        evidence(f"stock {name}", " ".join(f"{i}={findings[i]['status']}" for i in OWNED))


def test_dry_run_leaves_every_host_as_it_was(fleet, inventory, stock) -> None:
    proc = pyinfra(inventory, "all", "--dry")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for host in fleet:
        assert state_of(host) == stock[host.name]["state"], host.name
    evidence("dry run", f"exit 0, {len(FILES)} files, units, sysfs, target unchanged on 3 hosts")


def test_first_apply_survives_a_host_dying_midway_then_converges(fleet, inventory) -> None:
    victim = fleet.host("node3")
    result: dict[str, subprocess.CompletedProcess] = {}
    run = threading.Thread(target=lambda: result.setdefault("p", pyinfra(inventory, "all")))
    run.start()
    # Kill node3 once the run has changed it (its first record is written), mid-deploy.
    deadline = time.monotonic() + 300
    while victim.read("/var/lib/llmtune/original/power.json") is None:
        assert time.monotonic() < deadline, "the deploy never reached node3"
        time.sleep(0.2)
    victim.kill()
    run.join()
    first = result["p"]
    output = first.stdout + first.stderr
    assert first.returncode != 0
    assert "node3" in output
    node3_lines = [line.strip() for line in output.splitlines() if "node3" in line]
    evidence("first apply, node3 killed", f"exit {first.returncode}; {grand_total(output)}")
    evidence("first apply, node3 lines", " | ".join(node3_lines[-3:])[:600])
    # The others finished the whole deploy in that same run.
    for name in ("node1", "node2"):
        findings = doctor(inventory, name)
        for check_id in OWNED:
            assert findings[check_id]["status"] == "pass", (name, findings[check_id])

    victim.start()
    rerun = pyinfra(inventory, "all")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    rerun_output = rerun.stdout + rerun.stderr
    evidence("rerun after node3 restarted", grand_total(rerun_output))
    # node3's profile was activated in this run: tuned-adm verify's gaps are reported (a
    # container cannot take tuned's sysctl and readahead settings).
    unapplied = [line.strip() for line in rerun_output.splitlines() if "could not apply" in line]
    assert unapplied and all("[node3]" in line for line in unapplied), rerun_output[-3000:]
    evidence("tuned-adm verify on node3", unapplied[0][:200])
    for host in fleet:
        findings = doctor(inventory, host.name)
        for check_id in OWNED:
            assert findings[check_id]["status"] == "pass", (host.name, findings[check_id])
        evidence(f"doctor {host.name}", " ".join(f"{i}={findings[i]['status']}" for i in OWNED))


def test_second_apply_reports_no_changes(inventory) -> None:
    proc = pyinfra(inventory, "all")
    assert proc.returncode == 0, proc.stdout[-3000:]
    output = proc.stdout + proc.stderr
    assert changed_operations(output) == 0, output[-3000:]
    evidence("second apply", grand_total(output))


def test_settings_persist_across_a_reboot(fleet, inventory) -> None:
    host = fleet.host("node1")
    host.restart()
    findings = doctor(inventory, "node1")
    for check_id in OWNED:
        assert findings[check_id]["status"] == "pass", findings[check_id]
    assert selected_choice(host.read(SYSFS["thp"])) == "always"
    evidence("after reboot", " ".join(f"{i}={findings[i]['status']}" for i in OWNED))


def test_revert_restores_the_first_state(fleet, inventory, stock) -> None:
    proc = pyinfra(inventory, "revert", "--limit", "node2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    host = fleet.host("node2")
    assert state_of(host) == stock["node2"]["state"]
    after = doctor(inventory, "node2")
    before = stock["node2"]["doctor"]
    failing = {i for i, f in before.items() if f["status"] == "fail"}
    assert {i for i, f in after.items() if f["status"] == "fail"} == failing
    evidence("revert node2", f"state equal to stock; failing again: {sorted(failing)}")
