from conftest import HOSTS, read_fact

from llmtune.checks.memory import thp_always
from llmtune.checks.registry import FactValues
from llmtune.facts.memory import Thp, ThpValue
from llmtune.findings import Status
from llmtune.settings import HostSettings


def test_thp_fact_reads_recorded_vm_values(tree):
    # thp.txt: `cat enabled` then `cat defrag`, recorded on the Debian 12 VM.
    enabled, defrag = (HOSTS / "debian12-vm-nogpu" / "thp.txt").read_text().splitlines()
    root = tree(
        {
            "/sys/kernel/mm/transparent_hugepage/enabled": enabled + "\n",
            "/sys/kernel/mm/transparent_hugepage/defrag": defrag + "\n",
        }
    )
    assert read_fact(Thp, root=root) == ThpValue(enabled="madvise", defrag="madvise")


def test_thp_fact_absent_knob(tree):
    assert read_fact(Thp, root=tree({})) == ThpValue(None, None)


def _thp(value: ThpValue):
    return thp_always(FactValues({Thp: value}), HostSettings())


def test_thp_check_states():
    assert _thp(ThpValue("always", "madvise")).status == Status.PASS
    outcome = _thp(ThpValue("madvise", "madvise"))
    assert outcome.status == Status.FAIL
    assert "echo always" in outcome.fix and outcome.observed == "enabled=madvise"
    assert _thp(ThpValue(None, None)).status == Status.SKIP


def test_thp_check_follows_the_settings() -> None:
    madvise = HostSettings(thp="madvise")
    value = FactValues({Thp: ThpValue("madvise", "madvise")})
    assert thp_always(value, madvise).status == Status.PASS
    outcome = thp_always(FactValues({Thp: ThpValue("always", "madvise")}), madvise)
    assert outcome.status == Status.FAIL and outcome.fix.startswith("echo madvise")
