"""Pure pieces of the doctor: probe output conventions, selection, exit codes, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_command

from llmtune.checks import all_checks
from llmtune.checks.registry import CHECKS, RETIRED_IDS, FactValues, Level, check
from llmtune.doctor.run import SelectionError, evaluate, exit_code, select_checks
from llmtune.facts.probe import parse_grep_h, parse_tool, section, split_sections, tool
from llmtune.findings import Finding, Outcome, Severity, Status
from llmtune.settings import HostSettings, SettingsError, load_settings


def test_tool_wrapper_reports_missing_failed_and_ran() -> None:
    missing = parse_tool(run_command(tool("no-such-tool-xyz", "no-such-tool-xyz --version")))
    assert missing.missing and not missing.ok
    failed = parse_tool(run_command(tool("ls", "ls /no/such/path")))
    assert not failed.missing and failed.rc == 2 and "No such file" in failed.text()
    assert "exit status 2" in failed.brief()
    ran = parse_tool(run_command(tool("uname", "uname -s")))
    assert ran.ok and ran.lines == ("Linux",)


def test_sections_and_grep_h_round_trip(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one\ntwo\n")
    (tmp_path / "b").write_text("x:y\n")
    lines = run_command(
        "; ".join(
            [
                section("files", f"grep -s -H . {tmp_path}/a {tmp_path}/b {tmp_path}/none; true"),
                section("empty", "true"),
            ]
        )
    )
    parts = split_sections(lines)
    assert parts["empty"] == []
    values = parse_grep_h(parts["files"], root=str(tmp_path))
    assert values.get("/a") == "one\ntwo"
    assert values.get("/b") == "x:y"  # only the first colon separates the path
    assert values.get("/none") is None


def test_check_ids_unique_stable_and_well_formed() -> None:
    checks = all_checks()
    assert len({c.id for c in checks}) == len(checks)
    assert len({c.name for c in checks}) == len(checks)
    assert not RETIRED_IDS & {c.id for c in checks}
    for c in checks:
        assert c.id[:3].isalpha() and c.id[3:].isdigit(), c.id
        assert c.source.startswith(("seed ", "issue ")), (c.id, c.source)
        assert c.facts, c.id


def test_registering_a_used_id_is_refused() -> None:
    existing = next(iter(CHECKS))
    with pytest.raises(ValueError, match="already used"):
        check(
            id=existing,
            name="x-new",
            title="t",
            category="memory",
            severity=Severity.LOW,
            source="seed 004",
            facts=(),
        )(lambda facts, settings: Outcome(Status.PASS))


def test_full_level_includes_quick_checks() -> None:
    quick = {c.id for c in select_checks(Level.QUICK)}
    full = {c.id for c in select_checks(Level.FULL)}
    assert quick <= full
    assert all(c.level == Level.QUICK for c in select_checks(Level.QUICK))


def test_selection_rejects_unknown_tokens() -> None:
    with pytest.raises(SelectionError, match="bogus"):
        select_checks(Level.QUICK, only=["bogus"])


def test_a_crashing_check_is_an_error_finding_not_a_traceback() -> None:
    target = next(c for c in all_checks() if c.id == "MEM003")
    finding = evaluate(target, FactValues({}, {}), HostSettings())
    # The fact was never collected: a skip that names it.
    assert finding.status == Status.SKIP and "Thp" in finding.observed

    from dataclasses import replace

    def boom(facts: FactValues, settings: HostSettings) -> Outcome:
        raise ZeroDivisionError("division by zero")

    finding = evaluate(replace(target, func=boom), FactValues({}), HostSettings())
    assert finding.status == Status.ERROR and "ZeroDivisionError" in finding.observed


def _f(status: Status) -> Finding:
    return Finding("X001", "x", "t", "memory", Severity.LOW, status, "", "", "", "seed 004")


def test_exit_codes() -> None:
    assert exit_code([_f(Status.PASS), _f(Status.SKIP)]) == 0
    assert exit_code([_f(Status.PASS), _f(Status.FAIL), _f(Status.ERROR)]) == 1
    assert exit_code([_f(Status.ERROR), _f(Status.WARN)]) == 3
    assert exit_code([_f(Status.WARN)]) == 0
    assert exit_code([_f(Status.WARN)], fail_on=Status.WARN) == 1


def test_settings_validation(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("ram_rated_mts: 6000\ncpu_hog_percent: 50\n")
    settings = load_settings(path)
    assert settings.ram_rated_mts == 6000 and settings.cpu_hog_percent == 50
    for text, key in [
        ("ram_rated_mts: -1\n", "ram_rated_mts"),
        ("cpu_mhz_min_ratio: 2\n", "cpu_mhz_min_ratio"),
        ("inference_processes: llama-server\n", "inference_processes"),
        ("gpu_temp_warn_c: 95\ngpu_temp_fail_c: 90\n", "gpu_temp_warn_c"),
        ("colour: blue\n", "colour"),
    ]:
        path.write_text(text)
        with pytest.raises(SettingsError) as err:
            load_settings(path)
        assert err.value.key == key and str(path) in str(err.value)
    path.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(path)
    assert load_settings(None) == HostSettings()


def test_readme_lists_every_check() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for c in all_checks():
        assert f"| {c.id} | `{c.name}` |" in readme, f"README's checklist lacks {c.id}"


def test_mangled_tool_trailer_reads_as_unfinished() -> None:
    out = parse_tool(["some output", "@@llmtune rc x"])
    assert out.rc is None and not out.ok and out.lines == ("some output",)


def test_load_probes_run_alone_after_the_readers() -> None:
    from llmtune.doctor.collect import collect_local
    from llmtune.facts.host import HostInfo
    from llmtune.facts.memory import MemoryBandwidth, Thp

    order: list[str] = []
    collect_local([MemoryBandwidth, HostInfo, Thp], on_done=lambda r: order.append(r.fact))
    assert order[-1] == "MemoryBandwidth" and set(order[:2]) == {"HostInfo", "Thp"}
