"""The tune benchmark report over real ``llmtune tune`` files recorded on the CPU VM."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmtune.tune import report, trial
from llmtune.tune.report import (
    BEST,
    DEFAULTS,
    PLAN,
    SEED,
    TUNE,
    RooflineModel,
    Thresholds,
    bytes_per_token,
    criteria,
    ratios,
    roofline_tg,
    sessions,
    sweep_seconds,
    tune_seconds,
)
from llmtune.tune.search import TIE, winner

FIXTURES = Path(__file__).parent / "fixtures" / "recorded" / "tune-report"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def scenario(stem: str) -> report.Scenario:
    return report.load_scenario(f"{stem}={FIXTURES / stem}")


def test_an_interrupted_then_resumed_sweep_is_two_sessions() -> None:
    runs = sessions(text("s2-sweep.jsonl"))
    # Interrupted after the first llama-bench run: 8 trials, no summary; then --resume: 8 more.
    assert [len(s.trials) for s in runs] == [8, 8]
    assert runs[0].summary is None and runs[1].summary is not None
    assert runs[1].summary["resumed"] == 8
    # Start line to last line of each session (the file's time stamps).
    first = 1795452690.029047 - 1795452688.999198
    second = 1795452693.3847895 - 1795452692.1504703
    assert sweep_seconds(runs) == pytest.approx(first + second)
    # An interrupted session has no refs_s: counted whole.
    assert tune_seconds(runs) == pytest.approx(first + second)


def test_a_session_that_only_started_counts_zero() -> None:
    runs = sessions(text("s1-sweep.jsonl"))
    assert [len(s.trials) for s in runs] == [0, 16]
    assert runs[0].span_s == 0.0
    assert sweep_seconds(runs) == pytest.approx(1795452685.8091197 - 1795452683.9943988)


def test_tune_time_leaves_the_references_out() -> None:
    runs = sessions(text("s1-tune.jsonl"))
    assert len(runs) == 1 and runs[0].summary is not None
    assert runs[0].refs_s == 0.3
    span = runs[0].end - runs[0].start
    assert tune_seconds(runs) == pytest.approx(span - 0.3)
    assert sweep_seconds(runs) == pytest.approx(span)


def test_the_columns_of_a_scenario() -> None:
    s = scenario("s2")
    c = s.columns
    assert report.tg(c[DEFAULTS]) == 3778.877351
    assert report.pp(c[DEFAULTS]) == 39151.142523
    # The seed recipe could not run on the tiny model (llama-bench failed): no numbers.
    assert c[SEED] is not None and c[SEED].error and report.tg(c[SEED]) is None
    assert c[PLAN] is not None and c[PLAN].label == "ref:plan"
    assert report.tg(c[PLAN]) == 5859.311274
    assert c[TUNE] is not None and c[TUNE].config.brief() == "cpu f16 fa off ub 256 t 2 lm mlock"
    assert report.tg(c[TUNE]) == 6041.262436
    # No other sweep configuration is within TIE of the fastest: the fastest TG wins.
    fastest = max(s.sweep_ranking, key=lambda t: t.tg.avg_ts)
    assert c[BEST] is not None and c[BEST].config == fastest.config
    assert report.tg(c[BEST]) == 6145.348026
    assert s.tune_configs == 6 and s.sweep_configs == 16
    # The sweep's measurement of tune's choice (ub 256 t 2).
    assert report.tg(s.sweep_of_tune) == 6023.50847


def test_within_a_tie_the_faster_prompt_wins() -> None:
    """t.jsonl (an exhaustive run with --references, resumed): ub 512 t 2 has the fastest TG,
    but the plan's configuration is within TIE of it with a faster PP."""
    runs = sessions(text("t.jsonl"))
    trials = report.all_trials(runs)
    ranking = report.Scenario("t", (), tuple(runs)).sweep_ranking
    fastest = ranking[0]
    assert fastest.config.brief() == "cpu f16 fa off ub 512 t 2 lm mlock"
    chosen = report.latest(trials, winner(report.measured(trials)))
    assert chosen is not None and chosen.label == "plan"
    assert chosen.tg.avg_ts >= fastest.tg.avg_ts * (1 - TIE)
    assert chosen.pp.avg_ts > fastest.pp.avg_ts
    # The references are no part of the sweep, even where one is faster (ref:plan is not).
    assert all(not t.label.startswith("ref:") for t in ranking)
    assert len(ranking) == 16


def test_ratios_and_criteria() -> None:
    s = scenario("s2")
    r = ratios(s)
    assert r["plan / sweep best (TG)"] == pytest.approx(5859.311274 / 6145.348026)
    assert r["plan / defaults (TG)"] == pytest.approx(5859.311274 / 3778.877351)
    assert r["tune / sweep best (TG)"] == pytest.approx(6041.262436 / 6145.348026)
    key = "sweep's tune config / sweep's best in the sweep run (TG)"
    assert r[key] == pytest.approx(6023.50847 / 6145.348026)
    assert r["tune time / sweep time"] == pytest.approx(s.tune_s / s.sweep_s)
    checks = {c.name: c.passed for c in criteria(s)}
    # 0.953, 1.551, 0.983, 0.371 against 0.97, 1, 0.99, 0.25.
    assert checks == {
        "plan TG / sweep best TG": False,
        "plan TG / defaults TG": True,
        "tune TG / sweep best TG": False,
        "tune time / sweep time": False,
    }
    looser = Thresholds(
        plan_vs_best=0.95, plan_vs_defaults=1.6, tune_vs_best=0.98, time_vs_sweep=0.4
    )
    flipped = {c.name: c.passed for c in criteria(s, looser)}
    assert all(flipped[k] is not v for k, v in checks.items())


def test_a_criterion_without_its_numbers_is_not_applicable() -> None:
    s = scenario("s2")
    missing = replace(s, columns={**s.columns, DEFAULTS: None})
    check = next(c for c in criteria(missing) if c.name == "plan TG / defaults TG")
    assert check.value is None and check.passed is None


def test_markdown_tables() -> None:
    md = report.markdown([scenario("s1"), scenario("s2")])
    assert "| llmtune tune | 6,019.4 | 26,786.8 | cpu f16 fa off ub 256 t 2 lm mlock |" in md
    assert "| seed recipe | - | - | not measured |" in md
    # Unconfirmed: no noise column value, a miss is a FAIL.
    assert "| s2 | plan TG / sweep best TG | 0.953 | - | at least 0.97 | **FAIL** |" in md
    assert "| s2 | plan TG / defaults TG | 1.551 | - | at least 1 | pass |" in md


def test_a_confirmed_scenario_uses_the_medians_of_its_rounds() -> None:
    s = scenario("c")  # c-tune.jsonl, c-sweep.jsonl and c-confirm.jsonl
    rounds = [
        (t.label, t.tg.avg_ts if t.tg else None)
        for _, t in trial.parse_trials(text("c-confirm.jsonl").splitlines())
    ]
    plan = sorted(v for label, v in rounds if label == "confirm:plan")
    defaults = sorted(v for label, v in rounds if label == "confirm:llama.cpp defaults")
    assert len(plan) == 3 and len(defaults) == 3
    assert s.tg(PLAN) == pytest.approx(plan[1])
    assert s.rounds(PLAN).tg_spread == pytest.approx((plan[2] - plan[0]) / plan[1])
    # The seed recipe failed every round: no confirmed number, and its run's (none) stays.
    assert s.rounds(SEED) is None and s.tg(SEED) is None
    r = ratios(s)
    assert r["plan / defaults (TG)"] == pytest.approx(plan[1] / defaults[1])
    check = next(c for c in criteria(s) if c.name == "plan TG / defaults TG")
    assert check.noise == pytest.approx(
        max((plan[2] - plan[0]) / plan[1], (defaults[2] - defaults[0]) / defaults[1])
    )
    md = report.markdown([s])
    assert "medians of 3 interleaved rounds" in md
    assert f"| llmtune plan | {plan[1]:,.1f} | {plan[0]:,.1f}-{plan[2]:,.1f} |" in md


def test_a_miss_smaller_than_the_rounds_spread_is_within_noise() -> None:
    near = report.Check("plan TG / defaults TG", 0.975, "at least", 1.0, noise=0.05)
    far = report.Check("plan TG / defaults TG", 0.94, "at least", 1.0, noise=0.05)
    once = report.Check("plan TG / defaults TG", 0.975, "at least", 1.0)
    assert near.passed is False and near.within_noise
    assert far.passed is False and not far.within_noise
    assert not once.within_noise  # measured once: no noise to be within
    assert report.Check("x", 1.01, "at least", 1.0, noise=0.05).within_noise is False


# A hand-built model: 2 layers, 4 experts of which 2 are used, 8 KV bytes per token.
TENSORS = [
    ["token_embd.weight", "Q4_K", 1000],
    ["blk.0.attn_q.weight", "Q4_K", 100],
    ["blk.0.ffn_up_exps.weight", "Q4_K", 400],
    ["blk.1.attn_q.weight", "Q4_K", 100],
    ["blk.1.ffn_up_exps.weight", "Q4_K", 400],
    ["output_norm.weight", "F32", 10],
    ["output.weight", "Q6_K", 200],
]
SHAPE = {"n_layer": 2, "n_expert": 4, "n_expert_used": 2, "kv_bytes_per_token": 8, "depth": 10}


@pytest.mark.parametrize(
    ("ngl", "overrides", "ncmoe", "expected"),
    [
        # Per layer: 100 + 400 x 2/4 = 300 bytes of weights, 8 x 10 / 2 = 40 of KV.
        (3, "", 0, (890.0, 0.0)),  # all layers and the output layer (210) on the GPU
        (999, "", 0, (890.0, 0.0)),
        (-1, "", 0, (890.0, 0.0)),  # llama.cpp's "all layers" (fit-params prints it with room)
        (2, "", 0, (680.0, 210.0)),  # every layer, but not the output layer
        (1, "", 0, (340.0, 550.0)),  # the LAST layer (blk.1) only
        (0, "", 0, (0.0, 890.0)),
        (3, r"blk\.1\.ffn_.*_exps=CPU", 0, (690.0, 200.0)),
        (3, r"blk\.1\.ffn_.*_exps=CPU;output\.weight=CPU", 0, (490.0, 400.0)),
        (0, r"blk\.0\.attn_q=CUDA0", 0, (100.0, 790.0)),  # an override decides over the layer
        (999, "", 1, (690.0, 200.0)),  # --n-cpu-moe 1: blk.0's experts in RAM
    ],
)
def test_bytes_per_token(ngl: int, overrides: str, ncmoe: int, expected) -> None:
    assert bytes_per_token(TENSORS, ngl, overrides, **SHAPE, ncmoe=ncmoe) == expected


def test_tied_embeddings_are_read_whole_as_the_output() -> None:
    tied = [t for t in TENSORS if t[0] != "output.weight"]
    assert bytes_per_token(tied, 3, "", **SHAPE) == (1690.0, 0.0)
    assert bytes_per_token(tied, 2, "", **SHAPE) == (680.0, 1010.0)


def test_roofline_tg() -> None:
    assert roofline_tg(690, 200, 1000, 100) == pytest.approx(1 / (0.69 + 2.0))
    assert roofline_tg(0, 5e9, 3e12, 1e11) == pytest.approx(20.0)


def test_the_roofline_of_a_recorded_cpu_trial() -> None:
    s = scenario("s2")
    model = RooflineModel(
        tuple(map(tuple, TENSORS)),
        n_layer=2,
        gpu_bw=1e12,
        cpu_bw=1e9,
        n_expert=4,
        n_expert_used=2,
        kv_bytes_per_token_f16=8,
    )
    # -ngl 0, f16 KV, depth 1024 + half of tg64: 810 weight bytes + 8 x 1056 KV bytes, in RAM.
    assert report.trial_roofline(model, s.columns[DEFAULTS]) == pytest.approx(1e9 / (810 + 8448))


def test_a_real_gguf_tensor_table() -> None:
    import gguf

    path = Path(__file__).parent / "fixtures" / "recorded" / "model" / "tiny-q4_k_m.gguf"
    table = report.tensor_table(path)
    reader = gguf.GGUFReader(str(path))
    assert len(table) == len(reader.tensors)
    assert sum(b for _, _, b in table) == sum(int(t.n_bytes) for t in reader.tensors)
    assert all(isinstance(b, int) and b > 0 for _, _, b in table)


def test_the_cli_writes_markdown_and_charts(tmp_path: Path) -> None:
    roofline = tmp_path / "roofline.json"
    roofline.write_text(json.dumps({"s1": {"tensors": TENSORS, "n_layer": 2, "cpu_bw": 1e9}}))
    md, png = tmp_path / "out" / "report.md", tmp_path / "png"
    rc = report.main(
        [
            "--scenario",
            f"CPU VM={FIXTURES / 's1'}",
            "--scenario",
            f"CPU VM resumed={FIXTURES / 's2'}",
            "--scenario",
            f"CPU VM confirmed={FIXTURES / 'c'}",
            "--roofline",
            str(roofline),
            "--out-md",
            str(md),
            "--out-png-dir",
            str(png),
        ]
    )
    assert rc == 0
    written = md.read_text()
    assert "### CPU VM resumed" in written and "![CPU VM](../png/cpu-vm-columns.png)" in written
    # The roofline columns only for the scenario that has an entry (s1, found by its stem).
    assert written.count("roofline TG t/s") == 1
    # The confirm file beside c-tune/c-sweep is read: its scenario has the medians' table.
    assert written.count("medians of 3 interleaved rounds") == 1
    charts = sorted(p.name for p in png.iterdir())
    assert charts == [
        "cpu-vm-columns.png",
        "cpu-vm-confirmed-columns.png",
        "cpu-vm-confirmed-sweep.png",
        "cpu-vm-resumed-columns.png",
        "cpu-vm-resumed-sweep.png",
        "cpu-vm-sweep.png",
    ]
    for p in png.iterdir():
        assert p.read_bytes()[:8] == PNG_SIGNATURE and p.stat().st_size > 10_000


def test_the_cli_rejects_a_bad_scenario(tmp_path: Path) -> None:
    args = ["--out-md", str(tmp_path / "r.md"), "--out-png-dir", str(tmp_path)]
    assert report.main(["--scenario", "no-equals-sign", *args]) == 2
    assert report.main(["--scenario", f"x={tmp_path / 'missing'}", *args]) == 2
