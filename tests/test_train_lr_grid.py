"""Learning-rate grids (train.learning_rates): the cell identity, the grid, the validation split,
the selection rule and the analysis on the selected cells only."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from lr_grid_fixture import grid_run as _grid_run
from lr_grid_fixture import tiny_grid_config
from rich.console import Console
from train_helpers import curated_run_dir, make_records, tiny_config

from curatune.config import validate_config
from curatune.errors import ConfigError, CuratuneError
from curatune.evaluate.analysis import analyze_run
from curatune.evaluate.analysis.lr_selection import margin_text, select_learning_rates
from curatune.evaluate.compare import compare_run_cells
from curatune.evaluate.power import sweep_size
from curatune.evaluate.report import build_report, render_report
from curatune.rundir import (
    CellInfo,
    CellSpec,
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    cell_key,
    format_lr,
    list_cells,
    parse_cell_key,
)
from curatune.train.plan import plan_sweep
from curatune.train.validation import carve_validation

GRID = {"lora": [1e-4, 2e-4, 5e-4], "full": [1e-5, 2e-5, 5e-5]}


# ----------------------------------------------------------------------------- the cell identity


def test_keys_and_folders_without_a_grid_are_unchanged(tmp_path):
    run = RunDir(tmp_path)
    assert cell_key("lora", 100, 0) == "lora-n100-s0" == CellSpec("lora", 100, 0).key
    assert run.cell("full", 400, 2) == tmp_path / "train" / "full" / "n400" / "s2"
    assert CellSpec("full", 400, 2).path(run) == run.cell("full", 400, 2)
    parsed = parse_cell_key("lora-n100-s0")
    assert tuple(parsed) == ("lora", 100, 0, None) and parsed.lr is None
    assert parse_cell_key("base") is None


@pytest.mark.parametrize("lr, text", [(1e-4, "1e-4"), (2e-4, "2e-4"), (5e-5, "5e-5"), (2.5e-5, "2.5e-5"),
                                      (0.001, "1e-3"), (3e-3, "3e-3"), (0.00012345678, "0.00012345678")])
def test_grid_cell_key_names_the_rate_and_reads_back_exactly(tmp_path, lr, text):
    assert format_lr(lr) == text
    key = cell_key("lora", 100, 1, lr)
    assert key == f"lora-lr{text}-n100-s1"
    assert parse_cell_key(key) == ("lora", 100, 1, lr)  # the same float, not a rounded one
    assert RunDir(tmp_path).cell("lora", 100, 1, lr) == tmp_path / "train" / "lora" / f"lr{text}" / "n100" / "s1"


def test_cell_folders_find_old_and_grid_layouts_side_by_side(tmp_path):
    run = RunDir(tmp_path)
    for folder in (run.cell("full", 4, 0), run.cell("lora", 4, 0, 2e-4), run.cell("lora", 8, 1, 1e-4)):
        folder.mkdir(parents=True)
    found = {cell_key(*cell) for cell, _ in run.cell_folders()}
    assert found == {"full-n4-s0", "lora-lr2e-4-n4-s0", "lora-lr1e-4-n8-s1"}


# ----------------------------------------------------------------------------- config and grid


def test_learning_rates_are_checked(tmp_path):
    base = {"run_dir": str(tmp_path), "train": {"methods": ["lora", "full"]}}
    for grid, message in (({"dora": [1e-4]}, "does not train"), ({"lora": []}, "at least one"),
                          ({"lora": [-1e-4]}, "positive"), ({"lora": [1e-4, 1e-4]}, "distinct"),
                          ({"lorax": [1e-4]}, "not a method")):
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "train": {**base["train"], "learning_rates": grid}})
    with pytest.raises(ConfigError, match="needs a validation split"):
        validate_config({**base, "train": {**base["train"], "learning_rates": {"lora": [1e-4]}, "validation_size": 0}})
    config = validate_config({**base, "train": {**base["train"], "learning_rates": {"lora": [5e-4, 1e-4]}}})
    assert config.train.grid_rates("lora") == [1e-4, 5e-4] and config.train.grid_rates("full") == [None]
    assert config.train.effective_validation_size() == 100
    assert validate_config(base).train.effective_validation_size() == 0  # no grid, no split, as before


def test_plan_counts_the_learning_rate_dimension(tmp_path):
    config = validate_config({"run_dir": str(tmp_path), "train": {
        "methods": ["lora", "full"], "sizes": [100, 200, 400, 800], "seeds": [0, 1, 2], "learning_rates": GRID},
        "evaluate": {"suites": [{"name": "task", "kind": "generation"}, {"name": "retention", "kind": "retention"}],
                     "stages": ["base", "final"]}})
    size = sweep_size(config)
    assert size["cells"] == 72 and size["learning_rates"] == {"lora": 3, "full": 3}
    assert size["evaluation_units"] == 2 + 72 * 2
    config.evaluate.lr_grid_cells = "selected"  # only one rate per (method, size, seed) gets the retention probe
    assert sweep_size(config)["evaluation_units"] == 2 + 72 + 24
    config.train.learning_rates = {"lora": [1e-4, 2e-4]}  # full keeps its single rate
    assert sweep_size(config)["cells"] == (2 + 1) * 4 * 3


def test_grid_cells_share_the_nested_subsets_and_a_disjoint_validation_split(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(60))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4, 8], seeds=[0, 1], validation_size=10,
                         learning_rates={"lora": [1e-4, 1e-3]})
    plan = plan_sweep(config, run_dir)
    assert [s.key for s in plan.specs[:3]] == ["lora-lr1e-4-n4-s0", "lora-lr1e-3-n4-s0", "full-n4-s0"]
    assert len(plan.specs) == 2 * 2 * 3
    by_cell = {s.key: plan.subset_ids(s) for s in plan.specs}
    assert by_cell["lora-lr1e-4-n8-s1"] == by_cell["lora-lr1e-3-n8-s1"] == by_cell["full-n8-s1"]
    assert by_cell["lora-lr1e-4-n4-s1"] == by_cell["lora-lr1e-4-n8-s1"][:4]  # nested

    stored = json.loads(run_dir.plan.read_text())
    entry = next(c for c in stored["cells"] if c["key"] == "lora-lr1e-3-n4-s0")
    assert entry["lr"] == 1e-3 and entry["path"] == "train/lora/lr1e-3/n4/s0"
    assert "lr" not in next(c for c in stored["cells"] if c["key"] == "full-n4-s0")
    assert stored["validation_size"] == 10
    assert [c.key for c in list_cells(run_dir)] == [s.key for s in plan.specs]

    validation = set(pd.read_parquet(run_dir.validation)["id"])
    heldout = set(pd.read_parquet(run_dir.heldout)["id"])
    pool = set(pd.read_parquet(run_dir.pool)["id"])
    trained = set(pd.read_parquet(run_dir.subsets)["id"])
    assert len(validation) == 10 and not validation & heldout and not validation & pool and not validation & trained
    assert len(pool) == 60 - 6 - 10

    again = plan_sweep(config.model_copy(update={"train": config.train.model_copy(update={"validation_size": 5})}),
                       run_dir)
    assert set(pd.read_parquet(run_dir.validation)["id"]) == validation  # reused, never carved anew
    assert any("validation.parquet exists with 10 records" in n for n in again.notes)


def test_a_run_without_grid_plans_exactly_as_before(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    plan = plan_sweep(tiny_config(run_dir, tiny_model_dir), run_dir)
    assert [s.key for s in plan.specs] == ["lora-n4-s0", "full-n4-s0", "lora-n8-s0", "full-n8-s0"]
    assert not run_dir.validation.exists() and plan.pool_size == 20 - 6
    assert all("lr" not in c for c in json.loads(run_dir.plan.read_text())["cells"])


def test_validation_carve_is_seeded_and_too_large_a_split_is_an_error():
    records = make_records(30)
    first = carve_validation(records, 8, seed=7, stratify=True)
    assert [r.id for r in first.validation] == [r.id for r in carve_validation(records, 8, 7, True).validation]
    assert {r.id for r in first.validation} != {r.id for r in carve_validation(records, 8, 8, True).validation}
    assert len(first.pool) == 22 and not {r.id for r in first.pool} & {r.id for r in first.validation}
    with pytest.raises(CuratuneError, match="train.validation_size = 30"):
        carve_validation(records, 30, 7, True)


def test_validation_loss_matches_the_models_own_loss(tiny_model_dir):
    """The token-weighted mean of transformers' per-record loss (labels shifted inside the model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.chat_format import IGNORE_INDEX, encode, ensure_chat_template
    from curatune.train.validation import validation_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    records = make_records(5)
    result = validation_loss(model, tokenizer, records, max_length=64, batch_size=2)  # padded batches
    total, tokens = 0.0, 0
    with torch.no_grad():
        for record in records:
            enc = encode(tokenizer, record, 64)
            n = sum(1 for label in enc.labels[1:] if label != IGNORE_INDEX)
            loss = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels])).loss
            total, tokens = total + float(loss) * n, tokens + n
    assert result["records"] == 5 and result["tokens"] == tokens
    assert result["loss"] == pytest.approx(total / tokens, abs=2e-6)


# ----------------------------------------------------------------------------- the selection rule


def _info(method, size, seed, lr, loss, status="done"):
    done = {"validation_loss": loss} if status == "done" else None
    return CellInfo(method, size, seed, None, status, done=done, lr=lr)


def test_selection_picks_the_lowest_mean_validation_loss_per_method_and_size():
    cells = [
        # lora n4: 2e-4 has the lowest mean (1.0) though 1e-4 has the single best seed (0.9)
        _info("lora", 4, 0, 1e-4, 0.9), _info("lora", 4, 1, 1e-4, 1.3),
        _info("lora", 4, 0, 2e-4, 1.0), _info("lora", 4, 1, 2e-4, 1.0),
        # lora n8: a tie goes to the smaller rate
        _info("lora", 8, 0, 1e-4, 0.8), _info("lora", 8, 0, 2e-4, 0.8),
        # full n4: 5e-5 looks best but one seed is still missing: only complete rates compete
        _info("full", 4, 0, 1e-5, 1.5), _info("full", 4, 1, 1e-5, 1.5),
        _info("full", 4, 0, 5e-5, 0.5), _info("full", 4, 1, 5e-5, None, status="running"),
        _info("full", 4, 0, None, 0.1),  # not a grid cell: ignored by the rule
    ]
    selection = select_learning_rates(cells)
    assert selection.selected_rate("lora", 4) == 2e-4
    assert selection.selected_rate("lora", 8) == 1e-4
    assert next(c for c in selection.choices if c["size"] == 8)["tie"] is True
    assert selection.selected_rate("full", 4) == 1e-5
    full = next(c for c in selection.choices if c["method"] == "full")
    assert [c["complete"] for c in full["candidates"]] == [True, False]
    assert selection.selected_cells == {"lora-lr2e-4-n4-s0", "lora-lr2e-4-n4-s1", "lora-lr1e-4-n8-s0",
                                        "full-lr1e-5-n4-s0", "full-lr1e-5-n4-s1"}
    assert "full-n4-s0" not in selection.selected_cells | selection.unselected_cells
    assert select_learning_rates([_info("full", 4, 0, None, 0.1)]).active is False


def test_selection_says_whether_every_seed_prefers_the_winner():
    cells = [
        # n4: 2e-4 wins on the mean (1.0 vs 1.1) but seed 0 alone prefers 1e-4: within seed noise
        _info("lora", 4, 0, 1e-4, 0.9), _info("lora", 4, 1, 1e-4, 1.3),
        _info("lora", 4, 0, 2e-4, 1.0), _info("lora", 4, 1, 2e-4, 1.0),
        _info("lora", 4, 0, 5e-4, 2.0), _info("lora", 4, 1, 5e-4, 2.0),
        # n8: 1e-4 beats 2e-4 on both seeds
        _info("lora", 8, 0, 1e-4, 0.7), _info("lora", 8, 1, 1e-4, 0.8),
        _info("lora", 8, 0, 2e-4, 0.75), _info("lora", 8, 1, 2e-4, 0.9),
        # n16: one seed, one rate
        _info("lora", 16, 0, 1e-4, 0.6),
    ]
    choices = {c["size"]: c for c in select_learning_rates(cells).choices}
    assert choices[4]["lr"] == 2e-4 and choices[4]["runner_up"] == 1e-4
    assert choices[4]["margin"] == pytest.approx(0.1) and choices[4]["agreement"] == "seeds disagree"
    assert choices[4]["per_seed_margin"] == {0: pytest.approx(-0.1), 1: pytest.approx(0.3)}
    assert choices[8]["agreement"] == "every seed" and choices[8]["per_seed_margin"] == {
        0: pytest.approx(0.05), 1: pytest.approx(0.1)}
    assert choices[16]["runner_up"] is None and margin_text(choices[16]) == "no other rate finished"
    assert margin_text(select_learning_rates([_info("lora", 4, 0, 1e-4, 1.0)]).choices[0]) == "only rate"
    assert margin_text(choices[4]) == "0.1000 below 1e-4 (seeds disagree: -0.1000, +0.3000)"
    # a rate at an end of the grid: the best rate may lie beyond it, and a warning says so
    selection = select_learning_rates(cells)
    assert choices[4]["at_grid_edge"] is None
    assert choices[8]["at_grid_edge"] == "smallest"
    assert choices[16]["at_grid_edge"] is None  # no other rate finished at n16: nothing says the loss falls that way
    assert selection.warnings == [
        "lora: the selected learning rate is the grid's smallest at n=8: the validation loss may fall further "
        "below the grid; add a rate below 1e-4 to train.learning_rates to find that method's best rate"]
    top = select_learning_rates([_info("full", 4, 0, 1e-5, 2.0), _info("full", 4, 0, 5e-5, 1.0),
                                 _info("full", 4, 0, 2e-5, None, status="running")])
    assert top.choices[0]["at_grid_edge"] == "largest" and "add a rate above 5e-5" in top.warnings[0]
    assert margin_text(top.choices[0]) == "1.0000 below 1e-5 (one seed: +1.0000)"
    pending = select_learning_rates([_info("full", 4, 0, 1e-5, 2.0), _info("full", 4, 1, 1e-5, 2.0),
                                     _info("full", 4, 0, 5e-5, 1.0), _info("full", 4, 1, 5e-5, None, "running")])
    assert margin_text(pending.choices[0]) == "no rival with as many seeds (1 incomplete)"


def test_a_size_without_any_validation_loss_is_said_not_guessed():
    selection = select_learning_rates([_info("lora", 4, 0, 1e-4, None, status="failed")])
    assert selection.choices == [] and selection.unselected_cells == {"lora-lr1e-4-n4-s0"}
    assert "no learning rate selected for lora n=4" in selection.warnings[0]


# ----------------------------------------------------------------------------- the analysis on selected cells


def test_analysis_compares_the_selected_cells_only_and_lists_the_others(tmp_path):
    run = _grid_run(tmp_path / "run")
    analysis = analyze_run(run)
    selection = analysis["lr_selection"]
    assert selection["active"] and {(c["size"], c["lr"]) for c in selection["selected"]} == {(4, 1e-4), (8, 1e-3)}
    assert set(selection["unselected_cells"]) == {"lora-lr1e-3-n4-s0", "lora-lr1e-3-n4-s1",
                                                  "lora-lr1e-4-n8-s0", "lora-lr1e-4-n8-s1"}
    assert len(selection["cells"]) == 8  # every grid cell still listed, with its validation loss
    compared = {r["cell"] for r in analysis["learning_forgetting"]}
    assert compared == set(selection["selected_cells"])
    assert all(r["lr"] == (1e-4 if r["size"] == 4 else 1e-3) for r in analysis["learning_forgetting"])
    points = {p["size"]: p for p in analysis["pareto"] if p["method"] == "lora"}
    assert points[4]["lr"] == 1e-4 and points[4]["task_gain"] == pytest.approx(100 * (0.405 - 0.3))
    assert points[8]["lr"] == 1e-3 and points[8]["task_gain"] == pytest.approx(100 * (0.555 - 0.3))
    # the saturation fit sees the selected cells only: 2 sizes x 2 seeds
    task_fit = next(s for s in analysis["saturation"] if s["suite"] == "task" and s["method"] == "lora")
    assert task_fit["sizes"] == [4, 8] and task_fit["n_seeds"] == [2, 2]
    assert task_fit["means"] == pytest.approx([0.405, 0.555])


def test_cells_of_an_earlier_grid_are_left_out_and_counted_apart(tmp_path):
    """The grid moved (train.learning_rates changed): an old rate's cell folder and scores stay on
    disk, but the plan no longer lists it. It must not enter any comparison, nor count as done."""
    run = _grid_run(tmp_path / "run")
    old = CellSpec("lora", 4, 0, 5e-3)
    atomic_write_json(old.path(run) / "done.json", {"key": old.key, "validation_loss": 0.1})
    scores = pd.read_parquet(run.scores)
    extra = scores[scores["cell"] == "lora-lr1e-4-n4-s0"].assign(cell=old.key, value=0.99)
    atomic_write_parquet(run.scores, pd.concat([scores, extra], ignore_index=True))
    analysis = analyze_run(run)
    assert old.key not in {r["cell"] for r in analysis["learning_forgetting"]}
    points = {p["size"]: p for p in analysis["pareto"] if p["method"] == "lora"}
    assert points[4]["task_gain"] == pytest.approx(100 * (0.405 - 0.3)) and points[4]["n_seeds"] == 2
    from curatune.evaluate.report import sweep_status

    status = sweep_status(run)
    assert (status["planned"], status["done"], status["not_planned"]) == (8, 8, [old.key])
    console = Console(record=True, width=250)
    render_report(build_report(run.root), console)
    assert "8 cells done of 8 planned, 0 failed, 0 pending; 1 cell folders the plan no longer lists" in console.export_text()
    rates = {(r["method"], r["size"], r["lr"]) for r in build_report(run.root)["scores"]}
    assert ("lora", 4, 5e-3) not in rates and ("lora", 4, 1e-4) in rates  # nor a row of the score table


def test_compare_resolves_a_key_without_rate_to_the_selected_cell(tmp_path):
    run = _grid_run(tmp_path / "run")
    analyze_run(run)
    result = compare_run_cells(run.root, "base", "lora-n8-s0")
    assert result["cell_b"] == "lora-lr1e-3-n8-s0"
    assert "selected learning rate" in result["notes"][0]
    result = compare_run_cells(run.root, "lora-lr1e-3-n4-s0", "lora-n4-s1")
    assert result["cell_b"] == "lora-lr1e-4-n4-s1" and "not the selected learning rate" in result["notes"][0]


def test_export_resolves_a_key_without_rate_to_the_selected_cell(tmp_path):
    from curatune.export import find_cell

    run = _grid_run(tmp_path / "run")
    assert find_cell(run, "lora-n8-s0").key == "lora-lr1e-3-n8-s0"
    assert find_cell(run, "lora-n4-s1").key == "lora-lr1e-4-n4-s1"
    assert find_cell(run, "lora-lr1e-4-n8-s0").key == "lora-lr1e-4-n8-s0"  # a named rate is taken as named
    with pytest.raises(CuratuneError, match="pending"):
        find_cell(run, "full-n8-s0")  # no such method in the run


def test_report_shows_the_selected_learning_rates(tmp_path):
    run = _grid_run(tmp_path / "run")
    console = Console(record=True, width=200)
    render_report(build_report(run.root), console)
    text = console.export_text()
    assert "Learning-rate selection" in text and "4 cells of other rates" in text
    selection_rows = [line.split("│") for line in text.splitlines() if "(2)  1e-3: " in line]
    assert [[c.strip() for c in row[1:5]] for row in selection_rows] == [["lora", "4", "1e-4 (grid min)", "1.0050"],
                                                                         ["lora", "8", "1e-3 (grid max)", "0.7050"]]
    assert "0.2000 below 1e-3 (every seed: +0.2000, +0.2000)" in text
    assert "the selected learning rate is the grid's largest at n=8" in text
    # the score table lists every rate, the selected one marked
    score_rows = [[c.strip() for c in line.split("│")[1:6]] for line in text.splitlines() if "±" in line and "│" in line]
    assert score_rows == [["lora", "4", "2", "1e-4 ✓", "0.405 ±0.007"], ["lora", "4", "2", "1e-3", "0.905 ±0.007"],
                          ["lora", "8", "2", "1e-4", "0.455 ±0.007"], ["lora", "8", "2", "1e-3 ✓", "0.555 ±0.007"]]


# ----------------------------------------------------------------------------- end to end on the tiny model


@pytest.mark.slow
def test_grid_sweep_records_validation_losses_and_evaluates_the_selected_cells_fully(tmp_path, tiny_model_dir):
    import torch

    from curatune.evaluate.runner import run_evaluate
    from curatune.train.sweep import run_sweep

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = curated_run_dir(tmp_path / "run", make_records(24))
        config = tiny_grid_config(
            run_dir, tiny_model_dir,
            train={"sizes": [4], "epochs": 1, "learning_rates": {"lora": [1e-5, 5e-3]}},
            evaluate={"suites": [{"name": "task", "kind": "generation", "max_new_tokens": 4},
                                 {"name": "general", "kind": "generation", "max_new_tokens": 4}],
                      "analysis": {"n_bootstrap": 0}},
        )
        summary = run_sweep(config, run_dir, progress=False)
        assert summary["cells_done"] == 3 and not summary["failed"]
        done = {c.key: c.done for c in list_cells(run_dir)}
        assert set(done) == {"lora-lr1e-5-n4-s0", "lora-lr5e-3-n4-s0", "full-n4-s0"}
        assert (run_dir.root / "train" / "lora" / "lr5e-3" / "n4" / "s0" / "final").is_dir()
        assert done["lora-lr5e-3-n4-s0"]["learning_rate"] == 5e-3 and done["full-n4-s0"]["learning_rate"] == 2e-5
        for record in done.values():  # every cell scored the same 6 validation records
            assert record["validation_records"] == 6 and record["validation_loss"] > 0
        # the two rates really trained differently: their validation losses differ
        assert done["lora-lr1e-5-n4-s0"]["validation_loss"] != done["lora-lr5e-3-n4-s0"]["validation_loss"]
        log = read_jsonl_max_lr(run_dir.cell("lora", 4, 0, 5e-3) / "train_log.jsonl")
        assert 0 < log <= 5e-3 and log > 1e-4  # the peak rate of the schedule is the grid rate
        best = min((1e-5, 5e-3), key=lambda lr: (done[cell_key("lora", 4, 0, lr)]["validation_loss"], lr))
        loser = cell_key("lora", 4, 0, 5e-3 if best == 1e-5 else 1e-5)

        # While a rate of lora n4 is still training, its choice may change: every finished lora cell gets
        # the task suite only, and the full evaluation waits (no benchmark spent on a cell that may lose).
        marker = run_dir.cell("lora", 4, 0, 5e-3 if best == 1e-5 else 1e-5) / "done.json"
        marker.rename(marker.with_name("done.hidden"))
        run_evaluate(config, run_dir, progress=False)
        scores = pd.read_parquet(run_dir.scores)
        assert sorted(set(scores[scores["cell"] == cell_key("lora", 4, 0, best)]["suite"])) == ["task"]
        assert sorted(set(scores[scores["cell"] == "full-n4-s0"]["suite"])) == ["general", "task"]  # no grid
        early = json.loads(run_dir.analysis.read_text())  # the choice and every comparison with it say so
        assert [c["provisional"] for c in early["lr_selection"]["selected"]] == [True]
        assert early["method_comparison"]["entries"] and all(e["provisional"] for e in early["method_comparison"]["entries"])
        console = Console(record=True, width=250)
        render_report(build_report(run_dir.root), console)
        text = console.export_text()
        assert "(provisional)" in text and "provisional: a rate or seed" in text
        marker.with_name("done.hidden").rename(marker)

        run_evaluate(config, run_dir, progress=False)  # the grid is done: the selected cell gets the rest
        analysis = json.loads(run_dir.analysis.read_text())
        chosen = analysis["lr_selection"]["selected"][0]
        assert chosen["lr"] == best and chosen["provisional"] is False
        assert not any(e["provisional"] for e in analysis["method_comparison"]["entries"])
        scores = pd.read_parquet(run_dir.scores)
        suites = scores.groupby("cell")["suite"].agg(lambda s: sorted(set(s))).to_dict()
        assert suites[cell_key("lora", 4, 0, best)] == ["general", "task"]  # the full evaluation
        assert suites["full-n4-s0"] == ["general", "task"]  # no grid: evaluated as always
        assert suites[loser] == ["task"]  # not selected: task suite only
        assert {r["cell"] for r in analysis["learning_forgetting"]} == {cell_key("lora", 4, 0, best), "full-n4-s0"}
        # LoRA against full at matched strength: the selected rate's cell, exactly `compare full <that cell>`
        methods = analysis["method_comparison"]
        assert methods["reference"] == "full" and {e["suite"] for e in methods["entries"]} == {"task", "general"}
        within = {e["suite"]: e for e in compare_run_cells(run_dir.root, "full-n4-s0", cell_key("lora", 4, 0, best))
                  ["suites"]}
        for entry in methods["entries"]:
            assert (entry["method_b"], entry["lr_b"], entry["lr_a"]) == ("lora", best, None)
            for key in ("value_a", "value_b", "difference", "ci_low", "ci_high", "p_value"):
                assert entry[key] == pytest.approx(within[entry["suite"]][key]), key
    finally:
        torch.set_num_threads(before)


def read_jsonl_max_lr(path) -> float:
    return max(line["learning_rate"] for line in map(json.loads, path.read_text().splitlines()))
