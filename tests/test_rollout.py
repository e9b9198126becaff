"""Rollout: batch planning, the orchestrator's decisions, and pyinfra's real output parsed.

The orchestrator tests drive ``rollout()`` with simple recording callables. They are decision
tests of pure control flow (which batch runs, when it stops, what is rolled back), not mocks of
real tools: the callables stand for the injected I/O, whose real pyinfra implementations are
tested below on real pyinfra runs (@local and an unreachable SSH host) and end to end on
container hosts in test_rollout_container.py.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from llmtune.rollout.plan import Batch, PlanError, choose_canaries, plan_batches
from llmtune.rollout.pyinfra_ops import (
    host_lines,
    limit_pattern,
    parse_run,
    pyinfra_argv,
    run_pyinfra,
)
from llmtune.rollout.run import ApplyResult, ApplyStatus, VerifyResult, rollout
from llmtune.rollout.summary import HostState, render_summary

# --- planning -------------------------------------------------------------------------------------

HOSTS = ["a", "b", "c", "d", "e", "f"]


def test_first_host_is_the_canary_without_a_canary_group() -> None:
    assert plan_batches(HOSTS, 2) == [
        Batch(("a",), canary=True),
        Batch(("b", "c")),
        Batch(("d", "e")),
        Batch(("f",)),
    ]


def test_canary_group_hosts_go_first_in_one_batch() -> None:
    groups = {"c": ["canary", "gpu"], "e": ["canary"], "a": ["gpu"]}
    assert plan_batches(HOSTS, 3, groups=groups) == [
        Batch(("c", "e"), canary=True),
        Batch(("a", "b", "d")),
        Batch(("f",)),
    ]


def test_canary_option_by_host_or_group_overrides_the_group() -> None:
    groups = {"a": ["canary"], "d": ["rack2"], "f": ["rack2"]}
    assert choose_canaries(HOSTS, groups, ["b"]) == ["b"]
    assert choose_canaries(HOSTS, groups, ["rack2"]) == ["d", "f"]
    assert plan_batches(HOSTS, 10, groups=groups, canary=["f", "b"]) == [
        Batch(("b", "f"), canary=True),
        Batch(("a", "c", "d", "e")),
    ]


def test_unknown_canary_and_bad_batch_size_are_errors() -> None:
    with pytest.raises(PlanError, match="nope"):
        plan_batches(HOSTS, 1, canary=["nope"])
    with pytest.raises(PlanError, match="at least 1"):
        plan_batches(HOSTS, 0)
    with pytest.raises(PlanError, match="twice"):
        plan_batches(["a", "a"], 1)


def test_every_host_once_and_edge_sizes() -> None:
    assert plan_batches([], 3) == []
    assert plan_batches(["solo"], 3) == [Batch(("solo",), canary=True)]
    batches = plan_batches(HOSTS, 1)
    assert [h for b in batches for h in b.hosts] == HOSTS
    assert len(batches) == 6


# --- the orchestrator's decisions -----------------------------------------------------------------


class Recorder:
    """Records every call; ``bad`` hosts fail verify, ``apply_fail``/``down`` fail apply."""

    def __init__(
        self,
        bad: set[str] = frozenset(),  # type: ignore[assignment]
        apply_fail: set[str] = frozenset(),  # type: ignore[assignment]
        down: set[str] = frozenset(),  # type: ignore[assignment]
        rollback_fail: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.bad, self.apply_fail, self.down, self.rollback_fail = (
            bad,
            apply_fail,
            down,
            rollback_fail,
        )
        self.calls: list[tuple[str, object]] = []
        self.messages: list[str] = []

    def apply(self, hosts: list[str]) -> Mapping[str, ApplyResult]:
        self.calls.append(("apply", list(hosts)))
        out = {}
        for h in hosts:
            if h in self.down:
                out[h] = ApplyResult(h, ApplyStatus.UNREACHABLE, "Could not connect")
            elif h in self.apply_fail:
                out[h] = ApplyResult(h, ApplyStatus.FAILED, "apt: E: broken")
            else:
                out[h] = ApplyResult(h, ApplyStatus.OK, changed=4)
        return out

    def verify(self, host: str) -> VerifyResult:
        self.calls.append(("verify", host))
        if host in self.bad:
            return VerifyResult(host, False, "tg 31.0 t/s vs baseline 45.2 (-31%)")
        return VerifyResult(host, True, "tg 45.0 t/s vs baseline 45.2 (-0.4%)")

    def rollback(self, hosts: list[str]) -> Mapping[str, ApplyResult]:
        self.calls.append(("rollback", list(hosts)))
        return {
            h: ApplyResult(
                h,
                ApplyStatus.FAILED if h in self.rollback_fail else ApplyStatus.OK,
                "no other complete build" if h in self.rollback_fail else "",
            )
            for h in hosts
        }

    def run(self, batches: list[Batch]):
        return rollout(batches, self.apply, self.verify, self.rollback, self.messages.append)


BATCHES = [Batch(("a",), canary=True), Batch(("b", "c")), Batch(("d", "e"))]


def states(summary) -> dict[str, str]:
    return {o.host: o.state.value for o in summary.outcomes}


def test_all_good_applies_every_batch_in_order_and_never_rolls_back() -> None:
    rec = Recorder()
    summary = rec.run(BATCHES)
    assert [c for c in rec.calls if c[0] == "apply"] == [
        ("apply", ["a"]),
        ("apply", ["b", "c"]),
        ("apply", ["d", "e"]),
    ]
    assert not [c for c in rec.calls if c[0] == "rollback"]
    assert set(states(summary).values()) == {"verified"}
    assert summary.ok and summary.exit_code == 0 and summary.stopped_at is None
    # Each host is verified after its own batch's apply, before the next batch.
    assert rec.calls.index(("verify", "a")) < rec.calls.index(("apply", ["b", "c"]))


def test_a_failed_canary_is_rolled_back_and_nothing_else_is_touched() -> None:
    rec = Recorder(bad={"a"})
    summary = rec.run(BATCHES)
    assert rec.calls == [("apply", ["a"]), ("verify", "a"), ("rollback", ["a"])]
    assert states(summary) == {
        "a": "rolled back",
        "b": "untouched",
        "c": "untouched",
        "d": "untouched",
        "e": "untouched",
    }
    assert summary.stopped_at == 1 and summary.exit_code == 1
    assert summary.outcomes[0].verify == "tg 31.0 t/s vs baseline 45.2 (-31%)"
    assert [o.batch for o in summary.outcomes] == [1, 2, 2, 3, 3]


def test_only_the_regressed_host_of_a_batch_is_rolled_back() -> None:
    rec = Recorder(bad={"c"})
    summary = rec.run(BATCHES)
    assert ("rollback", ["c"]) in rec.calls
    assert ("apply", ["d", "e"]) not in rec.calls
    assert states(summary) == {
        "a": "verified",
        "b": "verified",
        "c": "rolled back",
        "d": "untouched",
        "e": "untouched",
    }
    assert summary.stopped_at == 2 and summary.reason == "c rolled back"


def test_a_failed_rollback_leaves_the_host_regressed() -> None:
    summary = Recorder(bad={"b", "c"}, rollback_fail={"b"}).run(BATCHES)
    outcome = {o.host: o for o in summary.outcomes}
    assert outcome["b"].state == HostState.REGRESSED
    assert "rollback FAILED: no other complete build" in outcome["b"].detail
    assert outcome["c"].state == HostState.ROLLED_BACK


def test_a_failed_apply_is_verified_but_not_rolled_back_and_stops() -> None:
    rec = Recorder(apply_fail={"b"}, bad={"b"})
    summary = rec.run(BATCHES)
    assert ("verify", "b") in rec.calls
    assert not [c for c in rec.calls if c[0] == "rollback"]
    outcome = {o.host: o for o in summary.outcomes}
    assert outcome["b"].state == HostState.APPLY_FAILED
    assert outcome["b"].detail == "apply failed: apt: E: broken"
    assert outcome["c"].state == HostState.VERIFIED
    assert outcome["d"].state == HostState.UNTOUCHED


def test_an_unreachable_host_is_not_verified_and_stops_the_rollout() -> None:
    rec = Recorder(down={"b"})
    summary = rec.run(BATCHES)
    assert ("verify", "b") not in rec.calls and ("verify", "c") in rec.calls
    assert states(summary)["b"] == "unreachable"
    assert summary.stopped_at == 2 and summary.hosts_in(HostState.UNTOUCHED) == ["d", "e"]


def test_crashing_callables_count_as_failures_not_tracebacks() -> None:
    def apply_raises(hosts: list[str]) -> Mapping[str, ApplyResult]:
        raise OSError("pyinfra not found")

    rec = Recorder()
    summary = rollout(BATCHES, apply_raises, rec.verify, rec.rollback)
    assert states(summary)["a"] == "apply failed"
    assert "apply raised OSError: pyinfra not found" in summary.outcomes[0].detail

    def verify_raises(host: str) -> VerifyResult:
        raise RuntimeError("bench timed out")

    rec = Recorder()
    summary = rollout(BATCHES, rec.apply, verify_raises, rec.rollback)
    assert states(summary)["a"] == "rolled back"
    assert summary.outcomes[0].verify == "verify raised RuntimeError: bench timed out"

    # A host the apply run says nothing about did not apply.
    summary = rollout([Batch(("a", "b"))], lambda hosts: {}, rec.verify, rec.rollback)
    assert states(summary) == {"a": "apply failed", "b": "apply failed"}


def test_progress_and_text_rendering() -> None:
    rec = Recorder(bad={"c"})
    summary = rec.run(BATCHES)
    assert rec.messages[0] == "batch 1/3 (canary): applying to a"
    assert "  c: verify FAILED: tg 31.0 t/s vs baseline 45.2 (-31%)" in rec.messages
    assert "  rolling the llama.cpp build back on c" in rec.messages
    assert rec.messages[-1] == "stopping: 2 host(s) in later batches left untouched"
    assert render_summary(summary) == textwrap.dedent(
        """\
        rollout STOPPED at batch 2/3: c rolled back

        BATCH  HOST  RESULT       VERIFY / DETAIL
        1      a     verified     tg 45.0 t/s vs baseline 45.2 (-0.4%) | 4 operation(s) changed
        2      b     verified     tg 45.0 t/s vs baseline 45.2 (-0.4%) | 4 operation(s) changed
        2      c     rolled back  tg 31.0 t/s vs baseline 45.2 (-31%) | 4 operation(s) changed
        3      d     untouched
        3      e     untouched

        2 verified, 1 rolled back, 2 untouched
        """
    )
    assert render_summary(Recorder().run(BATCHES)).startswith(
        "rollout complete: 3 batch(es), 5 host(s)\n"
    )


# --- pyinfra's real output ------------------------------------------------------------------------

# An SSH host nobody listens for: pyinfra's real "Could not connect".
DEAD = {"ssh_hostname": "127.0.0.1", "ssh_port": 1, "ssh_user": "root"}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def local_inventory(tmp_path: Path) -> Path:
    return write(
        tmp_path / "inventory.py",
        f"""\
        hosts = ["@local", ("dead", {DEAD!r}), ("gpu[1]", {DEAD!r}), ("gpu1", {DEAD!r})]
        """,
    )


def deploy(tmp_path: Path, body: str) -> Path:
    return write(
        tmp_path / "deploy.py", "from pyinfra.operations import server\n" + textwrap.dedent(body)
    )


def test_limit_is_one_escaped_pattern_per_host(tmp_path: Path) -> None:
    assert limit_pattern("gpu[1]") == "gpu[[]1]"
    assert limit_pattern("box*") == "box[*]"
    argv = pyinfra_argv(tmp_path / "i.py", tmp_path / "d.py", ["a", "b"])
    assert argv[-6:] == ["--limit", "a", "--limit", "b", "-y", "--json"]


def test_real_run_success_counts_changed_operations(tmp_path: Path, local_inventory: Path) -> None:
    marker = tmp_path / "marker"
    path = deploy(
        tmp_path,
        f"""\
        server.shell(name="one", commands=["true"])
        server.shell(name="two", commands=["touch {marker}"])
        """,
    )
    lines: list[str] = []
    results = run_pyinfra(local_inventory, path, ["@local"], cwd=tmp_path, on_line=lines.append)
    assert results == {"@local": ApplyResult("@local", ApplyStatus.OK, "", changed=2)}
    assert marker.exists()
    assert any("[@local] Success" in line for line in lines)


def test_real_run_failure_and_unreachable_host(tmp_path: Path, local_inventory: Path) -> None:
    path = deploy(
        tmp_path,
        """\
        server.shell(name="first", commands=["true"])
        server.shell(name="boom", commands=["echo the reason it broke >&2; exit 3"])
        server.shell(name="never", commands=["true"])
        """,
    )
    # Every host fails: pyinfra stops with "No hosts remaining!" and prints no JSON; the
    # result comes from the log alone.
    results = run_pyinfra(local_inventory, path, ["@local", "dead"], cwd=tmp_path)
    assert results["@local"].status == ApplyStatus.FAILED
    assert results["@local"].detail == "boom: the reason it broke / Error: executed 0 commands"
    assert results["dead"].status == ApplyStatus.UNREACHABLE
    assert results["dead"].detail.startswith("Could not connect")


def test_real_run_mixed_results_from_the_json(tmp_path: Path) -> None:
    inventory = write(
        tmp_path / "inventory.py",
        f"""\
        hosts = ["@local", ("dead", {DEAD!r})]
        """,
    )
    # @local succeeds, dead never connects: pyinfra finishes and prints its JSON results.
    path = deploy(tmp_path, 'server.shell(name="fine", commands=["true"])\n')
    results = run_pyinfra(inventory, path, ["@local", "dead"], cwd=tmp_path)
    assert results["@local"] == ApplyResult("@local", ApplyStatus.OK, "", changed=1)
    assert results["dead"].status == ApplyStatus.UNREACHABLE


def test_real_run_touches_only_the_limited_hosts(tmp_path: Path, local_inventory: Path) -> None:
    path = deploy(tmp_path, 'server.shell(name="fine", commands=["true"])\n')
    lines: list[str] = []
    results = run_pyinfra(local_inventory, path, ["gpu[1]"], cwd=tmp_path, on_line=lines.append)
    assert results["gpu[1]"].status == ApplyStatus.UNREACHABLE
    # Unescaped, the pattern gpu[1] would have matched gpu1 (and only it).
    seen = host_lines("\n".join(lines), ["gpu[1]", "gpu1", "@local", "dead"])
    assert seen["gpu[1]"] and not seen["gpu1"] and not seen["@local"] and not seen["dead"]


def test_a_broken_deploy_file_fails_every_host_with_pyinfras_error(
    tmp_path: Path, local_inventory: Path
) -> None:
    path = write(tmp_path / "deploy.py", "import no_such_module_here\n")
    results = run_pyinfra(local_inventory, path, ["@local"], cwd=tmp_path)
    assert results["@local"] == ApplyResult(
        "@local",
        ApplyStatus.FAILED,
        "ModuleNotFoundError: No module named 'no_such_module_here'",
    )
    path.write_text("from pyinfra.operations import server\n  server.shell(commands=['true'])\n")
    results = run_pyinfra(local_inventory, path, ["@local"], cwd=tmp_path)
    assert results["@local"].detail == "IndentationError: unexpected indent"


def test_a_run_past_its_timeout_is_killed(tmp_path: Path, local_inventory: Path) -> None:
    path = deploy(tmp_path, 'server.shell(name="slow", commands=["sleep 60"])\n')
    results = run_pyinfra(local_inventory, path, ["@local"], cwd=tmp_path, timeout_s=5)
    assert results == {
        "@local": ApplyResult("@local", ApplyStatus.FAILED, "pyinfra run killed after 5 s")
    }


def test_parse_run_without_json_and_exit_0_is_success() -> None:
    assert parse_run(["h"], 0, "", "") == {"h": ApplyResult("h", ApplyStatus.OK)}
