"""The fleet report: one table of hosts x categories, then the detail of every failure.

Pure: formats the reports of ``llmtune doctor -i INVENTORY``, keyed by inventory name (the name
the owner typed, which a host's own hostname need not match).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmtune import __version__
from llmtune.checks.registry import CATEGORIES
from llmtune.doctor.render.text import Style, _finding_lines, _plain
from llmtune.doctor.report import Report
from llmtune.findings import Finding, Status

# A report for a host that could not be reached has no findings and an origin that starts so.
UNREACHABLE = "unreachable"
# Worst first: a cell shows the first of these that its category has.
SEVERITY_ORDER = (Status.FAIL, Status.ERROR, Status.WARN, Status.PASS, Status.SKIP)
_CELL = {
    Status.FAIL: ("FAIL", "red"),
    Status.ERROR: ("ERR", "magenta"),
    Status.WARN: ("warn", "yellow"),
    Status.PASS: ("ok", "green"),
    Status.SKIP: ("skip", "bright_black"),
}
# Statuses that are counted in a cell: "ok 14" would only be noise.
_COUNTED = (Status.FAIL, Status.ERROR, Status.WARN)
NO_CHECK = "-"


def _category_rank(category: str) -> int:
    return CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES)


def unreachable_reason(report: Report) -> str | None:
    """Why the host could not be reached, or None for a host that was checked."""
    if report.findings or not report.origin.startswith(UNREACHABLE):
        return None
    return report.origin[len(UNREACHABLE) :].lstrip(" :")


def worst(findings: Sequence[Finding]) -> tuple[Status, int] | None:
    """The worst status among ``findings`` and how many findings have it; None when empty."""
    statuses = [f.status for f in findings]
    for status in SEVERITY_ORDER:
        if status in statuses:
            return status, statuses.count(status)
    return None


def cell(findings: Sequence[Finding]) -> tuple[str, str | None]:
    """A table cell's text (``FAIL 2``, ``warn 1``, ``ok``, ``skip``, ``-``) and its colour."""
    found = worst(findings)
    if found is None:
        return NO_CHECK, None
    status, count = found
    label, colour = _CELL[status]
    return (f"{label} {count}" if status in _COUNTED else label), colour


def categories_of(reports: Mapping[str, Report]) -> list[str]:
    """The categories any host was checked for, in the registry's order (--only memory gives a
    one-column table, not eight columns of dashes)."""
    seen = {f.category for r in reports.values() for f in r.findings}
    return sorted(seen, key=lambda c: (_category_rank(c), c))


def table_rows(reports: Mapping[str, Report]) -> list[list[tuple[str, str | None]]]:
    """The header row then one row per host: ``(text, colour)`` cells. An unreachable host's
    row has two cells, its name and ``unreachable: REASON``."""
    categories = categories_of(reports)
    rows: list[list[tuple[str, str | None]]] = [[("HOST", None), *((c, None) for c in categories)]]
    for name, report in reports.items():
        reason = unreachable_reason(report)
        if reason is not None:
            rows.append([(name, None), (f"{UNREACHABLE}: {reason}", "red")])
            continue
        by_category = {c: [f for f in report.findings if f.category == c] for c in categories}
        rows.append([(name, None), *(cell(by_category[c]) for c in categories)])
    return rows


def _format_table(rows: list[list[tuple[str, str | None]]], style: Style) -> list[str]:
    # Widths from the full rows only: an unreachable row's long reason spills over the columns.
    width = max(len(r) for r in rows)
    full = [r for r in rows if len(r) == width]
    widths = [max(len(r[i][0]) for r in full) for i in range(width)]
    lines = []
    for index, row in enumerate(rows):
        cells = []
        for i, (text, colour) in enumerate(row):
            last = i == len(row) - 1
            padded = text if last else text.ljust(widths[i])
            # Pad before styling: escape codes would count as width.
            styled = style(padded, bold=True) if index == 0 else padded
            if colour:
                styled = style(padded, fg=colour, bold=colour == "red")
            cells.append(styled)
        lines.append("  ".join(cells).rstrip())
    return lines


def _shown(status: Status, fail_on: Status, verbose: bool) -> bool:
    if status in (Status.FAIL, Status.ERROR):
        return True
    return status == Status.WARN and (verbose or fail_on == Status.WARN)


def failure_groups(
    reports: Mapping[str, Report], fail_on: Status = Status.FAIL, verbose: bool = False
) -> list[tuple[Finding, list[str]]]:
    """The findings to detail, each with the hosts that have exactly it (same status, observed,
    expected, details and fix): ten hosts with the same THP setting give one entry, not ten.
    Failures and errors; warnings too with --fail-on warn or -v. Worst first, then category, ID.
    """
    groups: dict[Finding, list[str]] = {}
    for name, report in reports.items():
        for finding in report.findings:
            if _shown(finding.status, fail_on, verbose):
                groups.setdefault(finding, []).append(name)
    return sorted(
        groups.items(),
        key=lambda item: (
            SEVERITY_ORDER.index(item[0].status),
            _category_rank(item[0].category),
            item[0].id,
        ),
    )


def _detail_lines(groups: list[tuple[Finding, list[str]]], style: Style) -> list[str]:
    lines = []
    for finding, hosts in groups:
        # The single-host report's layout of a finding (observed, expected, details, fix), with
        # the hosts it concerns under its title.
        head, *rest = _finding_lines(finding, False, style)
        lines.extend(["", head, f"{' ' * 7}hosts:    {', '.join(hosts)}", *rest])
    return lines


def fleet_counts(reports: Mapping[str, Report]) -> dict[str, int]:
    """Hosts by outcome: ``failing`` (exit 1), ``errored`` (exit 3), ``unreachable``, ``ok``."""
    counts = {"failing": 0, "errored": 0, "unreachable": 0, "ok": 0}
    for report in reports.values():
        if unreachable_reason(report) is not None:
            counts["unreachable"] += 1
        elif report.exit_code == 1:
            counts["failing"] += 1
        elif report.exit_code == 3:
            counts["errored"] += 1
        else:
            counts["ok"] += 1
    return counts


def render_fleet(
    reports: Mapping[str, Report],
    *,
    fail_on: Status = Status.FAIL,
    verbose: bool = False,
    duration_s: float | None = None,
    style: Style | None = None,
) -> str:
    """The table, every failure (and error; warnings too with --fail-on warn or -v) with its
    hosts, observed, expected and fix, and a closing count of hosts by outcome. ``style`` is
    click.style on a terminal (colours), None for plain text."""
    style = style or _plain
    levels = "/".join(sorted({r.level for r in reports.values()}))
    head = f"llmtune doctor {__version__}: {len(reports)} host(s)"
    head += f", level {levels}" if levels else ""
    head += f", {duration_s:.1f} s" if duration_s is not None else ""
    lines = [head]
    lines.append("")
    lines.extend(_format_table(table_rows(reports), style))
    lines.extend(_detail_lines(failure_groups(reports, fail_on, verbose), style))
    counts = fleet_counts(reports)
    lines.append("")
    lines.append(", ".join(f"{n} {label}" for label, n in counts.items() if n) or "no hosts")
    return "\n".join(lines) + "\n"
