"""Analysis of eval scores: learning vs forgetting, Pareto frontier, saturation fits,
early-vs-final agreement. Every input is a synthetic scores frame built here from known
curves, so the right answers are known in closed form."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from curatune.errors import ConfigError, DataError
from curatune.evaluate.analysis import (
    CURVE_COLUMNS,
    MetricTable,
    analyze_run,
    fit_curve,
    load_scores,
    pareto_frontier,
    rank_agreement,
    spearman,
)
from curatune.evaluate.analysis.config import AnalysisConfig
from curatune.rundir import RunDir, atomic_write_parquet


# ----------------------------------------------------------------------------- helpers


class Scores:
    """Builds a long-form scores frame row by row, the shape evaluate writes."""

    def __init__(self):
        self.rows: list[dict] = []

    def base(self, suite: str, metric: str, value: float) -> "Scores":
        self.rows.append(dict(cell="base", method="base", size=0, seed=0, stage="base",
                              suite=suite, metric=metric, value=float(value), n_items=100))
        return self

    def cell(self, method: str, size: int, seed: int, suite: str, metric: str, value: float,
             stage: str = "final") -> "Scores":
        self.rows.append(dict(cell=f"{method}-n{size}-s{seed}", method=method, size=size, seed=seed, stage=stage,
                              suite=suite, metric=metric, value=float(value), n_items=100))
        return self

    def curve(self, method: str, sizes, seeds, suite: str, metric: str, fn, noise: float = 0.0, rng_seed: int = 0,
              stage: str = "final") -> "Scores":
        rng = np.random.default_rng(rng_seed)
        for size in sizes:
            for seed in seeds:
                self.cell(method, size, seed, suite, metric, fn(size) + rng.normal(0, noise), stage=stage)
        return self

    def write(self, root) -> RunDir:
        run = RunDir(root)
        atomic_write_parquet(run.scores, pd.DataFrame(self.rows))
        return run


def analyse(scores: Scores, tmp_path, **config) -> dict:
    return analyze_run(scores.write(tmp_path), AnalysisConfig(**config))


def saturation_row(analysis: dict, method: str, suite: str, metric: str) -> dict:
    (row,) = [s for s in analysis["saturation"] if (s["method"], s["suite"], s["metric"]) == (method, suite, metric)]
    return row


def brute_force_saturation(fn, smallest: float, largest: float, epsilon: float) -> float:
    """The definition, evaluated on a very fine grid: the smallest n from which
    |f(2m) - f(m)| < epsilon for every m >= n."""
    grid = np.geomspace(smallest, largest, 200_000)
    unsaturated = np.abs(fn(2 * grid) - fn(grid)) >= epsilon
    return float(grid[np.flatnonzero(unsaturated)[-1] + 1]) if unsaturated.any() else smallest


SIZES = [25, 50, 100, 200, 400, 800, 1600, 3200]


# ----------------------------------------------------------------------------- saturation


def test_saturation_point_recovered_from_noisy_power_law(tmp_path):
    a, b, c = 60.0, 200.0, 0.7  # chrF: epsilon 0.01 x 100 = 1 point per doubling

    def truth(n):
        return a - b * np.power(n, -c)

    expected = (b * (1 - 2**-c) / 1.0) ** (1 / c)  # closed form, ~494
    scores = Scores().base("task", "chrf", truth(25) + 3)
    scores.curve("lora", SIZES, [0, 1, 2], "task", "chrf", truth, noise=0.3)
    analysis = analyse(scores, tmp_path, n_bootstrap=100)
    row = saturation_row(analysis, "lora", "task", "chrf")
    assert row["status"] == "ok"
    assert row["model"] == "power_law"
    assert row["r2"] > 0.99
    assert row["params"]["c"] == pytest.approx(c, rel=0.15)
    assert row["saturation_point"] == pytest.approx(expected, rel=0.2)
    assert row["saturation_point_lo"] <= expected <= row["saturation_point_hi"]
    assert row["saturation_extrapolated"] is False
    assert row["worse_than_base_sizes"] == [25]  # base = f(25) + 3 < f(50)
    assert row["bootstrap"] == "seeds"  # no samples files here


def test_saturation_point_recovered_from_exponential(tmp_path):
    a, b, c = 0.8, 0.5, 300.0  # accuracy: epsilon 0.01 x 1

    def truth(n):
        return a - b * np.exp(-n / c)

    scores = Scores().base("task", "exact_match", 0.2)
    scores.curve("full", SIZES, [0, 1, 2], "task", "exact_match", truth, noise=0.002)
    row = saturation_row(analyse(scores, tmp_path, n_bootstrap=0), "full", "task", "exact_match")
    # Weibull with shape d = 1 is the exponential; on this noise it may win AICc by a hair.
    assert row["model"] == "exponential" or (row["model"] == "weibull" and abs(row["params"]["d"] - 1) < 0.05)
    expected = brute_force_saturation(truth, 25, 3200 * 8, 0.01)
    assert row["saturation_point"] == pytest.approx(expected, rel=0.15)
    assert row["bootstrap"] == "none"


def test_flat_curve_is_saturated_at_the_smallest_size_and_not_reached_when_still_climbing(tmp_path):
    scores = Scores().base("task", "chrf", 30)
    scores.curve("lora", SIZES, [0, 1], "task", "chrf", lambda n: 50.0, noise=0.01)
    scores.curve("full", SIZES, [0, 1], "task", "chrf", lambda n: 10 * np.log2(n), noise=0.01)  # never saturates
    analysis = analyse(scores, tmp_path, n_bootstrap=0)
    assert saturation_row(analysis, "lora", "task", "chrf")["saturation_point"] == 25
    climbing = saturation_row(analysis, "full", "task", "chrf")
    assert climbing["saturation_point"] is None
    assert climbing["saturation_verdict"] == "not reached"


def test_worse_than_base_sizes_with_bootstrap_confidence(tmp_path):
    # Below the base model up to 100 examples (as Vieira et al. 2024 saw at 1-2k).
    scores = Scores().base("task", "chrf", 40.0)
    scores.curve("full", SIZES, [0, 1, 2], "task", "chrf", lambda n: 70 - 600 * n**-0.6, noise=0.2)
    row = saturation_row(analyse(scores, tmp_path, n_bootstrap=200), "full", "task", "chrf")
    expected = [n for n in SIZES if 70 - 600 * n**-0.6 < 40]
    assert expected == [25, 50, 100]
    assert row["worse_than_base_sizes"] == expected
    assert row["worse_than_base_confident"] == expected


def test_lower_is_better_metric_direction(tmp_path):
    # TER falls as the model learns: a gain. Perplexity on a general suite rises: forgetting.
    scores = Scores().base("task", "ter", 80.0).base("wiki", "word_perplexity", 20.0)
    ter = lambda n: 40 + 900 * n**-0.8  # noqa: E731  above base (worse) at 25 only
    scores.curve("lora", SIZES, [0], "task", "ter", ter)
    scores.curve("lora", SIZES, [0], "wiki", "word_perplexity", lambda n: 20 + np.log2(n / 12.5))
    analysis = analyse(scores, tmp_path, n_bootstrap=0)
    assert analysis["suites"]["directions"] == {"ter": "lower", "word_perplexity": "lower"}
    rows = {r["size"]: r for r in analysis["learning_forgetting"] if r["stage"] == "final"}
    assert rows[400]["learning"]["task"]["ter"] == pytest.approx(80 - ter(400))
    assert rows[400]["learning"]["task"]["ter"] > 0
    assert rows[25]["learning"]["task"]["ter"] < 0
    assert rows[25]["task_gain"] == pytest.approx(80 - ter(25))  # TER is on a 0-100 scale: points = units
    drop = np.log2(400 / 12.5)
    assert rows[400]["forgetting"]["wiki"] == pytest.approx(drop)
    assert rows[400]["forgetting_relative"]["wiki"] == pytest.approx(drop / 20)
    assert rows[400]["general_drop"] == pytest.approx(100 * drop / 20)  # percent of base for perplexity
    row = saturation_row(analysis, "lora", "task", "ter")
    assert row["direction"] == "lower"
    assert row["worse_than_base_sizes"] == [25]
    assert row["params"]["b"] < 0  # a decreasing curve


def test_insufficient_sizes_is_reported_not_fitted(tmp_path):
    scores = Scores().base("task", "chrf", 50)
    scores.curve("lora", [100, 200], [0, 1], "task", "chrf", lambda n: 40 + n / 20)
    run = scores.write(tmp_path)
    analysis = analyze_run(run, AnalysisConfig(n_bootstrap=20))
    row = saturation_row(analysis, "lora", "task", "chrf")
    assert row["status"] == "insufficient sizes"
    assert row["model"] is None and row["params"] is None and row["saturation_point"] is None
    assert row["worse_than_base_sizes"] == [100]  # still measured without a fit
    assert pd.read_parquet(run.saturation_curves).empty


def test_three_sizes_fit_is_flagged_as_interpolation(tmp_path):
    scores = Scores().base("task", "chrf", 20)
    scores.curve("lora", [100, 200, 400], [0], "task", "chrf", lambda n: 60 - 300 * n**-0.5)
    row = saturation_row(analyse(scores, tmp_path, n_bootstrap=0), "lora", "task", "chrf")
    assert row["status"] == "interpolated"
    assert row["model"] is not None


def test_fit_curve_prefers_the_generating_model():
    sizes = np.array(SIZES, dtype=float)
    power = fit_curve(sizes, 50 - 80 * sizes**-0.5)
    exponential = fit_curve(sizes, 50 - 30 * np.exp(-sizes / 400))
    assert power.model.name == "power_law" and power.r2 > 0.9999
    assert exponential.model.name == "exponential" and exponential.r2 > 0.9999
    assert power.predict(np.array([1000.0]))[0] == pytest.approx(50 - 80 * 1000**-0.5, rel=1e-3)


def test_saturation_curves_parquet(tmp_path):
    scores = Scores().base("task", "chrf", 30)
    scores.curve("lora", SIZES, [0, 1, 2], "task", "chrf", lambda n: 60 - 200 * n**-0.7, noise=0.5)
    run = scores.write(tmp_path)
    analyze_run(run, AnalysisConfig(n_bootstrap=100, curve_points=30))
    curves = pd.read_parquet(run.saturation_curves)
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(SIZES) <= set(curves["size"])  # observed sizes are on the grid
    assert curves["observed"].sum() == len(SIZES)
    assert len(curves) == len(set(np.geomspace(25, 3200, 30)) | set(SIZES))
    assert curves["size"].is_monotonic_increasing
    assert (curves["lo"] <= curves["hi"]).all()
    inside = (curves["lo"] - 1e-6 <= curves["fit"]) & (curves["fit"] <= curves["hi"] + 1e-6)
    assert inside.mean() > 0.9


def test_analysis_is_deterministic_given_the_seed(tmp_path):
    scores = Scores().base("task", "chrf", 30)
    scores.curve("lora", SIZES, [0, 1, 2], "task", "chrf", lambda n: 60 - 200 * n**-0.7, noise=1.0)
    run = scores.write(tmp_path)
    first = analyze_run(run, AnalysisConfig(n_bootstrap=50, seed=3))
    first_curves = pd.read_parquet(run.saturation_curves)
    second = analyze_run(run, AnalysisConfig(n_bootstrap=50, seed=3))
    pd.testing.assert_frame_equal(first_curves, pd.read_parquet(run.saturation_curves))
    assert {k: v for k, v in first.items() if k != "generated"} == {k: v for k, v in second.items() if k != "generated"}
    analyze_run(run, AnalysisConfig(n_bootstrap=50, seed=4))
    assert not np.allclose(first_curves["lo"], pd.read_parquet(run.saturation_curves)["lo"])


def test_item_bootstrap_uses_samples_files(tmp_path):
    rng = np.random.default_rng(0)
    scores = Scores()
    run = RunDir(tmp_path)
    ids = [f"ex{i}" for i in range(30)]

    def samples(cell: str, stage: str, mean: float):
        values = np.clip(mean + rng.normal(0, 0.2, len(ids)), 0, 1)
        atomic_write_parquet(run.samples / "task" / f"{cell}__{stage}.parquet", pd.DataFrame(
            {"example_id": ids, "prompt": "p", "reference": "r", "output": "o", "exact_match": values}))
        return float(values.mean())

    scores.base("task", "exact_match", samples("base", "base", 0.3))
    for size in (50, 100, 200, 400):  # one seed: without items there would be no band at all
        cell = f"lora-n{size}-s0"
        scores.cell("lora", size, 0, "task", "exact_match", samples(cell, "final", 0.7 - 10 / size))
    scores.write(tmp_path)
    analysis = analyze_run(run, AnalysisConfig(n_bootstrap=50))
    row = saturation_row(analysis, "lora", "task", "exact_match")
    assert row["bootstrap"] == "items"
    assert analysis["inputs"]["sample_files_read"] == 5
    curves = pd.read_parquet(run.saturation_curves)
    assert (curves["hi"] - curves["lo"] > 0).all()


def test_no_bootstrap_band_with_one_seed_and_no_samples(tmp_path):
    scores = Scores().base("task", "chrf", 30)
    scores.curve("lora", SIZES, [0], "task", "chrf", lambda n: 60 - 200 * n**-0.7)
    run = scores.write(tmp_path)
    row = saturation_row(analyze_run(run, AnalysisConfig(n_bootstrap=50)), "lora", "task", "chrf")
    assert row["bootstrap"] == "none"
    assert row["saturation_point_lo"] is None
    assert pd.read_parquet(run.saturation_curves)["lo"].isna().all()


# ----------------------------------------------------------------------------- learning vs forgetting


def test_learning_forgetting_rows_and_points(tmp_path):
    scores = (
        Scores()
        .base("task", "chrf", 40).base("task", "bleu", 10)
        .base("arc", "acc", 0.60).base("arc", "acc_norm", 0.55)
        .base("retention", "kl_divergence", 0.0)
        .cell("lora", 100, 0, "task", "chrf", 50).cell("lora", 100, 0, "task", "bleu", 15)
        .cell("lora", 100, 0, "arc", "acc", 0.58).cell("lora", 100, 0, "arc", "acc_norm", 0.52)
        .cell("lora", 100, 0, "retention", "kl_divergence", 0.2)
        .cell("lora", 100, 0, "task", "chrf", 45, stage="early")
    )
    analysis = analyse(scores, tmp_path, n_bootstrap=0)
    assert analysis["suites"]["primary_metrics"] == {"arc": "acc_norm", "retention": "kl_divergence", "task": "chrf"}
    assert analysis["suites"]["general"] == ["arc", "retention"]
    rows = {r["stage"]: r for r in analysis["learning_forgetting"]}
    final = rows["final"]
    assert final["learning"]["task"] == {"bleu": 5.0, "chrf": 10.0}
    assert final["learning_relative"]["task"]["chrf"] == pytest.approx(0.25)
    assert final["forgetting"]["arc"] == pytest.approx(0.03)  # base - finetuned, acc_norm
    assert final["forgetting_relative"]["arc"] == pytest.approx(0.03 / 0.55)
    assert final["forgetting"]["retention"] == pytest.approx(0.2)
    assert final["forgetting_relative"]["retention"] is None  # base KL is 0
    assert final["task_gain"] == pytest.approx(10.0)  # chrF points
    assert final["general_drop"] == pytest.approx(3.0)  # accuracy points; KL has no points scale
    assert rows["early"]["learning"]["task"] == {"chrf": 5.0}
    assert rows["early"]["forgetting"] == {}


def test_pareto_frontier_hand_example():
    points = [
        (0.0, 0.0),  # base: on (nothing forgets less)
        (5.0, 1.0),  # on: best gain
        (3.0, 0.5),  # on
        (4.0, 2.0),  # off: dominated by (5, 1)
        (3.0, 0.5),  # on: ties are both kept
        (-1.0, 0.0),  # off: dominated by base
        (None, 0.1),  # off: missing
        (2.0, float("nan")),  # off: missing
    ]
    assert pareto_frontier(points) == [True, True, True, False, True, False, False, False]


def test_pareto_table_averages_seeds_and_includes_base(tmp_path):
    scores = Scores().base("task", "chrf", 40).base("arc", "acc", 0.6)
    for seed, (chrf, acc) in enumerate([(50, 0.58), (52, 0.56)]):
        scores.cell("full", 100, seed, "task", "chrf", chrf).cell("full", 100, seed, "arc", "acc", acc)
    scores.cell("lora", 100, 0, "task", "chrf", 45).cell("lora", 100, 0, "arc", "acc", 0.60)
    scores.cell("lora", 50, 0, "task", "chrf", 39).cell("lora", 50, 0, "arc", "acc", 0.61)
    pareto = {(p["method"], p["size"]): p for p in analyse(scores, tmp_path, n_bootstrap=0)["pareto"]}
    assert pareto["full", 100]["task_gain"] == pytest.approx(11.0)
    assert pareto["full", 100]["general_drop"] == pytest.approx(3.0)
    assert pareto["full", 100]["n_seeds"] == 2
    assert pareto["full", 100]["forgetting"]["arc"] == pytest.approx(0.03)
    assert {k for k, p in pareto.items() if p["on_frontier"]} == {("full", 100), ("lora", 100), ("lora", 50)}
    assert pareto["base", 0]["on_frontier"] is False  # lora-100 gains at zero drop


def test_pareto_with_only_the_retention_probe_trades_gain_against_kl(tmp_path):
    # KL is 0 for the base model, so it has no points scale; the frontier uses the raw KL.
    scores = Scores().base("task", "chrf", 40).base("retention", "kl_divergence", 0.0)
    for method, size, chrf, kl in [("lora", 64, 60, 0.01), ("full", 64, 70, 0.02), ("full", 16, 55, 0.03)]:
        scores.cell(method, size, 0, "task", "chrf", chrf).cell(method, size, 0, "retention", "kl_divergence", kl)
    pareto = {(p["method"], p["size"]): p for p in analyse(scores, tmp_path, n_bootstrap=0)["pareto"]}
    assert all(p["general_drop"] is None for k, p in pareto.items() if k[0] != "base")
    assert {k for k, p in pareto.items() if p["on_frontier"]} == {("base", 0), ("lora", 64), ("full", 64)}
    assert {p["frontier_axis"] for p in pareto.values()} == {"retention"}


# ----------------------------------------------------------------------------- early vs final


def test_rank_agreement_hand_example():
    early = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    final = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 3.0}
    out = rank_agreement(early, final, k=2)
    assert out["spearman"] == pytest.approx(0.8)  # 1 - 6*2 / (4*15)
    assert out["top_k_early"] == ["d", "c"] and out["top_k_final"] == ["c", "d"]
    assert out["top_k_overlap"] == 1.0
    assert rank_agreement(early, final, k=1)["top_k_overlap"] == 0.0
    lower = rank_agreement(early, final, k=1, direction=-1)  # lower is better: "a" is best on both
    assert lower["top_k_early"] == ["a"] and lower["top_k_overlap"] == 1.0
    assert lower["spearman"] == pytest.approx(0.8)


def test_spearman_agrees_with_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    for n in (3, 5, 12, 40):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        y[: n // 3] = y[0]  # ties
        expected = spearmanr(x, y)
        assert spearman(x, y) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-9, abs=1e-12)


def test_rank_agreement_needs_three_cells_and_variation():
    two = rank_agreement({"a": 1.0, "b": 2.0, "x": 5.0}, {"a": 1.0, "b": 3.0}, k=3)
    assert two["n_cells"] == 2 and two["spearman"] is None and "need at least 3" in two["reason"]
    flat = rank_agreement({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0}, k=2)
    assert flat["spearman"] is None and "constant" in flat["reason"]


def test_early_vs_final_in_analysis(tmp_path):
    scores = Scores().base("task", "chrf", 30)
    for i, size in enumerate([50, 100, 200, 400]):
        scores.cell("lora", size, 0, "task", "chrf", 40 + i, stage="final")
        scores.cell("lora", size, 0, "task", "chrf", 35 + i, stage="early")
    evf = analyse(scores, tmp_path, n_bootstrap=0, top_k=2)["early_vs_final"]
    (entry,) = evf["metrics"]
    assert entry["spearman"] == pytest.approx(1.0)
    assert entry["top_k_overlap"] == 1.0 and entry["k"] == 2 and entry["primary"] is True


def test_early_vs_final_without_early_stage(tmp_path):
    scores = Scores().base("task", "chrf", 30).curve("lora", [50, 100, 200], [0], "task", "chrf", lambda n: n / 10)
    (entry,) = analyse(scores, tmp_path, n_bootstrap=0)["early_vs_final"]["metrics"]
    assert entry["spearman"] is None and "no early-checkpoint scores" in entry["reason"]


# ----------------------------------------------------------------------------- inputs and config


def test_missing_task_suite_is_a_config_error(tmp_path):
    scores = Scores().base("arc", "acc", 0.5).cell("lora", 50, 0, "arc", "acc", 0.5)
    with pytest.raises(ConfigError, match=r"task_suites = \['task'\].*suites there: \['arc'\]"):
        analyse(scores, tmp_path)


def test_primary_metric_must_exist(tmp_path):
    scores = Scores().base("task", "chrf", 30).cell("lora", 50, 0, "task", "chrf", 40)
    with pytest.raises(ConfigError, match="primary_metrics.task = 'bleu'"):
        analyse(scores, tmp_path, primary_metrics={"task": "bleu"})


def test_unknown_metric_is_left_out_with_a_warning_unless_given_a_direction(tmp_path):
    scores = Scores().base("task", "chrf", 30).base("task", "rouge_l", 0.2)
    scores.cell("lora", 50, 0, "task", "chrf", 40).cell("lora", 50, 0, "task", "rouge_l", 0.3)
    analysis = analyse(scores, tmp_path, n_bootstrap=0)
    assert analysis["suites"]["metrics"]["task"] == ["chrf"]
    assert any("rouge_l" in w for w in analysis["warnings"])
    analysis = analyse(scores, tmp_path, n_bootstrap=0, metric_directions={"rouge_l": "higher"})
    final = [r for r in analysis["learning_forgetting"] if r["stage"] == "final"][0]
    assert final["learning"]["task"]["rouge_l"] == pytest.approx(0.1)


def test_no_base_rows_gives_no_learning_and_a_warning(tmp_path):
    scores = Scores().curve("lora", [50, 100, 200], [0], "task", "chrf", lambda n: n / 10)
    analysis = analyse(scores, tmp_path, n_bootstrap=0)
    assert analysis["learning_forgetting"] == [] and analysis["pareto"] == []
    assert any("no base-model scores" in w for w in analysis["warnings"])


def test_load_scores_errors_name_file_row_and_column(tmp_path):
    path = tmp_path / "scores.parquet"
    with pytest.raises(DataError, match="not found"):
        load_scores(path)
    pd.DataFrame({"cell": ["base"], "value": [1.0]}).to_parquet(path)
    with pytest.raises(DataError, match=r"scores.parquet: missing columns \['method'"):
        load_scores(path)
    rows = Scores().base("task", "chrf", 1).base("task", "chrf", 2).rows
    pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(DataError, match="row 1 repeats the score for cell=base, stage=base, suite=task, metric=chrf"):
        load_scores(path)
    rows = Scores().base("task", "chrf", 1).cell("lora", 5, 0, "task", "chrf", 1, stage="middle").rows
    pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(DataError, match="row 1, column stage: 'middle'"):
        load_scores(path)
    frame = pd.DataFrame(Scores().base("task", "chrf", 1).rows).astype({"value": object})
    frame.loc[0, "value"] = "high"
    frame.to_parquet(path)
    with pytest.raises(DataError, match="row 0, column value: 'high' is not a number"):
        load_scores(path)


def test_metric_table_points_and_epsilon_scale():
    table = MetricTable()
    assert table.points("acc", 0.05, 0.6) == pytest.approx(5.0)
    assert table.points("chrf", 5.0, 40) == pytest.approx(5.0)
    assert table.points("bits_per_byte", 0.1, 1.0) == pytest.approx(10.0)
    assert table.points("kl_divergence", 0.1, 0.0) is None
    assert table.epsilon_scale("bleu", 20.0, np.array([30.0])) == 100.0
    assert table.epsilon_scale("perplexity", 12.0, np.array([15.0])) == 12.0
    assert table.epsilon_scale("kl_divergence", 0.0, np.array([0.1, 0.4])) == 0.4
    assert MetricTable({"acc": "lower"}).direction("acc") == -1


def test_analysis_json_is_strict_json(tmp_path):
    scores = Scores().base("task", "chrf", 30).curve("lora", [50, 100], [0], "task", "chrf", lambda n: n)
    run = scores.write(tmp_path)
    analyze_run(run, AnalysisConfig(n_bootstrap=0))
    text = run.analysis.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert set(json.loads(text)) >= {"learning_forgetting", "pareto", "saturation", "early_vs_final", "generated"}
