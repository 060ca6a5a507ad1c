"""`curatune evaluate` end to end on the tiny model: long-form scores, samples, resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from curatune.config import validate_config
from curatune.errors import ConfigError
from curatune.evaluate.report import ensure_analysis
from curatune.evaluate import runner as runner_module
from curatune.evaluate.runner import PartStore, Target, evaluate_hook, run_evaluate
from curatune.models import load_cell_model
from curatune.evaluate.suites import Suite
from curatune.records import Record, records_to_frame
from curatune.rundir import SCORE_COLUMNS, CellInfo, RunDir, atomic_write_json, atomic_write_parquet, read_json

MC_ITEMS = [
    {"query": "Question: Which object is a magnet attracted to? Answer:", "choices": ["iron nail", "glass", "wood"], "gold": 0},
    {"query": "Question: What colour is the sky on a clear day? Answer:", "choices": ["green", "blue"], "gold": 1},
    {"query": "Question: What do cows drink? Answer:", "choices": ["water", "milk", "oil", "sand"], "gold": 0},
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def heldout_records(n: int = 5) -> list[Record]:
    colours = ["red", "blue", "green", "black", "white", "grey"]
    return [
        Record.make(
            [
                {"role": "user", "content": f"Extract brand and colour as JSON: Acme {colours[i % 6]} mug no. {i}"},
                {"role": "assistant", "content": json.dumps({"brand": "Acme", "colour": colours[i % 6]})},
            ],
            category="mugs",
            source="synthetic",
        )
        for i in range(n)
    ]


def _save_cell_weights(model_dir: Path, out: Path, noise_seed: int | None) -> None:
    """A copy of the tiny model as a 'full' cell's weights; noise makes it a different model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if noise_seed is not None:
        generator = torch.Generator().manual_seed(noise_seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def make_run(root: Path, model_dir: Path, cells=(("full", 4, 0, "done"),), n_heldout: int = 5) -> RunDir:
    """A run dir as the sweep leaves it (contract in curatune/rundir.py), without training."""
    run = RunDir(root)
    atomic_write_parquet(run.heldout, records_to_frame(heldout_records(n_heldout)))
    plan = {"cells": [], "sizes": sorted({c[1] for c in cells}), "seeds": sorted({c[2] for c in cells}),
            "methods": sorted({c[0] for c in cells})}
    for k, (method, size, seed, status) in enumerate(cells):
        path = run.cell(method, size, seed)
        plan["cells"].append({"method": method, "size": size, "seed": seed, "path": str(path.relative_to(run.root))})
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / "cell.json", {"method": method, "size": size, "seed": seed, "started": f"t{k}"})
        if status == "failed":
            atomic_write_json(path / "failed.json", {"error": "boom", "traceback": "", "when": "now"})
            continue
        weights = {"early": "early", "final": "final"} if status == "done" else {"early": None, "final": None}
        if status == "done":
            _save_cell_weights(model_dir, path / "early", noise_seed=10 + k)
            _save_cell_weights(model_dir, path / "final", noise_seed=20 + k)
        atomic_write_json(path / "done.json", {
            "method": method, "size": size, "seed": seed, "train_examples": size, "steps": 2, "epochs": 1,
            "wall_seconds": 1.0, "tokens_per_second": 1.0, "final_loss": 1.0, "early_step": 1, "weights": weights,
        })
    atomic_write_json(run.plan, plan)
    return run


def make_config(run: RunDir, model_dir: Path, tmp_path: Path, **evaluate):
    mc_path = tmp_path / "mc.jsonl"
    mc_path.write_text("".join(json.dumps(i) + "\n" for i in MC_ITEMS), encoding="utf-8")
    settings = {
        "suites": [
            {"name": "task", "kind": "generation", "metrics": ["exact_match", "field_f1", "chrf", "bleu", "ter"],
             "max_new_tokens": 8},
            {"name": "mc", "kind": "multiple_choice", "path": str(mc_path), "batch_size": 4},
        ],
        "analysis": {"n_bootstrap": 0},
    }
    settings.update(evaluate)
    return validate_config({
        "run_dir": str(run.root),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "evaluate": settings,
    })


@pytest.fixture()
def run_and_config(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir)
    return run, make_config(run, tiny_model_dir, tmp_path)


def test_scores_are_long_form_with_samples_and_signatures(run_and_config):
    run, config = run_and_config
    summary = run_evaluate(config, run, progress=False)

    scores = pd.read_parquet(run.scores)
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores["size"].dtype == "int64" and scores["seed"].dtype == "int64"
    assert scores["n_items"].dtype == "int64" and scores["value"].dtype == "float64"
    assert not scores.duplicated(["cell", "stage", "suite", "metric"]).any()
    models = set(zip(scores["cell"], scores["stage"]))
    assert models == {("base", "base"), ("full-n4-s0", "early"), ("full-n4-s0", "final")}
    base = scores[scores["stage"] == "base"].iloc[0]
    assert (base["method"], base["size"], base["seed"]) == ("base", 0, 0)
    cell = scores[scores["cell"] == "full-n4-s0"].iloc[0]
    assert (cell["method"], cell["size"], cell["seed"]) == ("full", 4, 0)
    task = set(scores.loc[scores["suite"] == "task", "metric"])
    assert task == {"exact_match", "field_f1", "json_valid", "chrf", "bleu", "ter"}
    assert set(scores.loc[scores["suite"] == "mc", "metric"]) == {"acc", "acc_norm"}
    assert set(scores.loc[scores["suite"] == "task", "n_items"]) == {5}
    assert set(scores.loc[scores["suite"] == "mc", "n_items"]) == {3}
    assert summary["scored"] == 6 and summary["reused"] == 0 and summary["score_rows"] == len(scores)

    for cell_key, stage in models:
        samples = pd.read_parquet(run.samples / "task" / f"{cell_key}__{stage}.parquet")
        assert list(samples.columns[:4]) == ["example_id", "prompt", "reference", "output"]
        assert len(samples) == 5 and samples["example_id"].is_unique
        for metric in task:  # one float column per metric; field_f1's mean is the score
            assert samples[metric].dtype == "float64"
        row = scores[(scores.cell == cell_key) & (scores.stage == stage) & (scores.suite == "task")]
        value = dict(zip(row.metric, row.value))
        assert samples["field_f1"].mean() == pytest.approx(value["field_f1"])
        assert samples["exact_match"].mean() == pytest.approx(value["exact_match"])
        assert (run.samples / "mc" / f"{cell_key}__{stage}.parquet").exists()
    # different models, different answers: the cells were really loaded
    outputs = {
        stage: tuple(pd.read_parquet(run.samples / "task" / f"{c}__{stage}.parquet")["output"]) for c, stage in models
    }
    assert len(set(outputs.values())) > 1

    signatures = read_json(run.eval / "signatures.json")
    assert signatures["task"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert "nw:2" in signatures["task"]["chrf"]
    manifest = read_json(run.manifest)
    assert "finished" in manifest["stages"]["evaluate"]
    assert summary["analysis"] == "written" and run.analysis.exists()


def test_second_run_recomputes_nothing(run_and_config, monkeypatch):
    run, config = run_and_config
    run_evaluate(config, run, progress=False)
    before = pd.read_parquet(run.scores)
    parts = sorted((run.eval / "parts").rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in parts}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished unit was scored again")

    monkeypatch.setattr(Suite, "score", refuse)
    for cls in Suite.__subclasses__():
        monkeypatch.setattr(cls, "score", refuse)
    monkeypatch.setattr(runner_module, "load_cell_model", refuse)
    summary = run_evaluate(config, run, progress=False)
    assert summary["scored"] == 0 and summary["reused"] == 6
    assert {p: p.stat().st_mtime_ns for p in parts} == stamps
    pd.testing.assert_frame_equal(pd.read_parquet(run.scores), before)


def test_resume_scores_only_missing_or_changed_units(run_and_config, tiny_model_dir, tmp_path):
    run, config = run_and_config
    run_evaluate(config, run, progress=False)
    store = PartStore(run)
    # a unit lost (e.g. killed before its part was written) is scored again, alone
    store.path("mc", Target("full-n4-s0", "full", 4, 0, "early")).unlink()
    summary = run_evaluate(config, run, progress=False)
    assert (summary["scored"], summary["reused"]) == (1, 5)
    # a changed setting rescoring only the suite it affects
    changed = make_config(run, tiny_model_dir, tmp_path, limit_heldout=3)
    summary = run_evaluate(changed, run, progress=False)
    assert (summary["scored"], summary["reused"]) == (3, 3)
    scores = pd.read_parquet(run.scores)
    assert set(scores.loc[scores.suite == "task", "n_items"]) == {3}
    assert set(scores.loc[scores.suite == "mc", "n_items"]) == {3}


def test_a_new_comet_like_version_changes_only_the_suites_that_use_it(run_and_config, tiny_model_dir, tmp_path,
                                                                      monkeypatch):
    import curatune.evaluate.suites as suites_module
    from curatune.evaluate.suites import EvalContext, build_suites, fingerprint_digest

    run, _ = run_and_config
    config = make_config(run, tiny_model_dir, tmp_path, suites=[
        {"name": "task", "kind": "generation", "metrics": ["chrf", "comet_like"], "max_new_tokens": 4},
        {"name": "plain", "kind": "generation", "metrics": ["chrf"], "max_new_tokens": 4},
    ])

    def prints():
        return {s.name: fingerprint_digest(s.fingerprint()) for s in build_suites(EvalContext(config, run, progress=False))}

    v1 = prints()
    monkeypatch.setattr(suites_module, "COMET_LIKE_VERSION", "2")
    v2 = prints()
    assert v2["task"] != v1["task"] and v2["plain"] == v1["plain"]


def test_a_suite_limited_to_some_stages_skips_the_others(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir)
    config = make_config(run, tiny_model_dir, tmp_path)
    config.evaluate.suites[1].stages = ["base", "final"]  # mc: no early checkpoint
    summary = run_evaluate(config, run, progress=False)
    assert (summary["scored"], summary["units"]) == (5, 5)
    scores = pd.read_parquet(run.scores)
    assert set(scores.loc[scores.suite == "mc", "stage"]) == {"base", "final"}
    assert set(scores.loc[scores.suite == "task", "stage"]) == {"base", "early", "final"}
    assert not (run.samples / "mc" / "full-n4-s0__early.parquet").exists()
    # the stage filter is not part of a suite's fingerprint: widening it scores only the new stage
    config.evaluate.suites[1].stages = None
    summary = run_evaluate(config, run, progress=False)
    assert (summary["scored"], summary["reused"]) == (1, 5)


def test_cells_all_requires_done_cells_done_skips(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir, cells=(("full", 4, 0, "done"), ("lora", 4, 0, "failed")))
    strict = make_config(run, tiny_model_dir, tmp_path, cells="all", stages=["base", "final"])
    with pytest.raises(ConfigError, match=r"lora-n4-s0 \(failed\)"):
        run_evaluate(strict, run, progress=False)
    lenient = make_config(run, tiny_model_dir, tmp_path, stages=["final"],
                          suites=[{"name": "task", "kind": "generation", "metrics": ["exact_match"], "max_new_tokens": 4}])
    summary = run_evaluate(lenient, run, progress=False)
    assert summary["skipped_cells"] == {"lora-n4-s0": "not done (failed)"}
    scores = pd.read_parquet(run.scores)
    assert set(zip(scores.cell, scores.stage)) == {("full-n4-s0", "final")}
    assert summary["analysis"] == "written"  # without base scores the analysis says so itself
    assert any("no base-model scores" in w for w in read_json(run.analysis)["warnings"])


def test_sweep_hook_scores_are_reused_and_missing_weights_reported(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir, cells=(("full", 4, 0, "done"), ("full", 8, 0, "done")))
    config = make_config(run, tiny_model_dir, tmp_path, stages=["final"])
    info = CellInfo.from_dir(run, "full", 8, 0)
    model, tokenizer = load_cell_model(info, "final", dtype="float32", device="cpu")
    evaluate_hook(info, "final", model, tokenizer, config, run)  # what the sweep calls
    assert (run.eval / "parts" / "task" / "full-n8-s0__final.json").exists()
    shutil.rmtree(run.cell("full", 8, 0) / "final")  # keep_weights = none deletes them afterwards
    done = read_json(run.cell("full", 8, 0) / "done.json")
    done["weights"] = {"early": None, "final": None}
    atomic_write_json(run.cell("full", 8, 0) / "done.json", done)

    summary = run_evaluate(config, run, progress=False)
    assert (summary["scored"], summary["reused"]) == (2, 2)  # n4 scored now, n8 from the hook
    assert summary["unavailable"] == {}
    scores = pd.read_parquet(run.scores)
    assert set(scores.cell) == {"full-n4-s0", "full-n8-s0"}

    # a new suite cannot be scored for a cell whose weights are gone: reported, not fatal
    more = make_config(run, tiny_model_dir, tmp_path, stages=["final"], suites=[
        {"name": "task", "kind": "generation", "metrics": ["exact_match", "field_f1", "chrf", "bleu", "ter"],
         "max_new_tokens": 8},
        {"name": "mc", "kind": "multiple_choice", "path": str(tmp_path / "mc.jsonl"), "batch_size": 4},
        {"name": "mc2", "kind": "multiple_choice", "path": str(tmp_path / "mc.jsonl"), "limit": 2},
    ])
    summary = run_evaluate(more, run, progress=False)
    assert summary["unavailable"] == {"full-n8-s0/final": ["mc2"]}
    assert summary["scored"] == 1


def test_unreadable_cell_weights_are_reported_and_the_rest_scored(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir, cells=(("full", 4, 0, "done"), ("full", 8, 0, "done")))
    (run.cell("full", 4, 0) / "final" / "model.safetensors").write_bytes(b"not safetensors" * 8)
    config = make_config(run, tiny_model_dir, tmp_path, stages=["final"])
    summary = run_evaluate(config, run, progress=False)
    assert list(summary["failed_models"]) == ["full-n4-s0/final"]
    assert set(pd.read_parquet(run.scores).cell) == {"full-n8-s0"}
    assert read_json(run.manifest)["stages"]["evaluate"]["failed_models"] == summary["failed_models"]


def test_missing_heldout_is_a_clear_error(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", tiny_model_dir, cells=())
    run.heldout.unlink()
    config = make_config(run, tiny_model_dir, tmp_path, stages=["base"])
    with pytest.raises(Exception, match="heldout.parquet: the held-out split is missing"):
        run_evaluate(config, run, progress=False)


def test_cli_evaluate_and_config_errors(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import sys

    import yaml

    from curatune.cli import main

    run = make_run(tmp_path / "run", tiny_model_dir, cells=())
    config = make_config(run, tiny_model_dir, tmp_path, stages=["base"])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config.resolved()), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["curatune", "evaluate", str(path), "--no-progress",
                                      "--set", "evaluate.limit_heldout=2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    scores = pd.read_parquet(run.scores)
    assert set(scores.loc[scores.suite == "task", "n_items"]) == {2}

    bad = config.resolved()
    bad["evaluate"]["suites"][1]["metrics"] = ["bleu"]  # metrics belong to generation suites only
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["curatune", "evaluate", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "evaluate.suites.1.multiple_choice.metrics: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "evaluate, message",
    [
        ({"suites": [{"name": "arc", "kind": "multiple_choice"}]}, "evaluate.suites.0.multiple_choice.path"),
        ({"suites": [{"name": "x", "kind": "generation"}, {"name": "x", "kind": "retention"}]}, "used twice"),
        ({"suites": [{"name": "t", "kind": "generation", "metrics": ["rouge"]}]}, "evaluate.suites.0.generation.metrics.0"),
        ({"suites": [{"name": "t", "kind": "nope"}]}, "evaluate.suites.0"),
        ({"suites": [{"name": "a b", "kind": "retention"}]}, "folder name"),
        ({"stages": ["base", "middle"]}, "evaluate.stages.1"),
        ({"cells": "some"}, "evaluate.cells"),
        ({"limit_heldout": 0}, "evaluate.limit_heldout"),
        ({"generation": {"max_new_tokens": 0}}, "evaluate.generation.max_new_tokens"),
    ],
)
def test_config_validation_errors_name_the_key(evaluate, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate_config({"evaluate": evaluate})


def test_default_suites_are_task_and_retention():
    config = validate_config({})
    suites = config.evaluate.effective_suites()
    assert [(s.name, s.kind) for s in suites] == [("task", "generation"), ("retention", "retention")]
    assert suites[0].path is None and suites[0].metrics is None  # held-out split, automatic metrics
    assert config.evaluate.stages == ["base", "early", "final"]


def test_loglik_suites_through_the_runner(tmp_path, tiny_model_dir):
    """multiple_choice, perplexity, lambada and retention suites score every model, and resume."""
    pytest.importorskip("curatune.evaluate.perplexity")
    pytest.importorskip("curatune.evaluate.retention")
    run = make_run(tmp_path / "run", tiny_model_dir)
    texts = tmp_path / "texts.txt"
    texts.write_text("The quick brown fox jumps over the lazy dog.\n\nA man is riding a bicycle.\n", encoding="utf-8")
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text(
        json.dumps({"context": "The quick brown fox jumps over the lazy", "continuation": "dog"}) + "\n"
        + json.dumps({"context": "Translate to German: A man is riding a", "continuation": "bicycle"}) + "\n",
        encoding="utf-8",
    )
    config = make_config(run, tiny_model_dir, tmp_path, stages=["base", "final"], suites=[
        {"name": "mc", "kind": "multiple_choice", "path": str(tmp_path / "mc.jsonl")},
        {"name": "wiki", "kind": "perplexity", "path": str(texts), "max_length": 32},
        {"name": "lambada", "kind": "lambada", "path": str(lambada)},
        {"name": "retention", "kind": "retention", "max_new_tokens": 4, "limit": 5},
    ])
    summary = run_evaluate(config, run, progress=False)
    assert summary["scored"] == 8
    scores = pd.read_parquet(run.scores)
    value = {(r.cell, r.suite, r.metric): r.value for r in scores.itertuples()}
    assert {"bits_per_byte", "word_perplexity"} <= set(scores.loc[scores.suite == "wiki", "metric"])
    assert {"acc", "perplexity"} <= set(scores.loc[scores.suite == "lambada", "metric"])
    assert value[("base", "retention", "kl_divergence")] == pytest.approx(0.0, abs=1e-6)  # base vs itself
    assert value[("full-n4-s0", "retention", "kl_divergence")] > 0  # a different model drifts
    assert len(list((run.eval / "retention").glob("retention-*.safetensors"))) == 1
    assert set(scores.loc[scores.suite == "wiki", "n_items"]) == {2}
    assert set(scores.loc[scores.suite == "retention", "n_items"]) == {5}  # limit: a fixed subset of prompts
    for suite in ("mc", "wiki", "lambada", "retention"):
        samples = pd.read_parquet(run.samples / suite / "full-n4-s0__final.parquet")
        assert list(samples.columns[:4]) == ["example_id", "prompt", "reference", "output"]
    assert run_evaluate(config, run, progress=False)["scored"] == 0


def test_default_suites_run_task_and_retention(tmp_path, tiny_model_dir):
    pytest.importorskip("curatune.evaluate.retention")
    run = make_run(tmp_path / "run", tiny_model_dir, cells=())
    config = validate_config({
        "run_dir": str(run.root),
        "model": {"base": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
        "evaluate": {"stages": ["base"], "limit_heldout": 3, "generation": {"max_new_tokens": 6},
                     "analysis": {"n_bootstrap": 0}},
    })
    summary = run_evaluate(config, run, progress=False)
    assert summary["suites"] == ["task", "retention"] and summary["analysis"] == "written"
    scores = pd.read_parquet(run.scores)
    # JSON references: the automatic metrics of an extraction task
    assert set(scores.loc[scores.suite == "task", "metric"]) == {"exact_match", "field_f1", "json_valid", "chrf",
                                                               "comet_like"}
    assert set(scores.loc[scores.suite == "task", "n_items"]) == {3}
    assert "kl_divergence" in set(scores.loc[scores.suite == "retention", "metric"])


def test_retention_without_answer_agreement_skips_generation(tmp_path, tiny_model_dir, monkeypatch):
    retention = pytest.importorskip("curatune.evaluate.retention")
    run = make_run(tmp_path / "run", tiny_model_dir)
    config = validate_config({
        "run_dir": str(run.root),
        "model": {"base": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
        "evaluate": {"stages": ["base", "final"], "analysis": {"n_bootstrap": 0},
                     "suites": [{"name": "retention", "kind": "retention", "limit": 4, "max_new_tokens": 4,
                                 "answer_agreement": False}]},
    })
    calls = []
    real = retention.greedy_answers
    monkeypatch.setattr(retention, "greedy_answers", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_evaluate(config, run, progress=False)
    assert len(calls) == 1  # the base model's reference answers, built once; no model answers again
    scores = pd.read_parquet(run.scores)
    assert set(scores.metric) == {"kl_divergence", "base_answer_logprob"}
    assert set(scores.stage) == {"base", "final"}


def test_unit_finished_by_another_evaluator_meanwhile_is_not_scored_again(run_and_config, monkeypatch):
    # Two `curatune evaluate` processes on one run (e.g. one per stage): a unit the other
    # process finished after this one planned its work is skipped, not scored twice.
    import curatune.evaluate.runner as runner

    run, config = run_and_config
    real_load, real_is_done = runner.Evaluator.load_model, runner.PartStore.is_done
    loaded: list[str] = []

    def load_model(self, target):
        loaded.append(target.label)
        return real_load(self, target)

    def is_done(self, suite, target, fingerprint):  # "finished elsewhere" once its model is loaded here
        return target.label == "full-n4-s0/final" and target.label in loaded or real_is_done(self, suite, target, fingerprint)

    monkeypatch.setattr(runner.Evaluator, "load_model", load_model)
    monkeypatch.setattr(runner.PartStore, "is_done", is_done)
    summary = run_evaluate(config, run, progress=False)
    assert "full-n4-s0/final" in loaded
    assert (summary["scored"], summary["reused"]) == (4, 2)
    assert not (run.eval / "parts" / "task" / "full-n4-s0__final.json").exists()


def test_merge_only_rebuilds_scores_from_finished_units_and_scores_nothing(run_and_config, tiny_model_dir, tmp_path):
    run, config = run_and_config
    # one process scored the task only, another the multiple choice; each rebuilt scores.parquet
    # from its own units, so the file holds whichever wrote last
    run_evaluate(make_config(run, tiny_model_dir, tmp_path, suites=[config.evaluate.suites[0]]), run, progress=False)
    run_evaluate(make_config(run, tiny_model_dir, tmp_path, suites=[config.evaluate.suites[1]]), run, progress=False)
    assert set(pd.read_parquet(run.scores).suite) == {"mc"}
    PartStore(run).path("mc", Target("full-n4-s0", "full", 4, 0, "final")).unlink()
    summary = run_evaluate(config, run, progress=False, score=False)
    assert (summary["scored"], summary["not_scored"], summary["reused"]) == (0, 1, 5)
    scores = pd.read_parquet(run.scores)
    assert set(scores.suite) == {"task", "mc"} and len(scores.groupby(["cell", "stage", "suite"])) == 5
    assert "finished" not in read_json(run.manifest)["stages"]["evaluate"]


def test_report_keeps_analysis_settings_changed_after_the_run(run_and_config):
    # evaluate.analysis edited after curation and training: `curatune evaluate --merge-only`
    # re-analyses with it, and the report and the app (ensure_analysis) must not undo that
    run, config = run_and_config
    run_evaluate(config, run, progress=False)
    assert ensure_analysis(run)["suites"]["primary_metrics"]["mc"] == "acc_norm"
    changed = config.model_copy(deep=True)
    changed.evaluate.analysis.primary_metrics = {"mc": "acc"}
    run_evaluate(changed, run, progress=False, score=False)
    assert read_json(run.analysis)["suites"]["primary_metrics"]["mc"] == "acc"
    assert ensure_analysis(run)["suites"]["primary_metrics"]["mc"] == "acc"


def test_retention_probe_on_the_heldout_prompts(tmp_path, tiny_model_dir):
    """kind retention, prompts heldout: the forward KL(base || tuned) on the task's own prompts."""
    from curatune.evaluate.suites import EvalContext, build_suites

    run = make_run(tmp_path / "run", tiny_model_dir)
    config = make_config(run, tiny_model_dir, tmp_path, stages=["base", "final"], suites=[
        {"name": "task_kl", "kind": "retention", "prompts": "heldout", "limit": 3, "max_new_tokens": 4},
        {"name": "retention", "kind": "retention", "limit": 3, "max_new_tokens": 4},
    ])
    run_evaluate(config, run, progress=False)
    scores = pd.read_parquet(run.scores)
    value = {(r.cell, r.suite, r.metric): r.value for r in scores.itertuples()}
    assert value[("base", "task_kl", "kl_divergence")] == pytest.approx(0.0, abs=1e-6)
    assert value[("full-n4-s0", "task_kl", "kl_divergence")] > 0
    samples = pd.read_parquet(run.sample_file("task_kl", "full-n4-s0", "final"))
    heldout = pd.read_parquet(run.heldout)
    assert set(samples["example_id"]) <= set(heldout["id"]) and len(samples) == 3
    # The general probe's fingerprint has no `prompts` key: runs scored before it existed are reused.
    suites = {s.name: s for s in build_suites(EvalContext(config, run, progress=False))}
    assert "prompts" not in suites["retention"].fingerprint()["suite"]
    assert suites["task_kl"].fingerprint()["suite"]["prompts"] == "heldout"
