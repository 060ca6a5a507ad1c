"""The app on a learning-rate grid run: the Learning page shows the selected rates and lists every
grid cell; its points and the Saturation page's points are the selected cells only."""
from __future__ import annotations

import pytest
from lr_grid_fixture import grid_run
from test_app_pages import app, figures

from curatune.evaluate.analysis import analyze_run

pytest.importorskip("streamlit")


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    run = grid_run(tmp_path_factory.mktemp("lr-grid") / "grid")
    analyze_run(run)
    return run.root


def test_learning_page_shows_the_selected_rates_and_plots_only_their_cells(monkeypatch, grid_dir):
    at = app(monkeypatch, grid_dir, page="learning")
    assert "Selected learning rates" in [s.value for s in at.subheader]
    chosen = at.dataframe[0].value
    assert list(zip(chosen["size"], chosen["selected lr"])) == [(4, "1e-4 (grid min)"), (8, "1e-3 (grid max)")]
    assert set(chosen["lead over the runner-up"]) == {"0.2000 below 1e-3 (every seed: +0.2000, +0.2000)",
                                                      "0.2000 below 1e-4 (every seed: +0.2000, +0.2000)"}
    every = at.dataframe[1].value  # every grid cell, selected or not
    assert len(every) == 8 and int(every["selected"].sum()) == 4
    assert "Every grid cell (4 selected, 4 of other rates, 0 not finished)" in [e.label for e in at.expander]
    learning = next(f for f in figures(at) if any(t.get("name") == "base model" for t in f["data"]))
    lora = next(t for t in learning["data"] if t["name"] == "lora")
    assert len(lora["x"]) == 4  # 2 sizes x 2 seeds of the selected rates, not the 8 grid cells
    compare_options = at.selectbox(key="lf_cmp_b").options
    assert "lora-lr1e-3-n4-s0" not in compare_options and "lora-lr1e-4-n4-s0" in compare_options


def test_learning_page_plots_validation_loss_against_the_rate(monkeypatch, grid_dir):
    """The grid figure: per size a line through each rate's mean over seeds, the seeds as dots, a star
    on the selected rate, on a log axis labelled with the grid's rates."""
    at = app(monkeypatch, grid_dir, page="learning")
    fig = next(f for f in figures(at) if any(str(t.get("name", "")).endswith("selected") for t in f["data"]))
    traces = {t["name"]: t for t in fig["data"]}
    assert [round(y, 4) for y in traces["n4"]["y"]] == [1.005, 1.205]  # means of seeds 0, 1 at 1e-4, 1e-3
    assert traces["n4"]["x"] == pytest.approx([1e-4, 1e-3]) and traces["n8"]["y"] == pytest.approx([0.905, 0.705])
    assert sorted(traces["n4 seeds"]["y"]) == pytest.approx([1.0, 1.01, 1.2, 1.21])
    assert traces["n4 selected"]["x"] == pytest.approx([1e-4]) and traces["n8 selected"]["x"] == pytest.approx([1e-3])
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["xaxis"]["ticktext"] == ["1e-4", "1e-3"]


def test_saturation_page_plots_only_the_selected_cells(monkeypatch, grid_dir):
    at = app(monkeypatch, grid_dir, page="saturation")
    points = [t for t in figures(at)[0]["data"] if t.get("name") == "lora" or "lora" in str(t.get("name"))]
    ys = sorted(y for t in points for y in (t.get("y") or []) if y is not None)
    assert ys and max(ys) < 0.9  # the unselected rate at n=4 (0.90, 0.91) is not plotted


def test_runs_page_lists_each_grid_cell_with_its_rate_and_validation_loss(monkeypatch, grid_dir):
    at = app(monkeypatch, grid_dir, page="runs")
    table = next(df.value for df in at.dataframe if "cell" in getattr(df.value, "columns", []))
    table = getattr(table, "data", table)  # a Styler carries its frame in .data
    assert {"lr", "validation loss"} <= set(table.columns) and len(table) == 8
    row = table[table["cell"] == "lora-lr1e-3-n8-s1"].iloc[0]
    assert row["lr"] == 1e-3 and row["validation loss"] == pytest.approx(0.71)


def test_runs_page_leaves_out_cells_of_an_earlier_grid(monkeypatch, grid_dir, tmp_path):
    """A rate dropped from train.learning_rates leaves its folders on disk: not a cell of this run."""
    import shutil

    from curatune.rundir import CellSpec, RunDir, atomic_write_json

    root = tmp_path / "moved"
    shutil.copytree(grid_dir, root)
    old = CellSpec("lora", 4, 0, 5e-3)
    atomic_write_json(old.path(RunDir(root)) / "done.json", {"key": old.key, "validation_loss": 0.1})
    at = app(monkeypatch, root, page="runs")
    table = next(df.value for df in at.dataframe if "cell" in getattr(df.value, "columns", []))
    table = getattr(table, "data", table)
    assert len(table) == 8 and old.key not in set(table["cell"])
    assert any("1 cell folders on disk are not in this run's plan" in c.value for c in at.caption)


def test_learning_page_shows_the_runner_up_check_of_a_doubtful_rate(monkeypatch, tmp_path):
    from test_eval_significance import _doubtful_grid_run

    from curatune.evaluate.analysis import AnalysisConfig

    run = _doubtful_grid_run(tmp_path / "doubtful")
    analyze_run(run, AnalysisConfig(n_bootstrap=0))
    at = app(monkeypatch, run.root, page="learning")
    assert not at.exception
    table = next(df.value for df in at.dataframe if "verdict changes" in getattr(df.value, "columns", []))
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["swapped"], row["suite"], row["verdict changes"]) == ("full: 2e-4 for 1e-4 (seeds disagree)", "task", "yes")
    assert (row["verdict at the runner-up"], row["verdict at the selected rate"]) == (
        "no detectable change", "significant loss")


def test_learning_page_with_a_task_criterion_names_it_and_what_the_loss_would_pick(monkeypatch, tmp_path):
    """lr_select_by a validation suite: the table and the plot are in its metric, the loss's choice is shown,
    and the validation suite itself is no general suite of the page."""
    import pandas as pd

    from curatune.evaluate.analysis import AnalysisConfig
    from curatune.rundir import atomic_write_parquet

    run = grid_run(tmp_path / "grid")
    scores = pd.read_parquet(run.scores)
    finals = scores[(scores["stage"] == "final") & (scores["suite"] == "task")].copy()
    finals["suite"], finals["metric"] = "task_validation", "chrf"
    # chrF prefers 1e-3 at n=4, where the loss prefers 1e-4
    finals["value"] = [40.0 + 10 * (lr == 1e-3) + seed for lr, seed in
                       zip(finals["cell"].map(lambda c: 1e-3 if "lr1e-3" in c else 1e-4), finals["seed"])]
    atomic_write_parquet(run.scores, pd.concat([scores, finals], ignore_index=True))
    analysis = analyze_run(run, AnalysisConfig(lr_select_by="task_validation/chrf"))
    assert "task_validation" not in analysis["suites"]["general"]
    at = app(monkeypatch, run.root, page="learning")
    chosen = at.dataframe[0].value
    assert list(chosen["selected lr"]) == ["1e-3 (grid max)", "1e-3 (grid max)"]
    assert list(chosen["mean chrf on task_validation"]) == [50.5, 50.5]
    assert list(chosen["validation loss would pick"]) == ["1e-4", "same"]
    assert "10.0000 above 1e-4 (every seed: +10.0000, +10.0000)" in set(chosen["lead over the runner-up"])
    fig = next(f for f in figures(at) if any(str(t.get("name", "")).endswith("selected") for t in f["data"]))
    assert fig["layout"]["yaxis"]["title"]["text"] == "chrf on task_validation"
    assert sorted(t["name"] for t in fig["data"] if t.get("showlegend") is not False) == ["n4", "n8"]
    assert sorted(next(t for t in fig["data"] if t["name"] == "n4 seeds")["y"]) == [40.0, 41.0, 50.0, 51.0]


def test_a_choice_with_a_rate_still_training_is_marked_provisional(monkeypatch, tmp_path):
    from curatune.rundir import CellSpec, atomic_write_json, read_json

    run = grid_run(tmp_path / "grid")
    plan = read_json(run.plan)
    extra = CellSpec("lora", 8, 2, 1e-3)  # a third seed, still training at n=8
    plan["cells"].append({"method": "lora", "size": 8, "seed": 2, "lr": 1e-3, "key": extra.key})
    atomic_write_json(run.plan, plan)
    analyze_run(run)
    at = app(monkeypatch, run.root, page="learning")
    chosen = at.dataframe[0].value
    assert list(chosen["selected lr"]) == ["1e-4 (grid min)", "1e-3 (grid max) (provisional)"]


def test_a_size_that_only_one_method_has_gets_a_legend_entry():
    from curatune.app.charts import lr_grid_figure

    def choice(method, size, lr):
        return {"method": method, "size": size, "lr": lr, "tie": False, "grid_rates": [lr],
                "candidates": [{"lr": lr, "mean_score": 1.0, "complete": True, "seeds": [0]}]}

    fig = lr_grid_figure({"selected": [choice("full", 4, 1e-4), choice("lora", 4, 1e-3), choice("lora", 8, 1e-3)],
                          "cells": []})
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert sorted(shown) == ["n4", "n8"]  # n8 exists in the second panel only
