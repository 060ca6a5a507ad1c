"""The pipeline runner (bookkeeping, invariant), config, run_curate and the CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from curatune.config import validate_config
from curatune.curate.base import CurateContext, Step, StepResult
from curatune.curate.config import CurateConfig, ExactDedupConfig, NearDupConfig, QualityConfig
from curatune.curate.pipeline import CurationPipeline
from curatune.errors import ConfigError
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record
from curatune.rundir import RunDir, read_json


def rec(prompt: str, response: str, category: str | None = "general") -> Record:
    return Record.make([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], category=category)


def load_rejection(row: int) -> dict:
    return {"id": f"bad{row}", "messages": [], "category": None, "source": f"f.jsonl:{row}", "meta": "{}",
            "step": "load", "reason": "invalid_json", "detail": "broken", "duplicate_of": None, "cluster_id": None}


def test_pipeline_bookkeeping_and_invariant():
    records = [rec("q1", "Answer one."), rec("Q1", "answer one"), rec("q2", ""), rec("q3", "Answer three.", "other")]
    rejected = pd.DataFrame([load_rejection(7)], columns=RECORD_COLUMNS + LEDGER_COLUMNS)
    steps = [ExactDedupConfig(), QualityConfig(), NearDupConfig(enabled=False)]
    result = CurationPipeline(steps, CurateContext(workers=1)).run(records, rejected)
    report = result.report
    assert report["input_records"] == 5
    assert report["kept"] == 2
    # The empty answer is caught by the repair pass that runs before the steps.
    assert report["removed_by_reason"] == {"invalid_json": 1, "exact_duplicate": 1, "empty_turn": 1}
    assert report["input_records"] == report["kept"] + sum(report["removed_by_reason"].values())
    assert report["turns_in"] == 8 == report["turns_kept"] + report["turns_removed"]
    assert [s["name"] for s in report["steps"]] == ["load", "repair", "exact", "quality", "near_dup"]
    assert report["steps"][4]["enabled"] is False
    assert all(s["seconds"] is not None for s in report["steps"][1:])
    assert report["categories_before"] == {"general": 3, "other": 1, "(none)": 1}
    assert report["categories_after"] == {"general": 1, "other": 1}
    assert list(result.removed.columns) == RECORD_COLUMNS + LEDGER_COLUMNS
    assert result.removed["step"].tolist() == ["load", "repair", "exact"]
    assert result.removed["action"].tolist() == ["drop"] * 3


def test_pipeline_catches_a_step_that_loses_records(monkeypatch):
    import curatune.curate.pipeline as pipeline

    class Leaky(Step):
        name = "exact"

        def run(self, records, context):
            return StepResult(records[1:], [])

    monkeypatch.setitem(pipeline.STEP_CLASSES, "exact", Leaky)
    with pytest.raises(RuntimeError, match="broke accounting"):
        CurationPipeline([ExactDedupConfig()]).run([rec("a", "b"), rec("c", "d")])


def test_pipeline_on_empty_input():
    result = CurationPipeline(CurateConfig().effective_steps(), CurateContext(workers=1)).run([])
    assert result.report["input_records"] == 0 and result.report["kept"] == 0 and result.kept == []


def test_config_discriminated_union_and_errors():
    cfg = CurateConfig.model_validate({"steps": [{"name": "near_dup", "threshold": 0.8}, {"name": "exact", "enabled": False}]})
    assert isinstance(cfg.steps[0], NearDupConfig) and cfg.steps[0].threshold == 0.8
    assert [s.name for s in CurateConfig().effective_steps()] == ["quality", "language", "exact", "near_dup", "decontaminate"]
    with pytest.raises(ConfigError, match="unknown step"):
        validate_config({"curate": {"steps": [{"name": "dedupe"}]}})
    with pytest.raises(ConfigError, match="curate.steps.0.near_dup.ngrams"):
        validate_config({"curate": {"steps": [{"name": "near_dup", "ngrams": 3}]}})


def _demo(tmp_path, n_train=400):
    from curatune.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path / "demo", n_train=n_train, n_heldout=20, seed=1)


def test_run_curate_on_demo_with_labels_and_resume(tmp_path):
    from curatune.curate.stage import run_curate

    paths = _demo(tmp_path)
    cfg = validate_config({"run_dir": str(tmp_path / "run"), "data": {"sources": [{"path": str(paths.train)}]},
                           "curate": {"progress": False, "workers": 1, "cache_dir": str(tmp_path / "cache")}})
    run_dir = RunDir(cfg.run_dir)
    report = run_curate(cfg, run_dir, labels=str(paths.labels))
    kept, removed = pd.read_parquet(run_dir.kept), pd.read_parquet(run_dir.removed)
    assert report["input_records"] == len(kept) + len(removed) == 400
    assert list(kept.columns) == RECORD_COLUMNS
    assert set(removed.columns) == set(RECORD_COLUMNS + LEDGER_COLUMNS)
    near = removed[removed.reason == "near_duplicate"]
    assert near.duplicate_of.notna().all() and near.cluster_id.notna().all()
    detection = report["detection"]["flaws"]
    assert detection["near_dup"]["precision"] >= 0.95 and detection["near_dup"]["recall"] >= 0.90
    for flaw in ("exact_dup", "truncated", "boilerplate", "wrong_language"):
        assert detection[flaw]["recall"] >= 0.9, (flaw, detection[flaw])
    on_disk = read_json(run_dir.curate_report)
    assert on_disk["kept"] == report["kept"]
    manifest = read_json(run_dir.manifest)
    assert manifest["stages"]["curate"]["finished"] and run_dir.config.exists()
    # Nothing changed: the finished report comes back without recomputing.
    again = run_curate(cfg, run_dir, labels=str(paths.labels))
    assert again.get("resumed") is True and again["kept"] == report["kept"]


def test_decontamination_uses_eval_suites_and_eval_sources(tmp_path):
    from curatune.curate.stage import run_curate

    train = tmp_path / "train.jsonl"
    questions = ["Which planet in our solar system has the most moons orbiting around it today?",
                 "Which colour do you get when mixing blue and yellow paint together in art class?",
                 "How many legs does a spider have, and how many does an insect have?"]
    rows = [{"instruction": q, "output": "An answer."} for q in questions]
    rows.append({"instruction": "Tell me a joke about cats.", "output": "Cats do not tell jokes, they only judge them."})
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"query": rows[1]["instruction"], "gold": 0}) + "\n")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"instruction": "Tell me a joke about cats.", "output": "Cats do not tell jokes, they only judge them."}) + "\n")
    cfg = validate_config({
        "run_dir": str(tmp_path / "run"),
        "data": {"sources": [{"path": str(train)}], "eval_sources": [{"path": str(heldout)}]},
        "evaluate": {"suites": [{"name": "mc", "kind": "multiple_choice", "path": str(suite)}]},
        "curate": {"progress": False, "workers": 1, "steps": [{"name": "decontaminate"}]},
    })
    report = run_curate(cfg, RunDir(cfg.run_dir))
    assert report["removed_by_reason"] == {"contaminated": 2}
    removed = pd.read_parquet(RunDir(cfg.run_dir).removed)
    assert sorted(removed.detail.str.contains("suite.jsonl").tolist()) == [False, True]
    # the ledger names each leaked evaluation item: the suite's line, and the held-out record by its id
    from curatune.data.loaders import load_sources

    held = load_sources(cfg.data.eval_sources).records[0]
    assert sorted(removed.eval_item, key=len) == ["suite.jsonl:1:query", f"{held.source}:{held.id}:response"]  # its prompt is too short to match


def test_cli_shortcut_and_config(tmp_path):
    from curatune.cli import app

    paths = _demo(tmp_path, n_train=200)
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["curate", "--input", str(paths.train), "--out", str(out), "--labels", str(paths.labels),
                                 "-q", "--set", "curate.workers=1"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "near_dup" in result.output and "detection" in result.output
    assert (out / "curate" / "report.json").exists()

    config = tmp_path / "exp.yaml"
    config.write_text(
        f"run_dir: {tmp_path / 'run2'}\n"
        f"data:\n  sources:\n    - path: {paths.train}\n"
        "curate:\n  progress: false\n  workers: 1\n  steps:\n    - name: exact\n    - name: near_dup\n      enabled: false\n"
        "    - name: balance\n      strategy: cap\n      max_per_group: 30\n"
    )
    result = runner.invoke(app, ["curate", str(config), "--set", "curate.workers=1", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = read_json(tmp_path / "run2" / "curate" / "report.json")
    assert [s["name"] for s in report["steps"]][-3:] == ["exact", "near_dup", "balance"]
    assert report["steps"][-2]["enabled"] is False
    assert max(report["categories_after"].values()) <= 30
    assert "balance_cap" in report["removed_by_reason"]


def test_cli_errors_are_clear(tmp_path):
    from curatune.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["curate", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "missing.jsonl" in str(result.exception)
    result = runner.invoke(app, ["curate"])
    assert "--input" in str(result.exception)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_self_instruct_and_gpteacher(shared_data, tmp_path):
    from curatune.curate.stage import run_curate

    si = shared_data / "instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
    files = sorted(si.glob("*.jsonl"))[:12]
    sources = [{"path": str(f), "category": "{file}"} for f in files]
    sources.append({"path": str(shared_data / "instruct/gpteacher/Roleplay")})
    cfg = validate_config({"run_dir": str(tmp_path / "run"), "data": {"sources": sources},
                           "curate": {"progress": False, "workers": 2}})
    report = run_curate(cfg, RunDir(cfg.run_dir))
    assert report["input_records"] == report["kept"] + sum(report["removed_by_reason"].values())
    assert report["kept"] > 0.3 * report["input_records"]
    assert len(report["categories_before"]) >= 12


def test_sharded_runs_then_cross_shard_dedup_match_one_run(tmp_path):
    """The documented recipe for data larger than memory gives the same survivors."""
    from curatune.cli import app

    paths = _demo(tmp_path, n_train=300)
    lines = paths.train.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:150]))
    (tmp_path / "b.jsonl").write_text("".join(lines[150:]))
    runner = CliRunner()
    common = ["-q", "--set", "curate.workers=1", "--set", f"curate.cache_dir={tmp_path / 'cache'}"]
    for shard in ("a", "b"):
        result = runner.invoke(app, ["curate", "--input", str(tmp_path / f"{shard}.jsonl"), "--out", str(tmp_path / f"run-{shard}"), *common])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["curate", "--input", str(tmp_path / "run-*/curate/kept.parquet"), "--out", str(tmp_path / "all"),
                                 "--set", "curate.steps=[{name: exact}, {name: near_dup}]", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["curate", "--input", str(paths.train), "--out", str(tmp_path / "single"), *common])
    assert result.exit_code == 0, result.output
    sharded = set(pd.read_parquet(tmp_path / "all/curate/kept.parquet").id)
    single = set(pd.read_parquet(tmp_path / "single/curate/kept.parquet").id)
    assert sharded == single


@pytest.mark.slow
def test_semantic_step_finds_the_demo_paraphrases(tmp_path):
    """The planted semantic duplicates (same product, reworded under another instruction)."""
    from curatune.curate.stage import run_curate

    paths = _demo(tmp_path, n_train=600)
    steps = [{"name": n} for n in ("exact", "quality", "language", "near_dup", "semantic", "decontaminate")]
    cfg = validate_config({"run_dir": str(tmp_path / "run"), "data": {"sources": [{"path": str(paths.train)}]},
                           "curate": {"progress": False, "workers": 1, "cache_dir": str(tmp_path / "cache"), "steps": steps}})
    report = run_curate(cfg, RunDir(cfg.run_dir), labels=str(paths.labels))
    detection = report["detection"]["flaws"]
    assert detection["semantic_dup"]["recall"] >= 0.8 and detection["semantic_dup"]["precision"] >= 0.9, detection
    assert detection["near_dup"]["precision"] >= 0.95 and detection["exact_dup"]["recall"] >= 0.95
    removed = pd.read_parquet(RunDir(cfg.run_dir).removed)
    semantic = removed[removed.reason == "semantic_duplicate"]
    assert semantic.duplicate_of.notna().all() and semantic.cluster_id.str.startswith("sem-").all()
    assert report["input_records"] == report["kept"] + sum(report["removed_by_reason"].values())
