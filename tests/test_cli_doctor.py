"""The doctor CLI end to end on this machine, for real (no mocks), and on a replayed capture."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmtune.checks import all_checks

LLMTUNE = [sys.executable, "-m", "llmtune"]


def doctor(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LLMTUNE, "doctor", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def local_json() -> dict:
    proc = doctor("--format", "json")
    assert proc.returncode in (0, 1, 3), proc.stderr
    return json.loads(proc.stdout)  # stdout carries only the JSON


def test_json_report_covers_every_quick_check(local_json: dict) -> None:
    assert local_json["schema"] == "llmtune.doctor/v1"
    ids = [f["id"] for f in local_json["findings"]]
    quick = [c.id for c in all_checks() if c.level.value == "quick"]
    assert sorted(ids) == sorted(quick)
    for finding in local_json["findings"]:
        assert finding["status"] in {"pass", "warn", "fail", "skip", "error"}
        assert finding["title"] and finding["category"] and finding["source"]
        if finding["status"] in ("fail", "warn"):
            assert finding["fix"], finding
        if finding["status"] == "skip":
            assert finding["observed"], f"{finding['id']} skipped without a reason"


def test_nothing_errors_on_this_machine(local_json: dict) -> None:
    errors = [f for f in local_json["findings"] if f["status"] == "error"]
    assert errors == []


def test_exit_code_matches_findings(local_json: dict) -> None:
    statuses = {f["status"] for f in local_json["findings"]}
    expected = 1 if "fail" in statuses else 3 if "error" in statuses else 0
    assert local_json["exit_code"] == expected
    assert local_json["summary"]["fail"] == sum(
        f["status"] == "fail" for f in local_json["findings"]
    )


def test_text_report_groups_by_category_and_shows_fixes(tmp_path: Path) -> None:
    # One capture, two renderings: live samples (CPU use, swap counters) cannot differ.
    capture = tmp_path / "c.tar.gz"
    data = json.loads(doctor("--format", "json", "--capture", str(capture)).stdout)
    out = doctor("--replay", str(capture)).stdout
    assert out.startswith("llmtune doctor ")
    categories = {c.category for c in all_checks() if c.level.value == "quick"}
    for category in categories:
        assert f"\n{category}\n" in out
    for finding in data["findings"]:
        assert f"{finding['id']} {finding['title']}" in out
        if finding["status"] in ("fail", "warn"):
            assert finding["fix"].splitlines()[0] in out


def test_only_and_skip_by_id_name_and_category() -> None:
    data = json.loads(doctor("--format", "json", "--only", "memory").stdout)
    assert data["findings"] and {f["category"] for f in data["findings"]} == {"memory"}
    data = json.loads(doctor("--format", "json", "--only", "MEM003,thp-always").stdout)
    assert [f["id"] for f in data["findings"]] == ["MEM003"]
    data = json.loads(doctor("--format", "json", "--skip", "memory").stdout)
    assert "memory" not in {f["category"] for f in data["findings"]}


def test_unknown_selection_is_a_usage_error() -> None:
    proc = doctor("--only", "NOPE999")
    assert proc.returncode == 2
    assert "NOPE999" in proc.stderr and proc.stdout == ""


def test_bad_settings_exit_2_with_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("ram_rated_mts: fast\n")
    proc = doctor("--settings", str(bad))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "ram_rated_mts" in proc.stderr
    bad.write_text("ram_speed: 6000\n")
    proc = doctor("--settings", str(bad))
    assert proc.returncode == 2 and "ram_speed" in proc.stderr and "unknown key" in proc.stderr


def test_junit_is_valid_xml_with_one_case_per_check(local_json: dict) -> None:
    proc = doctor("--format", "junit")
    suite = ET.fromstring(proc.stdout)
    assert suite.tag == "testsuite"
    assert int(suite.get("tests")) == len(local_json["findings"])
    assert int(suite.get("failures")) == local_json["summary"]["fail"]
    assert len(suite.findall("testcase/skipped")) == local_json["summary"]["skip"]


def test_prometheus_output_parses(tmp_path: Path) -> None:
    # One reading of this machine, rendered twice: checks that sample the moment (CPU use) would
    # differ between two live runs on a busy machine.
    capture = tmp_path / "capture.tar.gz"
    doctor("--format", "json", "--capture", str(capture))
    out = tmp_path / "llmtune.prom"
    proc = doctor("--replay", str(capture), "--format", "prometheus", "--output", str(out))
    assert proc.stdout == ""
    findings = json.loads(doctor("--replay", str(capture), "--format", "json").stdout)["findings"]
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    status = families["llmtune_doctor_check_status"]
    current = {s.labels["id"]: s.labels["status"] for s in status.samples if s.value == 1}
    assert current == {f["id"]: f["status"] for f in findings}
    assert "llmtune_doctor_duration_seconds" in families


def test_fail_on_warn_changes_exit_code() -> None:
    data = json.loads(doctor("--format", "json", "--fail-on", "warn").stdout)
    statuses = {f["status"] for f in data["findings"]}
    if "fail" in statuses or "warn" in statuses:
        assert data["exit_code"] == 1
    else:
        assert data["exit_code"] in (0, 3)


def test_capture_then_replay_gives_the_same_findings(tmp_path: Path) -> None:
    capture = tmp_path / "host.tar.gz"
    live = json.loads(doctor("--format", "json", "--capture", str(capture)).stdout)
    with tarfile.open(capture) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert "manifest.json" in names
    assert {p["fact"] for p in manifest["probes"]} >= {"HostInfo", "Thp"}
    replayed = json.loads(doctor("--format", "json", "--replay", str(capture)).stdout)
    assert replayed["origin"].startswith("replay of")
    strip = lambda data: [(f["id"], f["status"], f["observed"]) for f in data["findings"]]  # noqa: E731
    assert strip(replayed) == strip(live)


def test_replay_of_a_broken_file_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    proc = doctor("--replay", str(junk))
    assert proc.returncode == 2 and "junk.tar.gz" in proc.stderr
