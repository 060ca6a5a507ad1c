"""Paired significance tests: hand-computed examples, agreement with statsmodels and sacrebleu,
false-discovery control, the labels in analysis.json, `curatune compare` and the power table."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import TTestPower
from typer.testing import CliRunner

from curatune.cli import app
from curatune.evaluate.analysis import AnalysisConfig, analyze_run
from curatune.evaluate.analysis.significance import (
    CANNOT_TELL,
    NO_CHANGE,
    NOT_TESTED,
    SIGNIFICANT_GAIN,
    SIGNIFICANT_LOSS,
    adjust_p_values,
    agresti_min_interval,
    mcnemar_exact,
    mean_statistic,
    paired_bootstrap,
    sacrebleu_metric,
    sacrebleu_paired_bootstrap,
    verdict,
)
from curatune.evaluate.metrics import corpus_chrf
from curatune.evaluate.power import (
    mcnemar_items_needed,
    mcnemar_mde,
    mean_items_needed,
    mean_mde,
)
from curatune.rundir import (
    SCORE_COLUMNS,
    CellSpec,
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    cell_key,
    read_json,
)

runner = CliRunner()


# ----------------------------------------------------------------------------- McNemar


def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[list[float], list[float]]:
    a = [1.0] * only_a + [0.0] * only_b + [1.0] * both + [0.0] * neither
    b = [0.0] * only_a + [1.0] * only_b + [1.0] * both + [0.0] * neither
    return a, b


def test_mcnemar_exact_hand_computed():
    a, b = _pairs(only_a=1, only_b=6, both=8, neither=5)  # 20 items, 7 discordant
    result = mcnemar_exact(a, b)
    # 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * (1 + 7) / 128
    assert result.p_value == pytest.approx(16 / 128)
    assert result.difference == pytest.approx(5 / 20)
    assert (result.value_a, result.value_b) == (pytest.approx(9 / 20), pytest.approx(14 / 20))
    # Agresti-Min: cells + 1/2, n + 2 = 22: diff = 5/22, var = (8 - 25/22) / 22^2
    half = 1.959963984540054 * math.sqrt((8 - 25 / 22) / 22**2)
    assert (result.ci_low, result.ci_high) == (pytest.approx(5 / 22 - half), pytest.approx(5 / 22 + half))
    assert result.detail["right_in_a_only"] == 1 and result.detail["right_in_b_only"] == 6


def test_mcnemar_no_discordant_items_is_p_one():
    a, b = _pairs(0, 0, 10, 3)
    result = mcnemar_exact(a, b)
    assert result.p_value == 1.0 and result.difference == 0.0


def test_mcnemar_agrees_with_statsmodels():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(5, 400))
        a = rng.integers(0, 2, n).astype(float)
        flip = rng.random(n) < rng.uniform(0, 0.4)
        b = np.where(flip, 1 - a, a)
        ours = mcnemar_exact(a, b)
        table = [[np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))],
                 [np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))]]
        assert ours.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12, abs=1e-15)


def test_mcnemar_refuses_non_binary_values():
    with pytest.raises(ValueError, match="0 or 1"):
        mcnemar_exact([0.5, 1.0], [1.0, 0.0])


def test_agresti_min_interval_covers_at_nominal_rate():
    # Coverage check by simulation: a 95% interval for matched proportions covers ~95%.
    rng = np.random.default_rng(0)
    n, p_a_only, p_b_only = 80, 0.05, 0.12
    counts = rng.multinomial(n, [p_a_only, p_b_only, 1 - p_a_only - p_b_only], size=4000)
    covered = [lo <= p_b_only - p_a_only <= hi for lo, hi in
               (agresti_min_interval(int(c[0]), int(c[1]), n) for c in counts)]
    assert 0.93 <= np.mean(covered) <= 0.975


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_a_constant_shift_is_exact():
    a = np.linspace(0, 1, 50)
    stats_a, stats_b, mean = mean_statistic(a, a + 0.1)
    result = paired_bootstrap(stats_a, stats_b, mean, n_resamples=500, seed=1)
    assert result.difference == pytest.approx(0.1)
    assert (result.ci_low, result.ci_high) == (pytest.approx(0.1), pytest.approx(0.1))
    assert result.p_value == pytest.approx(1 / 501)  # no resample is as far from 0 under the null


def test_bootstrap_of_identical_systems_is_p_one():
    values = np.random.default_rng(2).random(40)
    result = paired_bootstrap(*mean_statistic(values, values), n_resamples=300, seed=0)
    assert result.difference == 0 and result.p_value == 1.0


def test_bootstrap_interval_agrees_with_scipy():
    rng = np.random.default_rng(5)
    a = rng.normal(0.5, 0.2, 300)
    b = a + rng.normal(0.03, 0.1, 300)
    ours = paired_bootstrap(*mean_statistic(a, b), n_resamples=4000, seed=0)
    ref = stats.bootstrap((b - a,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.002)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.002)
    # The shift-method p-value is close to the normal-theory two-sided p-value of the mean difference.
    z = (b - a).mean() / ((b - a).std(ddof=1) / math.sqrt(300))
    assert ours.p_value == pytest.approx(max(2 * stats.norm.sf(abs(z)), 1 / 4001), abs=0.01)


def test_bootstrap_is_seeded():
    values = np.random.default_rng(0).random((30, 2))
    first = paired_bootstrap(*mean_statistic(values[:, 0], values[:, 1]), seed=7)
    again = paired_bootstrap(*mean_statistic(values[:, 0], values[:, 1]), seed=7)
    assert first.to_dict() == again.to_dict()


# ----------------------------------------------------------------------------- sacrebleu


def _systems(n: int, seed: int, keep_a: float, keep_b: float):
    rnd = random.Random(seed)
    words = "the a cat dog sat on mat house red blue big small runs fast slow bird tree".split()
    refs = [" ".join(rnd.choices(words, k=rnd.randint(4, 12))) for _ in range(n)]
    def noisy(keep):
        return [" ".join(w if rnd.random() < keep else rnd.choice(words) for w in r.split()) for r in refs]
    return noisy(keep_a), noisy(keep_b), refs


@pytest.mark.parametrize("metric", ["bleu", "chrf", "ter"])
@pytest.mark.parametrize("seed,keep_b", [(0, 0.62), (1, 0.75)])
def test_sacrebleu_paired_bs_agrees_with_sacrebleu(metric, seed, keep_b):
    from sacrebleu.significance import PairedTest

    a, b, refs = _systems(80, seed, 0.6, keep_b)
    _, scores = PairedTest([("a", a), ("b", b)], {metric: sacrebleu_metric(metric)}, [refs], test_type="bs")()
    base, system = scores[next(k for k in scores if k != "System")]
    ours = sacrebleu_paired_bootstrap(metric, a, b, refs)
    assert ours.p_value == system.p_value
    assert ours.value_a == base.score and ours.value_b == system.score
    assert ours.detail["mean_b"] == pytest.approx(float(system.mean), rel=1e-6)
    assert ours.detail["ci_b"] == pytest.approx(float(system.ci), rel=1e-6)
    assert ours.detail["mean_a"] == pytest.approx(float(base.mean), rel=1e-6)
    assert ours.detail["ci_a"] == pytest.approx(float(base.ci), rel=1e-6)
    assert ours.ci_low <= ours.difference <= ours.ci_high


# ----------------------------------------------------------------------------- many tests


def test_benjamini_hochberg_and_holm_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # BH: sorted 0.005, 0.01, 0.03, 0.04 times m/rank = 0.02, 0.02, 0.04, 0.04
    assert adjust_p_values(p, "fdr_bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # Holm: sorted times (m - rank + 1) = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values([]) == []


def test_verdict_uses_direction():
    assert verdict(-0.05, +1, 0.01) == SIGNIFICANT_LOSS  # accuracy went down
    assert verdict(-3.0, -1, 0.01) == SIGNIFICANT_GAIN  # TER went down
    assert verdict(0.05, +1, 0.2) == NO_CHANGE
    assert verdict(0.05, +1, None) == CANNOT_TELL


# ----------------------------------------------------------------------------- a run with real texts


def _texts(n: int):
    """``n`` references of a translation-like task and ``noisy(keep)``, which garbles each word with
    probability 1 - keep (one seeded generator, so every run builds the same texts)."""
    rnd = random.Random(0)
    words = "the a cat dog sat on mat house red blue big small runs fast slow bird tree".split()
    refs = [" ".join(rnd.choices(words, k=8)) for _ in range(n)]
    def noisy(keep):
        return [" ".join(w if rnd.random() < keep else rnd.choice(words) for w in r.split()) for r in refs]
    return refs, noisy


def _write_cell(run: RunDir, cell: str, method: str, size: int, seed: int, stage: str, refs: list[str],
                outputs: list[str], acc) -> list[list]:
    """Write a cell's task samples (sacrebleu chrF++) and, unless ``acc`` is None, its 0/1 benchmark
    samples; return its rows of scores.parquet."""
    n = len(refs)
    chrf = corpus_chrf(outputs, refs)
    atomic_write_parquet(run.sample_file("task", cell, stage), pd.DataFrame({
        "example_id": [f"t{i}" for i in range(n)], "prompt": ["translate"] * n, "reference": refs,
        "output": outputs, "chrf": chrf.per_item["chrf"]}))
    rows = [[cell, method, size, seed, stage, "task", "chrf", chrf.corpus["chrf"], n]]
    if acc is not None:
        atomic_write_parquet(run.sample_file("arc", cell, stage), pd.DataFrame({
            "example_id": [f"q{i}" for i in range(n)], "prompt": [""] * n, "reference": [""] * n,
            "output": [""] * n, "acc": acc}))
        rows.append([cell, method, size, seed, stage, "arc", "acc", float(acc.mean()), n])
    return rows


def _mini_run(root, n: int = 60) -> RunDir:
    """A run with a translation-like task (real texts, sacrebleu scores) and a 0/1 benchmark:
    full-n100-s0 learns the task and loses 15 benchmark items; lora-n100-s0 changes one output."""
    run = RunDir(root)
    refs, noisy = _texts(n)
    base_out = noisy(0.4)
    outputs = {"base": base_out, "full-n100-s0": noisy(0.9), "lora-n100-s0": base_out[:-1] + [refs[-1]]}
    acc_base = np.array([1.0] * 40 + [0.0] * 20)
    acc = {"base": acc_base, "full-n100-s0": np.r_[np.zeros(15), acc_base[15:]], "lora-n100-s0": acc_base.copy()}
    rows = []
    for cell, stage in [("base", "base"), ("full-n100-s0", "final"), ("lora-n100-s0", "final")]:
        method, size = (("base", 0) if cell == "base" else (cell.split("-")[0], 100))
        rows += _write_cell(run, cell, method, size, 0, stage, refs, outputs[cell], acc[cell])
    atomic_write_parquet(run.scores, pd.DataFrame(rows, columns=SCORE_COLUMNS))
    atomic_write_json(run.manifest, {"config": {}})
    return run


@pytest.fixture
def mini_run(tmp_path) -> RunDir:
    return _mini_run(tmp_path / "run")


def test_labels_in_analysis_json(mini_run):
    analyze_run(mini_run, AnalysisConfig(n_bootstrap=0))
    analysis = read_json(mini_run.analysis)
    rows = {r["cell"]: r for r in analysis["learning_forgetting"] if r["stage"] == "final"}
    full, lora = rows["full-n100-s0"]["significance"], rows["lora-n100-s0"]["significance"]
    assert full["task"]["label"] == SIGNIFICANT_GAIN and full["task"]["test"] == "sacrebleu_paired_bs"
    assert full["arc"]["label"] == SIGNIFICANT_LOSS and full["arc"]["test"] == "mcnemar_exact"
    assert full["arc"]["discordant"] == {"worse": 15, "better": 0}
    assert full["arc"]["difference"] == pytest.approx(-0.25)
    assert full["arc"]["ci_low"] < -0.25 < full["arc"]["ci_high"] < 0
    assert lora["arc"]["label"] == NO_CHANGE and lora["task"]["label"] == NO_CHANGE
    # The existing keys stay as they were.
    assert rows["full-n100-s0"]["forgetting"]["arc"] == pytest.approx(0.25)
    assert analysis["significance"]["fdr"] == "fdr_bh" and analysis["significance"]["family_size"] == 4
    adjusted = [s["p_adjusted"] for r in rows.values() for s in r["significance"].values()]
    raw = [s["p_value"] for r in rows.values() for s in r["significance"].values()]
    assert all(p_adj >= p for p_adj, p in zip(adjusted, raw))


def test_different_items_cannot_tell(mini_run):
    path = mini_run.sample_file("arc", "full-n100-s0", "final")
    atomic_write_parquet(path, pd.read_parquet(path).iloc[5:])
    analyze_run(mini_run, AnalysisConfig(n_bootstrap=0))
    rows = {r["cell"]: r for r in read_json(mini_run.analysis)["learning_forgetting"]}
    entry = rows["full-n100-s0"]["significance"]["arc"]
    assert entry["label"] == CANNOT_TELL and "different items" in entry["reason"]
    assert entry["p_value"] is None


def test_samples_that_do_not_reproduce_the_score_cannot_tell(mini_run):
    scores = pd.read_parquet(mini_run.scores)
    scores.loc[(scores["cell"] == "full-n100-s0") & (scores["metric"] == "chrf"), "value"] += 5
    atomic_write_parquet(mini_run.scores, scores)
    analyze_run(mini_run, AnalysisConfig(n_bootstrap=0))
    rows = {r["cell"]: r for r in read_json(mini_run.analysis)["learning_forgetting"]}
    entry = rows["full-n100-s0"]["significance"]["task"]
    assert entry["label"] == CANNOT_TELL and "not what was scored" in entry["reason"]


def test_kl_against_base_is_not_tested(tmp_path):
    from curatune.testing.fixture_run import build_fixture_run

    run = build_fixture_run(tmp_path / "fx", methods=("lora",), sizes=(50, 100), seeds=(0,), n_bootstrap=0)
    rows = read_json(run.analysis)["learning_forgetting"]
    assert {r["significance"]["retention"]["label"] for r in rows} == {NOT_TESTED}


def test_retention_probe_is_compared_on_its_token_mean(tmp_path):
    """The KL score is a mean over answer tokens; the samples hold per-prompt means and token
    counts. The comparison must test that token mean (it equals the stored score, or cannot tell),
    not the plain mean of the rows (which weights a 3-token answer like a 90-token one)."""
    from curatune.evaluate.analysis.comparisons import SampleItems

    run = RunDir(tmp_path / "run")
    rng = np.random.default_rng(0)
    n = 40
    tokens = rng.integers(3, 90, n)
    rows = []
    for cell, scale in (("base", 0.0), ("lora-n100-s0", 0.02), ("full-n100-s0", 0.05)):
        kl = np.abs(rng.normal(scale, scale / 2 + 1e-9, n)) * (tokens / tokens.mean() if cell == "full-n100-s0" else 1)
        stage = "base" if cell == "base" else "final"
        atomic_write_parquet(run.sample_file("retention", cell, stage), pd.DataFrame({
            "example_id": [f"r{i}" for i in range(n)], "kl_divergence": kl, "n_answer_tokens": tokens}))
        weighted = float((kl * tokens).sum() / tokens.sum())
        rows.append([cell, "base" if cell == "base" else cell.split("-")[0], 0 if cell == "base" else 100, 0, stage,
                     "retention", "kl_divergence", weighted, n])
        f1 = rng.random(n)  # a task suite, which every run has
        atomic_write_parquet(run.sample_file("task", cell, stage), pd.DataFrame({
            "example_id": [f"t{i}" for i in range(n)], "field_f1": f1}))
        rows.append([cell, rows[-1][1], rows[-1][2], 0, stage, "task", "field_f1", float(f1.mean()), n])
        stats = SampleItems(run).stats("retention", cell, stage, "kl_divergence")
        assert stats.kind == "ratio" and stats.value == pytest.approx(weighted)
        assert stats.value != pytest.approx(float(kl.mean()), rel=1e-3) or cell == "base"
    atomic_write_parquet(run.scores, pd.DataFrame(rows, columns=SCORE_COLUMNS))
    atomic_write_json(run.manifest, {"config": {}})
    result = runner.invoke(app, ["compare", str(run.root), "lora-n100-s0", "full-n100-s0", "--json"])
    assert result.exit_code == 0, repr(result.exception)
    entry = {e["suite"]: e for e in json.loads(result.output)["suites"]}["retention"]
    assert entry["value_a"] == pytest.approx(rows[2][7]) and entry["value_b"] == pytest.approx(rows[4][7])
    assert entry["ci_low"] <= entry["difference"] <= entry["ci_high"] and entry["label"] != CANNOT_TELL


def test_compare_command(mini_run):
    result = runner.invoke(app, ["compare", str(mini_run.root), "lora-n100-s0", "full-n100-s0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by_suite = {e["suite"]: e for e in data["suites"]}
    assert by_suite["task"]["label"] == SIGNIFICANT_GAIN and by_suite["arc"]["label"] == SIGNIFICANT_LOSS
    assert by_suite["arc"]["discordant"] == {"worse": 15, "better": 0}
    table = runner.invoke(app, ["compare", str(mini_run.root), "lora-n100-s0", "full-n100-s0"],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "significant loss" in table.output and "mcnemar_exact" in table.output
    bad = runner.invoke(app, ["compare", str(mini_run.root), "lora-n100-s0", "nope-n1-s0"])
    assert bad.exit_code != 0 and "no scores for cell 'nope-n1-s0'" in str(bad.exception or bad.output)


def _copy_with(run: RunDir, root, cell: str, like: str) -> RunDir:
    """A copy of ``run`` in which ``cell``'s samples and scores are those of ``like``."""
    import shutil

    shutil.copytree(run.root, root)
    other = RunDir(root)
    for suite in ("task", "arc"):
        shutil.copyfile(run.sample_file(suite, like, "final"), other.sample_file(suite, cell, "final"))
    scores = pd.read_parquet(other.scores)
    for metric in ("chrf", "acc"):
        value = scores.loc[(scores["cell"] == like) & (scores["metric"] == metric), "value"].iloc[0]
        scores.loc[(scores["cell"] == cell) & (scores["metric"] == metric), "value"] = value
    atomic_write_parquet(other.scores, scores)
    return other


def test_compare_runs_equals_compare_of_the_same_two_systems(mini_run, tmp_path):
    """Run B's lora cell behaves like run A's full cell, so compare-runs' lora entry must be
    exactly `compare A lora full` (same items, same statistics, same resampling), and its full
    entry identical systems (p = 1)."""
    other = _copy_with(mini_run, tmp_path / "other", "lora-n100-s0", like="full-n100-s0")
    plan = {"cells": [{"method": m, "size": 100, "seed": 0} for m in ("full", "lora")],
            "paired_draw": {"raw_pool_size": 500, "not_in_raw": 0, "differing_records": {"0": {"100": 17}}}}
    atomic_write_json(other.plan, plan)
    within = json.loads(runner.invoke(app, ["compare", str(mini_run.root), "lora-n100-s0", "full-n100-s0",
                                            "--json"]).output)
    result = runner.invoke(app, ["compare-runs", str(mini_run.root), str(other.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    entries = {(e["method"], e["suite"]): e for e in data["entries"]}
    assert len(entries) == 4 and all(e["size"] == 100 and e["seeds"] == [0] for e in entries.values())
    for entry in within["suites"]:
        across = entries[("lora", entry["suite"])]
        for key in ("test", "value_a", "value_b", "difference", "ci_low", "ci_high", "p_value"):
            assert across[key] == pytest.approx(entry[key]), key
        assert across["per_seed"] == {"0": pytest.approx(entry["difference"])}
    assert entries[("lora", "task")]["label"] == SIGNIFICANT_GAIN
    assert entries[("lora", "arc")]["label"] == SIGNIFICANT_LOSS
    assert entries[("full", "task")]["difference"] == 0 and entries[("full", "task")]["label"] == NO_CHANGE
    assert data["paired_draw"]["b"] == plan["paired_draw"] and data["paired_draw"]["a"] is None
    assert not data["notes"]
    table = runner.invoke(app, ["compare-runs", str(mini_run.root), str(other.root)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "significant loss" in table.output and "17" in table.output


def test_compare_runs_names_a_base_mismatch_and_refuses_disjoint_runs(mini_run, tmp_path):
    import shutil

    shutil.copytree(mini_run.root, tmp_path / "other")
    other = RunDir(tmp_path / "other")
    scores = pd.read_parquet(other.scores)
    scores.loc[(scores["cell"] == "base") & (scores["metric"] == "acc"), "value"] += 0.1
    atomic_write_parquet(other.scores, scores)
    data = json.loads(runner.invoke(app, ["compare-runs", str(mini_run.root), str(other.root), "--json"]).output)
    assert any("arc: the base model scores" in note for note in data["notes"])
    scores = scores[scores["stage"] == "base"]
    atomic_write_parquet(other.scores, scores)
    bad = runner.invoke(app, ["compare-runs", str(mini_run.root), str(other.root)])
    assert bad.exit_code != 0 and "nothing to compare" in str(bad.exception or bad.output)


def test_methods_at_one_seed_equal_compare_of_the_two_cells(mini_run):
    """analysis.json's method_comparison at one seed is `compare full lora` exactly (full is the
    reference method), p adjusted over the same two suites."""
    analyze_run(mini_run, AnalysisConfig(n_bootstrap=0))
    methods = read_json(mini_run.analysis)["method_comparison"]
    assert methods["reference"] == "full"
    entries = {e["suite"]: e for e in methods["entries"]}
    assert set(entries) == {"task", "arc"}
    within = json.loads(runner.invoke(app, ["compare", str(mini_run.root), "full-n100-s0", "lora-n100-s0",
                                            "--json"]).output)
    for entry in within["suites"]:
        pooled = entries[entry["suite"]]
        assert (pooled["method_a"], pooled["method_b"], pooled["size"], pooled["seeds"]) == ("full", "lora", 100, [0])
        for key in ("test", "value_a", "value_b", "difference", "ci_low", "ci_high", "p_value", "p_adjusted", "label"):
            assert pooled[key] == pytest.approx(entry[key]) if isinstance(entry[key], float) else pooled[key] == entry[key]
        assert pooled["per_seed"] == {"0": pytest.approx(entry["difference"])}
    assert entries["arc"]["label"] == SIGNIFICANT_GAIN  # lora keeps the 15 items full loses
    report = runner.invoke(app, ["report", str(mini_run.root)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert "Methods against full at each size" in report.output
    row = next(line for line in report.output.splitlines() if line.startswith("│ lora") and "▲" in line)
    assert [c.strip() for c in row.split("│")[1:4]] == ["lora", "100", "1"] and "+0.25 [" in row


def test_methods_pool_their_seeds(mini_run):
    """With a second seed, each method's cells are one system: corpus chrF++ of both seeds'
    outputs together (sacrebleu on the concatenation), accuracy over every (seed, item); items
    are resampled with both seeds' answers (a per-item share of seeds is no longer 0/1, so a
    paired bootstrap, not McNemar)."""
    scores = pd.read_parquet(mini_run.scores)
    added = []
    for method in ("full", "lora"):
        s0, s1 = f"{method}-n100-s0", f"{method}-n100-s1"
        task = pd.read_parquet(mini_run.sample_file("task", s0, "final"))
        arc = pd.read_parquet(mini_run.sample_file("arc", s0, "final"))
        if method == "full":  # seed 1 loses 20 benchmark items instead of 15, and writes worse text
            arc["acc"] = np.r_[np.zeros(20), np.ones(20), np.zeros(20)]
            task["output"] = [" ".join(reversed(o.split())) for o in task["output"]]
        chrf = corpus_chrf(list(task["output"]), list(task["reference"]))
        task["chrf"] = chrf.per_item["chrf"]
        atomic_write_parquet(mini_run.sample_file("task", s1, "final"), task)
        atomic_write_parquet(mini_run.sample_file("arc", s1, "final"), arc)
        added += [[s1, method, 100, 1, "final", "task", "chrf", chrf.corpus["chrf"], 60],
                  [s1, method, 100, 1, "final", "arc", "acc", float(arc["acc"].mean()), 60]]
    atomic_write_parquet(mini_run.scores, pd.concat([scores, pd.DataFrame(added, columns=SCORE_COLUMNS)]))
    analyze_run(mini_run, AnalysisConfig(n_bootstrap=0))
    entries = {e["suite"]: e for e in read_json(mini_run.analysis)["method_comparison"]["entries"]}
    arc = entries["arc"]
    assert arc["seeds"] == [0, 1] and arc["n_items"] == 60 and arc["test"] == "paired_bootstrap"
    assert arc["value_a"] == pytest.approx(45 / 120) and arc["value_b"] == pytest.approx(80 / 120)
    assert arc["difference"] == pytest.approx(35 / 120) and arc["label"] == SIGNIFICANT_GAIN
    assert arc["per_seed"] == {"0": pytest.approx(15 / 60), "1": pytest.approx(20 / 60)}
    task = entries["task"]
    outputs = {m: [o for seed in (0, 1) for o in pd.read_parquet(
        mini_run.sample_file("task", f"{m}-n100-s{seed}", "final"))["output"]] for m in ("full", "lora")}
    refs = list(pd.read_parquet(mini_run.sample_file("task", "full-n100-s0", "final"))["reference"]) * 2
    assert task["value_a"] == pytest.approx(corpus_chrf(outputs["full"], refs).corpus["chrf"])
    assert task["value_b"] == pytest.approx(corpus_chrf(outputs["lora"], refs).corpus["chrf"])
    assert task["test"] == "sacrebleu_paired_bs" and task["n_items"] == 60


def test_one_method_has_no_method_comparison(tmp_path):
    from curatune.testing.fixture_run import build_fixture_run

    run = build_fixture_run(tmp_path / "fx", methods=("lora",), sizes=(50,), seeds=(0,), n_bootstrap=0)
    assert read_json(run.analysis)["method_comparison"] == {"reference": None, "stage": "final", "entries": []}


# ----------------------------------------------------------------------------- power


def _mcnemar_power_by_simulation(n: int, psi: float, delta: float, alpha: float = 0.05, reps: int = 20000) -> float:
    rng = np.random.default_rng(0)
    discordant = rng.binomial(n, psi, reps)
    better = rng.binomial(discordant, (psi + delta) / (2 * psi))
    worse = discordant - better
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(better, worse), discordant, 0.5))
    p[discordant == 0] = 1.0
    return float(np.mean(p < alpha))


@pytest.mark.parametrize("n,psi", [(300, 0.15), (1000, 0.1), (200, 0.3)])
def test_mcnemar_mde_has_the_stated_power(n, psi):
    mde = mcnemar_mde(n, psi)
    assert mde is not None and 0 < mde < psi
    # The exact test is discrete and slightly conservative: simulated power close to 0.8.
    assert _mcnemar_power_by_simulation(n, psi, mde) == pytest.approx(0.8, abs=0.05)
    needed = mcnemar_items_needed(mde, psi)
    assert abs(needed - n) <= 1  # the two formulas invert each other


def test_mcnemar_mde_hand_example():
    # 300 ARC items, 15% discordant: sqrt(300) d = 1.96 sqrt(.15) + 0.8416 sqrt(.15 - d^2) at d = 0.0624,
    # so a change under about 6 accuracy points cannot be told from noise.
    z_a, z_b = 1.959963984540054, 0.8416212335729143
    d = mcnemar_mde(300, 0.15)
    assert d == pytest.approx(0.0624, abs=0.0005)
    assert math.sqrt(300) * d == pytest.approx(z_a * math.sqrt(0.15) + z_b * math.sqrt(0.15 - d * d))
    # (1.96 sqrt(.15) + 0.8416 sqrt(.15 - .0004))^2 / .0004 = 2940.97
    assert mcnemar_items_needed(0.02, 0.15) == 2941
    assert mcnemar_mde(10, 0.05) is None  # even all discordant items one way are too few


def test_mean_power_agrees_with_statsmodels():
    sd, n = 0.2, 400
    mde = mean_mde(n, sd)
    effect = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert mde == pytest.approx(effect * sd, rel=0.01)  # z vs t at 400 items
    assert mean_items_needed(mde, sd) == pytest.approx(n, abs=1)


def test_plan_command(tmp_path):
    items = tmp_path / "arc.jsonl"
    items.write_text("".join(json.dumps({"query": f"Question {i}?", "choices": ["a", "b", "c", "d"], "gold": i % 4}) + "\n"
                             for i in range(300)))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"name: p\nrun_dir: {tmp_path / 'run'}\ntrain: {{sizes: [100, 200], seeds: [0, 1], methods: [lora, full]}}\n"
        f"evaluate:\n  suites:\n    - {{name: arc, kind: multiple_choice, path: {items}}}\n"
        "    - {name: retention, kind: retention}\n")
    result = runner.invoke(app, ["plan", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    arc = next(r for r in data["suites"] if r["suite"] == "arc")
    assert arc["n_items"] == 300 and arc["test"] == "mcnemar" and arc["spread_source"] == "default"
    assert arc["mde"] == pytest.approx(mcnemar_mde(300, 0.15))
    assert arc["items_for_drop"] == mcnemar_items_needed(0.02, 0.15)
    assert data["sweep"]["cells"] == 8
    assert data["sweep"]["evaluation_units"] == 2 * (1 + 8 * 2)  # base once, early and final per cell
    table = runner.invoke(app, ["plan", str(config), "--drop", "0.05"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "8 cells" in table.output and "0.0624" in table.output



def test_plan_counts_a_heldout_retention_suite_on_the_heldout_split(tmp_path):
    """prompts: heldout draws from the held-out split, not from the 58 packaged probe prompts."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"name: p\nrun_dir: {tmp_path / 'run'}\ndata: {{heldout_size: 200}}\n"
        "evaluate:\n  suites:\n    - {name: task_kl, kind: retention, prompts: heldout, limit: 100}\n"
        "    - {name: small, kind: retention, prompts: heldout, limit: 500}\n"
        "    - {name: general, kind: retention}\n")
    result = runner.invoke(app, ["plan", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["suite"]: r for r in json.loads(result.output)["suites"]}
    assert rows["task_kl"]["n_items"] == 100 and rows["small"]["n_items"] == 200
    assert rows["general"]["n_items"] == 58


# ----------------------------------------------------------------------------- probes vs benchmark drops


def test_probe_correlations_against_scipy():
    from curatune.evaluate.analysis.inputs import SuiteRoles
    from curatune.evaluate.analysis.probes import probe_correlations

    rng = np.random.default_rng(0)
    kl = rng.gamma(2, 0.05, 10)
    drop = 0.3 * kl + rng.normal(0, 0.01, 10)
    rows = [{"stage": "final", "forgetting": {"retention": float(k), "task_kl": float(2 * k + 0.01 * i), "arc": float(d)},
             "general_drop": float(100 * d)} for i, (k, d) in enumerate(zip(kl, drop))]
    rows.append({"stage": "early", "forgetting": {"retention": 9.0, "arc": -9.0}, "general_drop": -900.0})
    roles = SuiteRoles(task=["task"], general=["arc", "retention", "task_kl"],
                       primary={"task": "chrf", "arc": "acc", "retention": "kl_divergence", "task_kl": "kl_divergence"},
                       metrics={})
    out = {(e["probe"], e["target"]): e for e in probe_correlations(rows, roles)}
    assert set(out) == {("retention", "arc"), ("retention", "general_drop"), ("task_kl", "arc"), ("task_kl", "general_drop")}
    expected = stats.spearmanr(kl, drop)
    assert out[("retention", "arc")]["spearman"] == pytest.approx(expected.statistic)
    assert out[("retention", "arc")]["p_value"] == pytest.approx(expected.pvalue)
    assert out[("retention", "arc")]["n_cells"] == 10  # the early row is not a final cell
    few = probe_correlations(rows[:2], roles)
    assert all(e["spearman"] is None and "fewer than 3" in e["reason"] for e in few)


def test_identical_corpus_scores_are_p_one_not_sacrebleus_floor():
    a, _, refs = _systems(30, 0, 0.6, 0.6)
    result = sacrebleu_paired_bootstrap("chrf", a, list(a), refs)
    assert result.difference == 0 and result.p_value == 1.0
    assert result.detail["sacrebleu_p_value"] == pytest.approx(1 / 1001)  # what sacrebleu itself prints


def test_a_continuous_metric_with_only_zeros_is_not_mcnemar(tmp_path):
    from curatune.evaluate.analysis.comparisons import SampleItems

    run = RunDir(tmp_path)
    frame = pd.DataFrame({"example_id": ["a", "b", "c"], "field_f1": [0.0, 0.0, 1.0], "acc": [0.0, 1.0, 1.0]})
    atomic_write_parquet(run.sample_file("s", "base", "base"), frame)
    items = SampleItems(run)
    assert items.stats("s", "base", "base", "field_f1").kind == "mean"
    assert items.stats("s", "base", "base", "acc").kind == "binary"


def _doubtful_grid_run(root, n: int = 60, full_losses=((1.00, 1.02), (1.03, 1.00))) -> RunDir:
    """A grid run whose full fine-tuning choice at 100 pairs is within seed noise: full 1e-4 is
    selected by the mean validation loss, but seed 1 prefers 2e-4. Full 1e-4 learns the task, full
    2e-4 does not (it writes the base model's outputs), LoRA (one rate) changes one output. Like
    evaluate.lr_grid_cells: selected, the runner-up has the task suite only."""
    run = RunDir(root)
    refs, noisy = _texts(n)
    base_out = noisy(0.4)
    acc_base = np.array([1.0] * 40 + [0.0] * 20)
    cells = {"base": ("base", 0, 0, None, base_out, acc_base)}
    losses = {1e-4: full_losses[0], 2e-4: full_losses[1]}
    plan = []
    for seed in (0, 1):
        for lr in (1e-4, 2e-4):
            key = cell_key("full", 100, seed, lr)
            cells[key] = ("full", 100, seed, lr, noisy(0.9) if lr == 1e-4 else base_out,
                          acc_base if lr == 1e-4 else None)
            atomic_write_json(CellSpec("full", 100, seed, lr).path(run) / "done.json",
                              {"key": key, "validation_loss": losses[lr][seed]})
            plan.append({"method": "full", "size": 100, "seed": seed, "lr": lr, "key": key})
        key = cell_key("lora", 100, seed, 1e-3)
        cells[key] = ("lora", 100, seed, 1e-3, base_out[:-1] + [refs[-1]], acc_base)
        atomic_write_json(CellSpec("lora", 100, seed, 1e-3).path(run) / "done.json", {"key": key, "validation_loss": 0.9})
        plan.append({"method": "lora", "size": 100, "seed": seed, "lr": 1e-3, "key": key})
    rows = []
    for cell, (method, size, seed, _, outputs, acc) in cells.items():
        rows += _write_cell(run, cell, method, size, seed, "base" if cell == "base" else "final", refs, outputs, acc)
    atomic_write_parquet(run.scores, pd.DataFrame(rows, columns=SCORE_COLUMNS))
    atomic_write_json(run.plan, {"cells": plan})
    atomic_write_json(run.manifest, {"config": {}})
    return run


def test_a_doubtful_rate_choice_is_checked_at_the_runner_up(tmp_path):
    """Full 1e-4 vs 2e-4 'seeds disagree': LoRA against full is also compared with full at 2e-4,
    pooled over both seeds as the main comparison is, and the report says the verdict changes."""
    run = _doubtful_grid_run(tmp_path / "run")
    analyze_run(run, AnalysisConfig(n_bootstrap=0))
    analysis = read_json(run.analysis)
    choice = next(c for c in analysis["lr_selection"]["selected"] if c["method"] == "full")
    assert (choice["lr"], choice["runner_up"], choice["agreement"]) == (1e-4, 2e-4, "seeds disagree")
    methods = analysis["method_comparison"]
    main = {e["suite"]: e for e in methods["entries"]}
    assert main["task"]["lr_a"] == 1e-4 and main["task"]["label"] == SIGNIFICANT_LOSS  # full 1e-4 learned, LoRA not
    (check,) = methods["runner_up_checks"]  # the task suite only: the runner-up has no arc scores
    assert (check["suite"], check["swapped"], check["lr_a"], check["lr_b"], check["selected_lr"]) == (
        "task", "full", 2e-4, 1e-3, 1e-4)
    outputs = {lr: [o for seed in (0, 1) for o in pd.read_parquet(
        run.sample_file("task", cell_key("full", 100, seed, lr), "final"))["output"]] for lr in (1e-4, 2e-4)}
    refs = list(pd.read_parquet(run.sample_file("task", "base", "base"))["reference"]) * 2
    assert check["value_a"] == pytest.approx(corpus_chrf(outputs[2e-4], refs).corpus["chrf"])
    assert check["seeds"] == [0, 1] and check["label"] == NO_CHANGE
    assert check["label_at_selected"] == SIGNIFICANT_LOSS and check["verdict_changes"] is True
    report = runner.invoke(app, ["report", str(run.root)], env={"COLUMNS": "250"})
    assert report.exit_code == 0, report.output
    assert "Doubtful learning-rate choices" in report.output
    row = next(line for line in report.output.splitlines() if "2e-4 for 1e-4 (seeds disagree)" in line)
    assert "yes" in row and "significant loss" in row


def test_a_clear_rate_choice_is_not_rechecked(tmp_path):
    run = _doubtful_grid_run(tmp_path / "run", full_losses=((1.00, 1.00), (1.03, 1.02)))  # 1e-4 on every seed
    analyze_run(run, AnalysisConfig(n_bootstrap=0))
    analysis = read_json(run.analysis)
    assert next(c for c in analysis["lr_selection"]["selected"] if c["method"] == "full")["agreement"] == "every seed"
    assert analysis["method_comparison"]["runner_up_checks"] == []
