"""`curatune report RUN_DIR` on the synthetic fixture run (curatune.testing.fixture_run),
and the fixture itself (the app's tests use it too)."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from curatune.cli import app, main
from curatune.errors import CuratuneError
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, with_ledger_defaults
from curatune.rundir import RunDir, atomic_write_json, read_json
from curatune.testing.fixture_run import build_fixture_run

runner = CliRunner()


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> RunDir:
    return build_fixture_run(tmp_path_factory.mktemp("run") / "fixture", n_bootstrap=30)


@pytest.fixture
def run_copy(fixture_run, tmp_path) -> RunDir:
    """A private copy for tests that change files."""
    return RunDir(shutil.copytree(fixture_run.root, tmp_path / "run"))


def invoke(*args: str):
    return runner.invoke(app, ["report", *map(str, args)], env={"COLUMNS": "200"})


# ----------------------------------------------------------------------------- the fixture


def test_fixture_run_follows_the_contract(fixture_run):
    run = fixture_run
    assert read_json(run.manifest)["synthetic"] is True
    assert run.config.exists()
    kept, removed = pd.read_parquet(run.kept), pd.read_parquet(run.removed)
    report = read_json(run.curate_report)
    assert list(kept.columns) == RECORD_COLUMNS
    assert list(removed.columns) == RECORD_COLUMNS + LEDGER_COLUMNS
    # records in = kept + dropped (the fixture's ledger predates trims: every row is a drop)
    drops = with_ledger_defaults(removed)["action"] == "drop"
    assert drops.all() and report["input_records"] == len(kept) + drops.sum() == report["kept"] + sum(report["removed_by_reason"].values())
    plan = read_json(run.plan)
    assert len(plan["cells"]) == 2 * 4 * 2
    failed = list(run.train.glob("*/n*/s*/failed.json"))
    done = list(run.train.glob("*/n*/s*/done.json"))
    assert [p.parent for p in failed] == [run.cell("full", 400, 1)]
    assert len(done) == 15
    subsets = pd.read_parquet(run.subsets)
    s0 = subsets[subsets["seed"] == 0]
    assert set(s0[s0["size"] == 50]["id"]) < set(s0[s0["size"] == 100]["id"])  # nested subsets

    scores = pd.read_parquet(run.scores)
    assert set(scores["suite"]) == {"task", "arc_easy", "piqa", "retention"}
    assert "full-n400-s1" not in set(scores["cell"])
    per_cell = scores[scores["stage"] != "base"].groupby("cell")["stage"].unique()
    assert len(per_cell) == 15 and all(set(stages) == {"early", "final"} for stages in per_cell)
    sample = pd.read_parquet(run.samples / "task" / "lora-n50-s0__final.parquet")
    assert {"example_id", "prompt", "reference", "output", "bleu", "chrf", "ter", "comet_like"} <= set(sample.columns)
    value = scores.query("cell == 'lora-n50-s0' and stage == 'final' and suite == 'task' and metric == 'chrf'")["value"]
    assert value.iloc[0] == pytest.approx(sample["chrf"].mean())
    assert set(sample["example_id"]) == set(pd.read_parquet(run.heldout)["id"])
    assert run.analysis.exists() and run.saturation_curves.exists()


def test_fixture_planted_behaviour_is_found_by_the_analysis(fixture_run):
    analysis = read_json(fixture_run.analysis)
    chrf = {s["method"]: s for s in analysis["saturation"] if (s["suite"], s["metric"]) == ("task", "chrf")}
    assert chrf["full"]["worse_than_base_sizes"] == [50]  # full is below base at the smallest size
    assert chrf["lora"]["worse_than_base_sizes"] == []
    pareto = {(p["method"], p["size"]): p for p in analysis["pareto"]}
    assert pareto["full", 400]["task_gain"] > pareto["lora", 400]["task_gain"]  # full learns more ...
    assert pareto["full", 400]["forgetting"]["retention"] > pareto["lora", 400]["forgetting"]["retention"]  # ... and forgets more
    assert pareto["full", 400]["n_seeds"] == 1  # its second seed failed
    primary = [m for m in analysis["early_vs_final"]["metrics"] if m["primary"]][0]
    assert primary["n_cells"] == 15 and primary["spearman"] > 0.7


# ----------------------------------------------------------------------------- the report


def test_report_shows_every_section(fixture_run):
    result = invoke(fixture_run.root)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "fixture" in out and "synthetic test fixture" in out
    assert "460 records in = 440 kept + 20 dropped" in out
    assert "15 cells done of 16 planned, 1 failed" in out and "full-n400-s1" in out
    for title in ("Scores", "Learning vs forgetting", "Saturation", "Early checkpoint vs final"):
        assert title in out
    assert "★" in out and "arc_easy" in out and "kl_divergence" in out
    # comet_like is shown with what it is (issue 14): an embedding similarity, chrF++ the translation metric
    assert "comet_like" in out and "is an embedding similarity" in " ".join(out.split())
    assert "Traceback" not in out


def test_report_splits_wide_tables_for_a_narrow_terminal(fixture_run):
    # A column cut to "…" hides the number; the wide tables are printed in parts instead,
    # each repeating method, size and seeds
    wide = invoke(fixture_run.root).output
    result = runner.invoke(app, ["report", str(fixture_run.root)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    narrow = result.output
    scores = narrow[narrow.index("Scores"):narrow.index("Saturation")]
    assert "…" not in scores
    assert "Scores (final checkpoint; mean ± sd over seeds) (1/" in scores
    assert scores.count("method") >= 2 and "(1/" not in wide
    for name in ("arc_easy", "kl_divergence", "Pareto", "★"):
        assert name in scores
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_report_json(fixture_run):
    result = invoke(fixture_run.root, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["run"]["sweep"]["done"] == 15
    assert data["run"]["sweep"]["failed"][0]["cell"] == "full-n400-s1"
    assert data["run"]["curate"]["kept"] == 440
    rows = {(r["method"], r["size"]): r for r in data["scores"]}
    assert ("base", 0) in rows and rows["full", 400]["n_seeds"] == 1
    assert "task/chrf" in data["columns"] and "arc_easy/acc_norm" in data["columns"]
    assert "arc_easy/acc" not in data["columns"]  # general suites show their headline metric
    assert {s["suite"] for s in data["analysis"]["saturation"]} == {"task", "arc_easy", "piqa", "retention"}


def test_report_suite_and_metric_filters(fixture_run):
    data = json.loads(invoke(fixture_run.root, "--json", "--suite", "arc_easy").output)
    assert data["columns"] == ["arc_easy/acc", "arc_easy/acc_norm"]
    assert {s["suite"] for s in data["analysis"]["saturation"]} == {"arc_easy"}
    data = json.loads(invoke(fixture_run.root, "--json", "--metric", "ter").output)
    assert data["columns"] == ["task/ter"]
    assert [m["metric"] for m in data["analysis"]["early_vs_final"]["metrics"]] == ["ter"]
    result = invoke(fixture_run.root, "--suite", "nope")
    assert isinstance(result.exception, CuratuneError)
    assert "--suite nope: no such suite" in str(result.exception)


def test_report_on_empty_and_foreign_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(empty)
    assert isinstance(result.exception, CuratuneError) and "is empty: not a curatune run directory" in str(result.exception)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    result = invoke(foreign)
    assert "has no manifest.json" in str(result.exception)
    assert "no such folder" in str(invoke(tmp_path / "missing").exception)


def test_report_on_empty_folder_exits_2_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["curatune", "report", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a curatune run directory" in err and "Traceback" not in err


def test_report_before_evaluation(run_copy):
    shutil.rmtree(run_copy.eval)
    result = invoke(run_copy.root)
    assert result.exit_code == 0, result.output
    assert "No evaluation yet" in result.output


def test_report_recomputes_a_stale_or_missing_analysis(run_copy):
    run_copy.analysis.unlink()
    run_copy.saturation_curves.unlink()
    assert invoke(run_copy.root, "--json").exit_code == 0
    assert run_copy.analysis.exists() and run_copy.saturation_curves.exists()
    first = read_json(run_copy.analysis)["generated"]
    # scores.parquet newer than the analysis -> recomputed
    os.utime(run_copy.analysis, (1, 1))
    assert invoke(run_copy.root, "--json").exit_code == 0
    assert run_copy.analysis.stat().st_mtime > 1
    assert read_json(run_copy.analysis)["generated"] >= first


def test_report_shows_analysis_errors_next_to_the_scores(run_copy):
    config = yaml.safe_load(run_copy.config.read_text())
    config["evaluate"]["analysis"]["task_suites"] = ["translation"]
    run_copy.config.write_text(yaml.safe_dump(config))
    result = invoke(run_copy.root)
    assert result.exit_code == 0, result.output
    assert "Scores" in result.output
    assert "analysis unavailable" in result.output and "translation" in result.output


def test_report_on_damaged_scores_is_a_clear_error(run_copy):
    run_copy.scores.write_bytes(b"not parquet")
    result = invoke(run_copy.root)
    assert isinstance(result.exception, CuratuneError)
    assert "scores.parquet: not a readable parquet file" in str(result.exception)


def test_report_on_a_run_that_only_curated(tmp_path):
    from curatune.rundir import atomic_write_json

    run = RunDir(tmp_path / "early")
    run.write_manifest({"name": "only-curated"}, "curate")
    atomic_write_json(run.curate_report, {"input_records": 10, "kept": 7, "removed_by_reason": {"exact_duplicate": 3}})
    result = invoke(run.root)
    assert result.exit_code == 0, result.output
    assert "only-curated" in result.output and "10 records in = 7 kept + 3 dropped" in result.output
    assert "sweep   not run" in result.output and "No evaluation yet" in result.output


def test_report_prints_user_text_literally(run_copy):
    from curatune.rundir import atomic_write_json

    atomic_write_json(run_copy.cell("full", 400, 1) / "failed.json",
                      {"error": "[bold]IndexError[/bold]: list index [0] out of range", "traceback": "", "when": ""})
    result = invoke(run_copy.root)
    assert "[bold]IndexError[/bold]: list index [0] out of range" in result.output


@pytest.mark.parametrize(
    "options",
    [
        dict(methods=("qlora",), sizes=(100, 200), seeds=(0,), early=False, samples=False, failed_cell=None),
        dict(methods=("lora", "full", "qlora"), sizes=(50, 100, 200), seeds=(0, 1), n_items=12, samples=False),
    ],
    ids=["two-sizes-one-seed-no-early", "three-methods-three-sizes"],
)
def test_report_on_fixture_variants(tmp_path, options):
    run = build_fixture_run(tmp_path / "run", n_bootstrap=10, **options)
    result = invoke(run.root)
    assert result.exit_code == 0, result.output
    analysis = read_json(run.analysis)
    statuses = {s["status"] for s in analysis["saturation"]}
    if len(options["sizes"]) == 2:
        assert statuses == {"insufficient sizes"} and "insufficient sizes" in result.output
        assert all(m["spearman"] is None for m in analysis["early_vs_final"]["metrics"])
        assert "no early-checkpoint scores" in result.output
    else:
        assert statuses == {"interpolated"}
        assert {p["method"] for p in analysis["pareto"]} == {"base", "lora", "full", "qlora"}


def _chat(*texts: str) -> dict:
    return {"messages": [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]}


def test_report_states_the_accounting_for_records_and_turns_with_trims(tmp_path):
    """With trims the ledger has more rows than records dropped: in == kept + len(removed.parquet)
    is false, and the report states what holds: records in = kept (trimmed ones among them) + dropped,
    turns in = kept + removed."""
    from curatune.config import validate_config
    from curatune.curate.stage import run_curate

    good = ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level.")
    rows = [
        # a clean first exchange, then a refusal: trimmed to the first exchange
        _chat(*good, "And can you tell me how to pick a lock?", "I'm sorry, but I cannot help with that request."),
        # an empty assistant turn: that exchange goes, the rest is kept (a trim)
        _chat("Name a large ocean, please.", "", "Name the largest ocean on Earth.", "The Pacific Ocean is the largest."),
        _chat("Which planet is known as the red planet?", "Mars is known as the red planet because of iron oxide."),
        _chat("Which planet is known as the red planet?", "Mars is known as the red planet because of iron oxide."),
        _chat("Who wrote the play Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet around 1595."),
    ]
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = validate_config({"run_dir": str(tmp_path / "run"), "data": {"sources": [{"path": str(source)}]},
                              "curate": {"progress": False}})
    run = RunDir(config.run_dir)
    run_curate(config, run, force=True)
    report = read_json(run.curate_report)
    kept, removed = pd.read_parquet(run.kept), with_ledger_defaults(pd.read_parquet(run.removed))
    trims, drops = removed[removed["action"] == "trim"], removed[removed["action"] == "drop"]
    assert len(trims) == 2 and len(drops) == 1  # the refusal and the empty turn; the exact duplicate
    assert report["input_records"] == 5 != len(kept) + len(removed)  # the old statement fails with trims
    assert report["input_records"] == len(kept) + len(drops) == report["kept"] + report["removed"]
    assert set(trims["kept_as"]) <= set(kept["id"])  # trimmed records are among the kept
    assert report["turns_in"] == sum(len(r["messages"]) for r in rows) == 14
    assert report["turns_in"] == report["turns_kept"] + report["turns_removed"] == kept["messages"].map(len).sum() + 2 + 2 + 2

    data = json.loads(runner.invoke(app, ["report", str(run.root), "--json"]).output)
    accounting = data["run"]["curate"]["accounting"]
    assert accounting["records"] == {"in": 5, "kept": 4, "dropped": 1, "trimmed": 2, "kept_trimmed": 2, "holds": True}
    assert accounting["turns"] == {"in": 14, "kept": 8, "removed": 6, "holds": True}
    out = invoke(run.root).output
    assert "5 records in = 4 kept (2 of them trimmed: turns cut, each in the ledger) + 1 dropped" in out
    assert "turns (messages): 14 in = 8 kept + 6 removed" in out and "does not add up" not in out


def test_report_says_when_the_curation_counts_do_not_add_up(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_manifest({"name": "bad-counts"}, "curate")
    atomic_write_json(run.curate_report, {"input_records": 10, "kept": 8, "removed_by_reason": {"exact_duplicate": 3},
                                          "turns_in": 20, "turns_kept": 16, "turns_removed": 6})
    out = invoke(run.root).output
    assert "10 records in = 8 kept + 3 dropped (does not add up" in out
    assert "20 in = 16 kept + 6 removed (by drops and trims) (does not add up" in out
