"""The fleet report (llmtune doctor -i): table cells, unreachable rows, grouped failure details."""

from __future__ import annotations

from llmtune.doctor.render.fleet import (
    categories_of,
    cell,
    failure_groups,
    fleet_counts,
    render_fleet,
    table_rows,
    unreachable_reason,
)
from llmtune.doctor.report import Report
from llmtune.facts.host import HostInfoValue
from llmtune.findings import Finding, Severity, Status


def finding(
    id: str, category: str, status: Status, observed: str = "seen", fix: str = "do this"
) -> Finding:
    return Finding(
        id=id,
        name=id.lower(),
        title=f"title of {id}",
        category=category,
        severity=Severity.HIGH,
        status=status,
        observed=observed,
        expected="wanted",
        fix=fix if status in (Status.FAIL, Status.WARN) else "",
        source="checks/x.py",
    )


def report(hostname: str, *findings: Finding, exit_code: int = 0) -> Report:
    return Report(
        host=HostInfoValue(hostname=hostname),
        level="quick",
        origin=f"{hostname} through pyinfra",
        started_at="2025-01-01T00:00:00+0000",
        duration_s=1.2,
        findings=tuple(findings),
        exit_code=exit_code,
        llmtune_version="0.1.0",
    )


def unreachable(name: str, reason: str) -> Report:
    return Report(
        host=HostInfoValue(hostname=name),
        level="quick",
        origin=f"unreachable: {reason} (pyinfra SSHConnector)",
        started_at="2025-01-01T00:00:00+0000",
        duration_s=0.1,
        findings=(),
        exit_code=1,
        llmtune_version="0.1.0",
    )


THP = finding("MEM003", "memory", Status.FAIL, "enabled=madvise", "echo always > enabled")
GOV = finding("CPU001", "cpu", Status.FAIL, "powersave")
EPP = finding("CPU002", "cpu", Status.FAIL, "balance_performance")
SWAP = finding("MEM005", "memory", Status.WARN, "swap on")
FLEET = {
    "node1": report(
        "node1",
        THP,
        GOV,
        EPP,
        SWAP,
        finding("GPU001", "gpu", Status.SKIP, "no NVIDIA GPU"),
        exit_code=1,
    ),
    "node2": report(
        "box-2",  # its own hostname differs from its inventory name
        finding("MEM003", "memory", Status.PASS, "enabled=always"),
        finding("CPU001", "cpu", Status.PASS),
        finding("CPU002", "cpu", Status.ERROR, "check crashed: KeyError"),
        finding("GPU001", "gpu", Status.SKIP, "no NVIDIA GPU"),
        exit_code=3,
    ),
    "node3": unreachable("node3", "Could not connect (Connection refused)"),
}


def test_a_cell_shows_the_worst_status_and_how_many_have_it() -> None:
    assert cell([GOV, EPP]) == ("FAIL 2", "red")
    assert cell([SWAP, THP]) == ("FAIL 1", "red")
    assert cell([SWAP, finding("X", "memory", Status.PASS)]) == ("warn 1", "yellow")
    assert cell([finding("X", "cpu", Status.ERROR), SWAP]) == ("ERR 1", "magenta")
    assert cell([finding("X", "cpu", Status.PASS)] * 3) == ("ok", "green")
    assert cell([finding("X", "gpu", Status.SKIP)]) == ("skip", "bright_black")
    assert cell([]) == ("-", None)


def test_unreachable_reason_only_for_hosts_without_findings() -> None:
    assert unreachable_reason(FLEET["node3"]) == (
        "Could not connect (Connection refused) (pyinfra SSHConnector)"
    )
    assert unreachable_reason(FLEET["node1"]) is None


def test_table_rows_by_inventory_name_in_registry_order() -> None:
    rows = table_rows(FLEET)
    assert [text for text, _ in rows[0]] == ["HOST", "memory", "cpu", "gpu"]
    assert [text for text, _ in rows[1]] == ["node1", "FAIL 1", "FAIL 2", "skip"]
    assert [text for text, _ in rows[2]] == ["node2", "ok", "ERR 1", "skip"]
    assert [text for text, _ in rows[3]] == [
        "node3",
        "unreachable: Could not connect (Connection refused) (pyinfra SSHConnector)",
    ]


def test_only_the_categories_that_ran_are_columns() -> None:
    assert categories_of({"a": report("a", GOV)}) == ["cpu"]
    assert categories_of({"a": unreachable("a", "no route")}) == []


def test_identical_failures_are_grouped_across_hosts() -> None:
    fleet = {name: report(name, THP, GOV, exit_code=1) for name in ("a", "b", "c")}
    fleet["d"] = report("d", finding("MEM003", "memory", Status.FAIL, "enabled=never"), exit_code=1)
    groups = failure_groups(fleet)
    assert [(f.id, f.observed, hosts) for f, hosts in groups] == [
        ("MEM003", "enabled=madvise", ["a", "b", "c"]),
        ("MEM003", "enabled=never", ["d"]),
        ("CPU001", "powersave", ["a", "b", "c"]),
    ]


def test_warnings_are_detailed_only_when_they_fail_the_run_or_with_verbose() -> None:
    assert SWAP not in dict(failure_groups(FLEET))
    assert SWAP in dict(failure_groups(FLEET, fail_on=Status.WARN))
    assert SWAP in dict(failure_groups(FLEET, verbose=True))


def test_fleet_counts() -> None:
    assert fleet_counts(FLEET) == {"failing": 1, "errored": 1, "unreachable": 1, "ok": 0}


def test_render_fleet_whole_text() -> None:
    text = render_fleet(FLEET, duration_s=1.75)
    assert text == (
        "llmtune doctor 0.1.0: 3 host(s), level quick, 1.8 s\n"
        "\n"
        "HOST   memory  cpu     gpu\n"
        "node1  FAIL 1  FAIL 2  skip\n"
        "node2  ok      ERR 1   skip\n"
        "node3  unreachable: Could not connect (Connection refused) (pyinfra SSHConnector)\n"
        "\n"
        "  FAIL MEM003 title of MEM003\n"
        "       hosts:    node1\n"
        "       observed: enabled=madvise\n"
        "       expected: wanted\n"
        "       fix:      echo always > enabled\n"
        "\n"
        "  FAIL CPU001 title of CPU001\n"
        "       hosts:    node1\n"
        "       observed: powersave\n"
        "       expected: wanted\n"
        "       fix:      do this\n"
        "\n"
        "  FAIL CPU002 title of CPU002\n"
        "       hosts:    node1\n"
        "       observed: balance_performance\n"
        "       expected: wanted\n"
        "       fix:      do this\n"
        "\n"
        "  ERR  CPU002 title of CPU002\n"
        "       hosts:    node2\n"
        "       observed: check crashed: KeyError\n"
        "       expected: wanted\n"
        "\n"
        "1 failing, 1 errored, 1 unreachable\n"
    )


def test_style_pads_before_colouring() -> None:
    def style(text: str, **kwargs: object) -> str:
        return f"<{kwargs.get('fg', 'b')}>{text}</>" if kwargs else text

    text = render_fleet({"node1": report("node1", GOV, exit_code=1)}, style=style)
    # The padded cell is coloured as a whole: the columns stay aligned for the eye.
    assert "<red>FAIL 1</>" in text
    assert text.splitlines()[2] == "<b>HOST </>  <b>cpu</>"


def test_empty_fleet() -> None:
    assert render_fleet({}) == "llmtune doctor 0.1.0: 0 host(s)\n\nHOST\n\nno hosts\n"
