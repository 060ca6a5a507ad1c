"""Choosing a grid's learning rate by a task metric on the validation split
(evaluate.analysis.lr_select_by: SUITE/METRIC): the rule, the config, and a tiny-model run whose
choice is checked against sacrebleu's chrF++ on the generated validation outputs."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import sacrebleu
from lr_grid_fixture import tiny_grid_config
from rich.console import Console
from train_helpers import curated_run_dir, make_records

from curatune.config import validate_config
from curatune.errors import ConfigError
from curatune.evaluate.analysis.config import AnalysisConfig
from curatune.evaluate.analysis.lr_selection import (
    Criterion,
    margin_text,
    reported_scores,
    select_learning_rates,
)
from curatune.evaluate.report import build_report, render_report
from curatune.rundir import CellInfo, RunDir, cell_key, list_cells, parse_cell_key

CHRF = Criterion("task_validation/chrf", higher_is_better=True)


def _info(method, size, seed, lr, loss, status="done"):
    done = {"validation_loss": loss} if status == "done" else None
    return CellInfo(method, size, seed, None, status, done=done, lr=lr)


# ----------------------------------------------------------------------------- the rule


def test_a_higher_is_better_criterion_picks_the_highest_mean_and_says_what_the_loss_would_pick():
    cells = [_info("lora", 100, s, lr, loss) for s in (0, 1)
             for lr, loss in ((1e-3, 1.20), (2e-3, 1.10), (5e-3, 1.15))]  # the loss prefers 2e-3
    chrf = {cell_key("lora", 100, 0, 1e-3): 40.0, cell_key("lora", 100, 1, 1e-3): 41.0,
            cell_key("lora", 100, 0, 2e-3): 44.0, cell_key("lora", 100, 1, 2e-3): 45.0,
            cell_key("lora", 100, 0, 5e-3): 46.0, cell_key("lora", 100, 1, 5e-3): 47.5}
    selection = select_learning_rates(cells, CHRF, chrf)
    (choice,) = selection.choices
    assert choice["lr"] == 5e-3 and choice["mean_score"] == 46.75 and choice["higher_is_better"]
    assert choice["runner_up"] == 2e-3 and choice["margin"] == pytest.approx(2.25)  # positive: the winner is better
    assert choice["per_seed_margin"] == {0: 2.0, 1: 2.5} and choice["agreement"] == "every seed"
    assert choice["loss_rule_lr"] == 2e-3 and choice["mean_validation_loss"] == 1.15
    assert choice["at_grid_edge"] == "largest"
    assert "2.2500 above 2e-3" in margin_text(choice)
    assert any("chrf on task_validation may improve further above" in w for w in selection.warnings)
    assert selection.to_dict()["criterion"] == {"by": "task_validation/chrf", "label": "chrf on task_validation",
                                                "higher_is_better": True}
    # a lower-is-better metric (TER) picks the lowest
    ter = Criterion("task_validation/ter", higher_is_better=False)
    assert select_learning_rates(cells, ter, chrf).choices[0]["lr"] == 1e-3


def test_cells_not_yet_scored_on_the_suite_keep_their_size_unsettled():
    cells = [_info("full", 100, 0, lr, 1.0) for lr in (1e-4, 2e-4)]
    selection = select_learning_rates(cells, CHRF, {cell_key("full", 100, 0, 1e-4): 30.0})
    assert selection.unsettled == [("full", 100)]  # 2e-4 is trained but not scored: the choice may change
    assert [c["awaiting_score"] for c in selection.cells] == [False, True]
    scored = {cell_key("full", 100, 0, 1e-4): 30.0, cell_key("full", 100, 0, 2e-4): 31.0}
    settled = select_learning_rates(cells, CHRF, scored)
    assert settled.unsettled == [] and settled.choices[0]["lr"] == 2e-4
    # a cell scored without a value (NaN) is measured: it does not hold the choice back
    assert select_learning_rates(cells, CHRF, {**scored, cell_key("full", 100, 0, 2e-4): float("nan")}).unsettled == []


def test_the_default_criterion_is_the_validation_loss_as_before():
    cells = [_info("lora", 100, 0, lr, loss) for lr, loss in ((1e-3, 1.2), (2e-3, 1.1))]
    (choice,) = select_learning_rates(cells).choices
    assert choice["lr"] == 2e-3 and choice["mean_score"] == choice["mean_validation_loss"] == 1.1
    assert "loss_rule_lr" not in choice and "0.1000 below 1e-3" in margin_text(choice)


def test_the_validation_suite_is_left_out_of_every_comparison():
    scores = pd.DataFrame({"suite": ["task", "task_validation"], "metric": ["chrf", "chrf"], "cell": ["a", "a"]})
    config = validate_config({"evaluate": _evaluate()}).evaluate.analysis
    assert list(reported_scores(scores, config)["suite"]) == ["task"]
    assert len(reported_scores(scores, None)) == 2  # the validation loss chooses: nothing to leave out


# ----------------------------------------------------------------------------- the config


def _evaluate(**analysis):
    return {"suites": [{"name": "task", "kind": "generation"},
                       {"name": "task_validation", "kind": "generation", "split": "validation", "metrics": ["chrf"],
                        "stages": ["final"]}],
            "analysis": {"lr_select_by": "task_validation/chrf", **analysis}}


def test_the_criterion_and_the_validation_suite_must_name_each_other():
    validate_config({"evaluate": _evaluate()})
    orphan = _evaluate()
    orphan["analysis"] = {}
    with pytest.raises(ConfigError, match="exists to choose a learning rate"):
        validate_config({"evaluate": orphan})
    with pytest.raises(ConfigError, match="needs a generation suite named 'task'.*split: validation"):
        validate_config({"evaluate": _evaluate(lr_select_by="task/chrf")})
    with pytest.raises(ConfigError, match="computes \\['chrf'\\], not 'bleu'"):
        validate_config({"evaluate": _evaluate(lr_select_by="task_validation/bleu")})
    with pytest.raises(ConfigError, match="SUITE/METRIC"):
        validate_config({"evaluate": _evaluate(lr_select_by="chrf")})
    with pytest.raises(ConfigError, match="leave path empty"):
        validate_config({"evaluate": {"suites": [{"name": "v", "kind": "generation", "split": "validation",
                                                  "path": "x.jsonl"}]}})
    novel = {"suites": [{"name": "v", "kind": "generation", "split": "validation"}],
             "analysis": {"lr_select_by": "v/novel"}}
    with pytest.raises(ConfigError, match="'novel' is not a metric of a generation suite"):
        validate_config({"evaluate": novel})  # at config check, before any cell trains
    with pytest.raises(ConfigError, match="no known direction"):  # a report reading an older run's config
        Criterion.of(AnalysisConfig(lr_select_by="v/novel"))


def test_a_held_out_suite_keeps_its_fingerprint(tmp_path):
    """`split` was added later: a held-out generation suite's resume fingerprint must not change, or every
    existing run would rescore its task suite."""
    from curatune.evaluate.suites import EvalContext, build_suites

    config = validate_config({"run_dir": str(tmp_path), "evaluate": {"suites": [
        {"name": "task", "kind": "generation", "path": str(tmp_path / "x.jsonl")}]}})
    (tmp_path / "x.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    (suite,) = build_suites(EvalContext(config, RunDir(tmp_path)))
    assert "split" not in suite.fingerprint()["suite"]


# ----------------------------------------------------------------------------- a tiny-model run


def test_a_grid_run_chosen_by_validation_chrf_in_one_evaluate(tmp_path, tiny_model_dir):
    import torch

    from curatune.evaluate.runner import run_evaluate
    from curatune.train.sweep import run_sweep

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = curated_run_dir(tmp_path / "run", make_records(24))
        evaluate = _evaluate(n_bootstrap=0)
        evaluate["suites"][0]["max_new_tokens"] = 4
        evaluate["suites"][1]["max_new_tokens"] = 12
        evaluate["suites"].append({"name": "general", "kind": "generation", "max_new_tokens": 4})
        # full fine-tuning at a large rate for a few epochs learns the answers' JSON shape, the small rate
        # does not: the two rates generate differently, so the choice is not a tie
        config = tiny_grid_config(run_dir, tiny_model_dir, evaluate=evaluate,
                                  train={"sizes": [8], "epochs": 4, "learning_rates": {"full": [1e-5, 3e-3]}})
        assert run_sweep(config, run_dir, progress=False)["cells_done"] == 3

        summary = run_evaluate(config, run_dir, progress=False)  # one call: validation suite, choice, full evaluation
        scores = pd.read_parquet(run_dir.scores)
        suites = scores.groupby("cell")["suite"].agg(lambda s: sorted(set(s))).to_dict()
        grid = [cell_key("full", 8, 0, lr) for lr in (1e-5, 3e-3)]
        # the validation suite scores the grid cells only: not the base model, not LoRA (no grid)
        assert "task_validation" not in suites["base"] and "task_validation" not in suites["lora-n8-s0"]

        # the reference: sacrebleu's chrF++ of each grid cell's validation outputs, from the sample files
        def chrf(cell):
            samples = pd.read_parquet(run_dir.sample_file("task_validation", cell, "final"))
            assert len(samples) == 6  # every validation record, none of the held-out ones
            return sacrebleu.CHRF(word_order=2).corpus_score(list(samples["output"]),
                                                             [list(samples["reference"])]).score
        reference = {cell: chrf(cell) for cell in grid}
        best = max(grid, key=lambda c: (round(reference[c], 6), -parse_cell_key(c).lr))  # a tie: the smaller rate
        loser = next(c for c in grid if c != best)
        analysis = json.loads(run_dir.analysis.read_text())
        selection = analysis["lr_selection"]
        assert selection["criterion"]["by"] == "task_validation/chrf"
        (choice,) = selection["selected"]
        assert cell_key("full", 8, 0, choice["lr"]) == best
        assert choice["mean_score"] == pytest.approx(reference[best], abs=1e-4)
        assert choice["loss_rule_lr"] in (1e-5, 3e-3)
        # the selected cell got its full evaluation in the same call; the other rate the task suites only
        assert suites[best] == ["general", "task", "task_validation"]
        assert suites[loser] == ["task", "task_validation"]
        assert summary["scored"] == len(scores.groupby(["cell", "stage", "suite"]))  # each unit once
        # the validation suite is no general suite: no forgetting row, no test against the base model
        assert analysis["suites"]["general"] == ["general"]
        assert {s for row in analysis["learning_forgetting"] for s in row["significance"]} <= {"task", "general"}
        assert not any(c["awaiting_score"] for c in selection["cells"])

        again = run_evaluate(config, run_dir, progress=False)
        assert again["scored"] == 0

        console = Console(record=True, width=250)
        render_report(build_report(run_dir.root), console)
        text = console.export_text()
        assert "Learning-rate selection (highest mean chrf on task_validation over seeds)" in text
        assert "validation loss would pick" in text
        assert {c.key for c in list_cells(run_dir)} == set(grid) | {"lora-n8-s0"}
    finally:
        torch.set_num_threads(before)


def test_the_plan_counts_the_validation_suite_on_grid_cells_only_and_tests_nothing_with_it(tmp_path):
    from curatune.evaluate.power import power_table, sweep_size

    evaluate = _evaluate()
    config = validate_config({"run_dir": str(tmp_path), "train": {
        "methods": ["lora", "full"], "sizes": [100, 200], "seeds": [0, 1], "validation_size": 80,
        "learning_rates": {"lora": [1e-4, 2e-4, 5e-4]}}, "evaluate": {**evaluate, "stages": ["base", "final"]}})
    # 3 lora rates + 1 full rate, x 2 sizes x 2 seeds = 16 cells; task: base + 16; validation: the 12 lora cells
    assert sweep_size(config)["evaluation_units"] == 1 + 16 + 12
    row = next(r for r in power_table(config) if r.suite == "task_validation")
    assert row.n_items == 80 and row.test == "none" and "chooses the learning rate" in row.note
