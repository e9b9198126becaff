"""The human report: one screen, grouped by category, failures first within each group."""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

from llmtune.checks.registry import CATEGORIES
from llmtune.doctor.report import Report
from llmtune.findings import Finding, Status

MARKS = {
    Status.FAIL: ("FAIL", "red"),
    Status.ERROR: ("ERR ", "magenta"),
    Status.WARN: ("WARN", "yellow"),
    Status.PASS: ("ok  ", "green"),
    Status.SKIP: ("skip", "bright_black"),
}
_ORDER = [Status.FAIL, Status.ERROR, Status.WARN, Status.PASS, Status.SKIP]
Style = Callable[..., str]


def _plain(text: str, **_: object) -> str:
    return text


def _describe_host(report: Report) -> str:
    host = report.host
    bits = [host.hostname or "unknown host"]
    if host.distro_name:
        bits.append(host.distro_name)
    if host.kernel:
        bits.append(f"kernel {host.kernel}")
    if host.virtualized:
        bits.append(f"virtualized: {host.virtualization}")
    return ", ".join(bits)


def _finding_lines(finding: Finding, verbose: bool, style: Style) -> list[str]:
    mark, colour = MARKS[finding.status]
    head = f"  {style(mark, fg=colour, bold=True)} {finding.id} {finding.title}"
    if finding.status == Status.SKIP:
        return [f"{head}: {style(finding.observed, fg='bright_black')}"]
    if finding.status == Status.PASS and not verbose:
        return [f"{head}: {finding.observed}" if finding.observed else head]
    lines = [head]
    indent = " " * 7
    if finding.observed:
        lines.append(f"{indent}observed: {finding.observed}")
    if finding.expected:
        lines.append(f"{indent}expected: {finding.expected}")
    lines.extend(f"{indent}  {d}" for d in finding.details)
    if finding.fix:
        fix_lines = finding.fix.splitlines()
        lines.append(f"{indent}fix:      {style(fix_lines[0], bold=True)}")
        lines.extend(f"{indent}          {style(x, bold=True)}" for x in fix_lines[1:])
    if verbose:
        lines.append(f"{indent}source:   {finding.source}")
    return lines


def render_text(report: Report, verbose: bool = False, style: Style = _plain) -> str:
    lines = [
        f"llmtune doctor {report.llmtune_version}: {_describe_host(report)}",
        f"level {report.level}, {report.origin}, {report.duration_s:.2f} s",
    ]
    by_category = sorted(
        report.findings,
        key=lambda f: (CATEGORIES.index(f.category), _ORDER.index(f.status), f.id),
    )
    for category, group in groupby(by_category, key=lambda f: f.category):
        lines.append("")
        lines.append(style(category, bold=True, underline=True))
        for finding in group:
            lines.extend(_finding_lines(finding, verbose, style))
    s = report.summary
    lines.append("")
    lines.append(
        f"{s.failed} failed, {s.warned} warnings, {s.errored} errors, "
        f"{s.passed} passed, {s.skipped} skipped"
        + ("" if verbose else "   (-v shows the details of passing checks)")
    )
    return "\n".join(lines) + "\n"
