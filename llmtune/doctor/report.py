"""A doctor run's result as data: what every renderer formats."""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.doctor.run import Summary
from llmtune.facts.host import HostInfoValue
from llmtune.findings import Finding


@dataclass(frozen=True)
class Report:
    host: HostInfoValue
    level: str
    # Where the facts came from: "local", or "replay of FILE (captured AT)".
    origin: str
    started_at: str
    duration_s: float
    findings: tuple[Finding, ...]
    exit_code: int
    llmtune_version: str

    @property
    def summary(self) -> Summary:
        return Summary.of(self.findings)
