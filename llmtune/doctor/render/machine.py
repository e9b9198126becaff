"""Machine formats: JSON (versioned schema), JUnit XML, Prometheus text exposition."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from xml.etree import ElementTree as ET

from llmtune.doctor.report import Report
from llmtune.findings import Status

JSON_SCHEMA = "llmtune.doctor/v1"


def render_json(report: Report) -> str:
    s = report.summary
    host = asdict(report.host)
    host["distro_like"] = list(report.host.distro_like)
    data = {
        "schema": JSON_SCHEMA,
        "llmtune_version": report.llmtune_version,
        "host": host,
        "level": report.level,
        "origin": report.origin,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "exit_code": report.exit_code,
        "summary": {
            "pass": s.passed,
            "warn": s.warned,
            "fail": s.failed,
            "skip": s.skipped,
            "error": s.errored,
        },
        "findings": [f.to_dict() for f in report.findings],
    }
    return json.dumps(data, indent=2) + "\n"


def render_junit(report: Report, fail_on: Status = Status.FAIL) -> str:
    """One testcase per check; warnings fail only with --fail-on warn, as the exit code does."""
    s = report.summary
    failures = s.failed + (s.warned if fail_on == Status.WARN else 0)
    suite = ET.Element(
        "testsuite",
        name="llmtune.doctor",
        hostname=report.host.hostname,
        tests=str(len(report.findings)),
        failures=str(failures),
        errors=str(s.errored),
        skipped=str(s.skipped),
        time=f"{report.duration_s:.3f}",
        timestamp=report.started_at,
    )
    for f in report.findings:
        case = ET.SubElement(
            suite, "testcase", classname=f"llmtune.doctor.{f.category}", name=f"{f.id} {f.name}"
        )
        body = "\n".join(
            x
            for x in (
                f"observed: {f.observed}" if f.observed else "",
                f"expected: {f.expected}" if f.expected else "",
                *f.details,
                f"fix: {f.fix}" if f.fix else "",
                f"source: {f.source}",
            )
            if x
        )
        if f.status == Status.FAIL or (f.status == Status.WARN and fail_on == Status.WARN):
            ET.SubElement(case, "failure", message=f.observed, type=f.status.value).text = body
        elif f.status == Status.ERROR:
            ET.SubElement(case, "error", message=f.observed).text = body
        elif f.status == Status.SKIP:
            ET.SubElement(case, "skipped", message=f.observed)
        elif f.status == Status.WARN:
            ET.SubElement(case, "system-out").text = "WARN\n" + body
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus(report: Report, now: float | None = None) -> str:
    """node_exporter textfile format: a stateset per check, counts, duration and run time."""
    host = _label(report.host.hostname)
    out = [
        "# HELP llmtune_doctor_check_status 1 for the status this check has now, 0 for the others.",
        "# TYPE llmtune_doctor_check_status gauge",
    ]
    for f in report.findings:
        labels = (
            f'id="{_label(f.id)}",name="{_label(f.name)}",category="{_label(f.category)}",'
            f'severity="{f.severity.value}",host="{host}"'
        )
        for status in Status:
            value = 1 if f.status == status else 0
            out.append(f'llmtune_doctor_check_status{{{labels},status="{status.value}"}} {value}')
    counts = {
        Status.PASS: report.summary.passed,
        Status.WARN: report.summary.warned,
        Status.FAIL: report.summary.failed,
        Status.SKIP: report.summary.skipped,
        Status.ERROR: report.summary.errored,
    }
    out += [
        "# HELP llmtune_doctor_findings Number of checks per status in the last run.",
        "# TYPE llmtune_doctor_findings gauge",
    ]
    out += [
        f'llmtune_doctor_findings{{status="{s.value}",host="{host}"}} {n}'
        for s, n in counts.items()
    ]
    out += [
        "# HELP llmtune_doctor_exit_code Exit code of the last run (0 ok, 1 failed, 3 errored).",
        "# TYPE llmtune_doctor_exit_code gauge",
        f'llmtune_doctor_exit_code{{host="{host}"}} {report.exit_code}',
        "# HELP llmtune_doctor_duration_seconds Wall time of the last run.",
        "# TYPE llmtune_doctor_duration_seconds gauge",
        f'llmtune_doctor_duration_seconds{{host="{host}"}} {report.duration_s:.3f}',
        "# HELP llmtune_doctor_last_run_timestamp_seconds When the last run finished.",
        "# TYPE llmtune_doctor_last_run_timestamp_seconds gauge",
        f'llmtune_doctor_last_run_timestamp_seconds{{host="{host}"}} '
        f"{(time.time() if now is None else now):.0f}",
    ]
    return "\n".join(out) + "\n"
