"""The doctor's checklist. Each module registers the checks of one category on import."""

from __future__ import annotations

from llmtune.checks import (  # noqa: F401
    build,
    cpu,
    gpu,
    memory,
    power,
    processes,
    service,
    system,
    thermal,
)
from llmtune.checks.registry import CHECKS, Check


def all_checks() -> list[Check]:
    """Every registered check, in a stable order (category order, then ID)."""
    from llmtune.checks.registry import CATEGORIES

    return sorted(CHECKS.values(), key=lambda c: (CATEGORIES.index(c.category), c.id))
