"""Facts read through pyinfra's connectors give exactly what the local collector gives."""

from __future__ import annotations

from llmtune.checks.registry import Level
from llmtune.doctor.collect import collect_local
from llmtune.doctor.remote import collect_pyinfra, connect
from llmtune.doctor.run import facts_needed, select_checks
from llmtune.facts.host import HostInfo


def test_pyinfra_local_connector_matches_local_collector() -> None:
    facts = [HostInfo, *facts_needed(select_checks(Level.QUICK))]
    state = connect(["@local"])
    host = state.inventory.get_host("@local")
    through_pyinfra = collect_pyinfra(host, facts)
    local = collect_local(facts)
    assert {r.fact for r in through_pyinfra.records} == {f.__name__ for f in facts}
    assert all(r.exit_status == 0 for r in through_pyinfra.records)
    # Values that do not move between two readings must be equal.
    assert through_pyinfra.facts[HostInfo] == local.facts[HostInfo]
    for fact in facts:
        if fact.stable:
            assert through_pyinfra.facts[fact] == local.facts[fact], fact.__name__
