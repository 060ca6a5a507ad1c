"""The lm_eval suite kind: lm-evaluation-harness tasks from local YAML files, end to end.

The fixtures in tests/fixtures/lmeval are task YAMLs in lm-eval's own format over local JSONL
files (a multiple-choice task, the same items with another prompt, a group of the two, and a
gsm8k-style generation task with lm-eval's gsm8k filters), so everything runs offline. Tests
that run lm-eval skip when it is not installed (it is the optional `curatune[lmeval]` extra);
the tests of what happens without it run everywhere.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from curatune.cli import app
from curatune.config import validate_config
from curatune.curate.decontaminate import lm_eval_data_files
from curatune.errors import ConfigError
from curatune.evaluate.config import LmEvalSuite
from curatune.evaluate.runner import run_evaluate
from curatune.preflight import config_problems
from curatune.rundir import read_json
from tests.test_eval_runner import make_run

FIXTURES = Path(__file__).parent / "fixtures" / "lmeval"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tasks_dir(tmp_path) -> Path:
    """A copy of the fixture tasks (lm-eval and `datasets` may write next to nothing, but a test
    should not depend on the repository's folder)."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "tasks"))


def lm_eval_config(run, model_dir: Path, tasks: Path, **overrides):
    settings = {
        "stages": ["base", "final"],
        "suites": [
            {"name": "mc", "kind": "lm_eval", "path": str(tasks / "tiny_mc.yaml"), "num_fewshot": 2,
             "batch_size": 4},
            {"name": "gsm", "kind": "lm_eval", "path": str(tasks / "tiny_gsm.yaml"), "num_fewshot": 1, "limit": 3,
             "gen_kwargs": {"max_gen_toks": 6}},
        ],
        "analysis": {"n_bootstrap": 0, "task_suites": ["gsm"]},
    }
    settings.update(overrides)
    return validate_config({
        "run_dir": str(run.root),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "evaluate": settings,
    })


# ----------------------------------------------------------------------------- without lm-eval


@pytest.fixture()
def no_lm_eval(monkeypatch):
    """lm-eval made unimportable, as on a default install (a None entry makes `import` fail)."""
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)


def test_missing_lm_eval_is_one_clear_error_before_any_model_loads(no_lm_eval, tmp_path, tasks_dir):
    run = make_run(tmp_path / "run", tmp_path / "model", cells=())
    config = lm_eval_config(run, tmp_path / "model", tasks_dir)  # no model: the error comes before loading one
    with pytest.raises(ConfigError) as caught:
        run_evaluate(config, run, progress=False)
    message = str(caught.value)
    assert "suite 'mc' (kind lm_eval)" in message and "pip install 'curatune[lmeval]'" in message
    assert not run.scores.exists()

    # `curatune config check` says the same before anything runs; `curatune evaluate` stops with it
    assert any("evaluate.suites.0: suite 'mc'" in p and "curatune[lmeval]" in p for p in config_problems(config))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.resolved()), encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", str(config_file), "--no-progress"])
    assert isinstance(result.exception, ConfigError) and "pip install 'curatune[lmeval]'" in str(result.exception)


def test_suite_needs_a_task_or_a_path():
    with pytest.raises(ValueError, match="give task"):
        LmEvalSuite(name="x")
    with pytest.raises(ValueError):
        LmEvalSuite(name="x", task="gsm8k", fewshot=5)  # misspelt key: refused, not ignored
    spec = LmEvalSuite(name="x", task="gsm8k", num_fewshot=5, gen_kwargs={"max_gen_toks": 64, "until": ["Q:"]})
    assert spec.scorer == "curatune" and spec.fewshot_seed == 1234


def test_decontamination_reads_the_yaml_data_files_not_the_yaml(tasks_dir):
    files = lm_eval_data_files(str(tasks_dir / "tiny_mc_qa.yaml"))  # its data files come through include:
    assert files == [(tasks_dir / "mc.jsonl").resolve()]
    assert {f.name for f in lm_eval_data_files(str(tasks_dir))} == {"mc.jsonl", "gsm.jsonl"}


def _loaded(leaves: dict, name: str, filters: dict | None = None):
    from curatune.evaluate.lmeval_tasks import LoadedTasks

    return LoadedTasks(name, [], leaves, {leaf: 2 for leaf in leaves}, filters or {leaf: "none" for leaf in leaves},
                       None, None, lm_eval_version="0.4.13")


def test_conversion_of_lm_eval_output_types_without_lm_eval(no_lm_eval):
    """lm-eval's per-sample log (shapes as in 0.4.13) becomes per-item columns the paired tests read:
    0/1 values, log-likelihoods for perplexities (ratio test), no column for list-valued metrics."""
    from types import SimpleNamespace

    from curatune.evaluate.lmeval_tasks import convert_results

    spec = LmEvalSuite(name="x", task="tag_of_two")
    generate, rolling, lambada = (SimpleNamespace(OUTPUT_TYPE=t) for t in
                                  ("generate_until", "loglikelihood_rolling", "loglikelihood"))
    out = {
        "results": {"ifeval_like": {"prompt_level_strict_acc,none": 0.5, "inst_level_strict_acc,none": 0.75,
                                    "prompt_level_strict_acc_stderr,none": "N/A"}},
        "versions": {"ifeval_like": 4.0}, "n-shot": {"ifeval_like": 0},
        "samples": {"ifeval_like": [
            {"doc_id": d, "doc": {}, "target": "", "arguments": [("Write two lines.", {"until": []})],
             "resps": [[f"answer {d}"]], "filtered_resps": [f"answer {d}"], "filter": "none",
             "metrics": ["prompt_level_strict_acc", "inst_level_strict_acc"],
             "prompt_level_strict_acc": bool(d), "inst_level_strict_acc": [True, bool(d)]} for d in (0, 1)]},
    }
    run = convert_results(out, spec, _loaded({"ifeval_like": generate}, "ifeval_like"))
    assert run.metrics == {"prompt_level_strict_acc": 0.5, "inst_level_strict_acc": 0.75}
    frame = pd.DataFrame(run.per_item)
    assert list(frame["prompt_level_strict_acc"]) == [0.0, 1.0] and "inst_level_strict_acc" not in frame.columns
    assert list(frame["output"]) == ["answer 0", "answer 1"] and list(frame["example_id"]) == ["ifeval_like/0",
                                                                                                  "ifeval_like/1"]
    assert any("inst_level_strict_acc" in note and "no paired test" in note for note in run.notes)
    assert "lm-eval:0.4.13|task:ifeval_like|version:4.0|num_fewshot:0" in run.signature

    # a tag (no aggregate of its own): wikitext-like rolling perplexity and lambada-like loglikelihood
    out = {
        "results": {"wiki": {"word_perplexity,none": 9.0}, "lamb": {"acc,none": 0.5, "perplexity,none": 3.0}},
        "higher_is_better": {"wiki": {"word_perplexity": False}, "lamb": {"acc": True, "perplexity": False}},
        "samples": {
            "wiki": [{"doc_id": 0, "target": "", "arguments": [("text",)], "resps": [[-20.0]],
                      "filtered_resps": [-20.0], "filter": "none", "metrics": ["word_perplexity"],
                      "word_perplexity": (-20.0, 10)}],
            "lamb": [{"doc_id": d, "target": " word", "arguments": [("ctx", " word")], "resps": [[(-1.0, True)]],
                      "filtered_resps": [(-1.0, True)], "filter": "none", "metrics": ["perplexity", "acc"],
                      "perplexity": -1.0 - d, "acc": 1 - d} for d in (0, 1)],
        },
    }
    run = convert_results(out, spec, _loaded({"wiki": rolling, "lamb": lambada}, "tag_of_two"))
    frame = pd.DataFrame(run.per_item).set_index("example_id")
    assert frame.loc["wiki/0", "loglik"] == -20.0 and frame.loc["wiki/0", "n_words"] == 10
    assert list(frame.loc[["lamb/0", "lamb/1"], "loglik"]) == [-1.0, -2.0]
    assert frame.loc["lamb/1", "perplexity"] == pytest.approx(np.exp(2.0))
    assert run.metrics["acc"] == 0.5 and any("no aggregate" in note for note in run.notes)
    # aggregated as lm-eval aggregates them: exp(-summed log-likelihood / words), exp(-mean log-likelihood)
    assert run.metrics["word_perplexity"] == pytest.approx(np.exp(2.0))
    assert run.metrics["perplexity"] == pytest.approx(np.exp(1.5))


# ----------------------------------------------------------------------------- with lm-eval


@pytest.mark.slow
def test_local_yaml_tasks_end_to_end(tmp_path, tiny_model_dir, tasks_dir):
    pytest.importorskip("lm_eval")
    run = make_run(tmp_path / "run", tiny_model_dir)
    config = lm_eval_config(run, tiny_model_dir, tasks_dir)
    summary = run_evaluate(config, run, progress=False)
    assert summary["scored"] == 4 and not summary["failed_models"]

    scores = pd.read_parquet(run.scores)
    assert set(zip(scores["suite"], scores["metric"])) == {("mc", "acc"), ("mc", "acc_norm"), ("gsm", "exact_match")}
    assert set(scores["cell"]) == {"base", "full-n4-s0"}
    signatures = read_json(run.signatures)
    assert "num_fewshot:2" in signatures["mc"]["acc"] and "filter:strict-match" in signatures["gsm"]["exact_match"]

    for cell, stage in (("base", "base"), ("full-n4-s0", "final")):
        mc = pd.read_parquet(run.sample_file("mc", cell, stage))
        assert list(mc["example_id"]) == [f"tiny_mc/{i}" for i in range(8)]
        assert {"prompt", "reference", "output", "acc", "acc_norm", "logliks"} <= set(mc.columns)
        assert mc["prompt"].str.count("Question:").eq(3).all()  # two few-shot examples, then the item
        rows = scores[(scores["cell"] == cell) & (scores["suite"] == "mc")].set_index("metric")
        for metric in ("acc", "acc_norm"):
            assert rows.loc[metric, "value"] == pytest.approx(mc[metric].mean())
            assert rows.loc[metric, "n_items"] == 8
        # acc is whether the choice with the highest log-likelihood is the gold one
        gold = [json.loads(line)["answer"] for line in (tasks_dir / "mc.jsonl").read_text().splitlines()]
        assert list(mc["acc"]) == [float(np.argmax(ll) == g) for ll, g in zip(mc["logliks"], gold)]

        gsm = pd.read_parquet(run.sample_file("gsm", cell, stage))
        assert len(gsm) == 3 and gsm["example_id"].str.startswith("tiny_gsm/").all()
        assert {"output", "extracted", "exact_match"} <= set(gsm.columns)
        assert gsm["reference"].str.contains("####").all()
    # the same fixed subset of gsm items for every model
    base_ids = pd.read_parquet(run.sample_file("gsm", "base", "base"))["example_id"].tolist()
    assert pd.read_parquet(run.sample_file("gsm", "full-n4-s0", "final"))["example_id"].tolist() == base_ids

    # the paired tests run on the per-item samples: McNemar on acc, with the discordant items counted from them
    analysis = read_json(run.analysis)
    row = next(r for r in analysis["learning_forgetting"] if r["cell"] == "full-n4-s0" and r["stage"] == "final")
    test = row["significance"]["mc"]
    assert test["test"] == "mcnemar_exact"
    base = pd.read_parquet(run.sample_file("mc", "base", "base")).set_index("example_id")
    tuned = pd.read_parquet(run.sample_file("mc", "full-n4-s0", "final")).set_index("example_id")
    metric = test["metric"]
    assert metric == "acc_norm" and test["n_items"] == 8
    worse = int(((base[metric] == 1) & (tuned[metric] == 0)).sum())
    better = int(((base[metric] == 0) & (tuned[metric] == 1)).sum())
    assert test["discordant"] == {"worse": worse, "better": better}

    # resume: nothing is scored twice
    again = run_evaluate(config, run, progress=False)
    assert again["scored"] == 0 and again["reused"] == 4


@pytest.mark.slow
def test_scores_agree_with_lm_eval_itself(tmp_path, tiny_model_dir, tasks_dir, monkeypatch):
    """The suite's numbers are lm-eval's: simple_evaluate with HFLM loading the model from its folder
    (run from the tasks' folder: plain lm-eval takes relative data_files against the working directory)."""
    pytest.importorskip("lm_eval")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    run = make_run(tmp_path / "run", tiny_model_dir, cells=())
    config = lm_eval_config(run, tiny_model_dir, tasks_dir, stages=["base"])
    run_evaluate(config, run, progress=False)
    ours = pd.read_parquet(run.sample_file("mc", "base", "base"))

    monkeypatch.chdir(tasks_dir)
    lm = HFLM(pretrained=str(tiny_model_dir), dtype="float32", device="cpu", batch_size=4)
    manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=["tiny_mc"], task_manager=manager, num_fewshot=2, log_samples=True,
                          bootstrap_iters=0)
    theirs = sorted(out["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    assert list(ours["acc"]) == [float(s["acc"]) for s in theirs]
    assert list(ours["acc_norm"]) == [float(s["acc_norm"]) for s in theirs]
    assert list(ours["prompt"]) == [s["arguments"][0][0] for s in theirs]
    their_ll = [[float(r[0]) for r in s["filtered_resps"]] for s in theirs]
    np.testing.assert_allclose(np.concatenate(ours["logliks"].tolist()), np.concatenate(their_ll), atol=1e-4)
    scores = pd.read_parquet(run.scores).set_index(["suite", "metric"])["value"]
    assert scores[("mc", "acc")] == pytest.approx(out["results"]["tiny_mc"]["acc,none"])


def test_fast_scorer_and_lm_eval_scorer_agree_item_by_item(tiny_model_dir, tasks_dir):
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.evaluate import lmeval_tasks

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    results = {}
    for scorer in ("curatune", "lm_eval"):
        spec = LmEvalSuite(name="g", path=str(tasks_dir), task="tiny_group", num_fewshot=3, batch_size=3, scorer=scorer)
        loaded = lmeval_tasks.load_tasks(spec)
        loaded.doc_ids = {leaf: list(range(n)) for leaf, n in loaded.n_docs.items()}
        results[scorer] = lmeval_tasks.run_tasks(model, tokenizer, spec, loaded, progress=False)
    fast, reference = (pd.DataFrame(results[s].per_item) for s in ("curatune", "lm_eval"))
    assert len(fast) == 16 and list(fast["example_id"]) == list(reference["example_id"])
    assert list(fast["acc"]) == list(reference["acc"]) and list(fast["acc_norm"]) == list(reference["acc_norm"])
    np.testing.assert_allclose(np.concatenate(fast["logliks"].tolist()),
                               np.concatenate(reference["logliks"].tolist()), atol=1e-4)
    # the group's aggregate (weight_by_size) is the mean over all its items
    assert results["curatune"].metrics["acc"] == pytest.approx(fast["acc"].mean())


def test_group_limit_and_bad_names(tiny_model_dir, tasks_dir):
    pytest.importorskip("lm_eval")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.evaluate.suites import EvalContext, LmEvalTask

    config = validate_config({"model": {"base": str(tiny_model_dir)}, "evaluate": {"seed": 3}})
    ctx = EvalContext(config, run_dir=None, progress=False)
    suite = LmEvalTask(LmEvalSuite(name="g", path=str(tasks_dir), task="tiny_group", limit=3), ctx)
    assert {leaf: len(ids) for leaf, ids in suite.items.doc_ids.items()} == {"tiny_mc": 3, "tiny_mc_qa": 3}
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    score = suite.score(model, AutoTokenizer.from_pretrained(tiny_model_dir), "base")
    expected = [f"{leaf}/{i}" for leaf, ids in suite.items.doc_ids.items() for i in ids]
    assert list(score.samples["example_id"]) == expected and score.n_items["acc"] == 6
    # the built tasks serve every model of the run: a second model gets what a first one would
    again = suite.score(model, AutoTokenizer.from_pretrained(tiny_model_dir), "final")
    pd.testing.assert_frame_equal(again.samples, score.samples)
    before = suite.fingerprint()
    assert LmEvalTask(LmEvalSuite(name="g", path=str(tasks_dir), task="tiny_group", limit=3), ctx).fingerprint() == before

    # a changed data file changes the fingerprint (the suite is rescored)
    with open(tasks_dir / "mc.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"question": "Which is hot?", "choices": ["fire", "snow"], "answer": 0}) + "\n")
    assert LmEvalTask(LmEvalSuite(name="g", path=str(tasks_dir), task="tiny_group", limit=3), ctx).fingerprint() != before

    for spec, message in (
        (LmEvalSuite(name="b", path=str(tasks_dir), task="tiny_mcc"), "did you mean tiny_mc"),
        (LmEvalSuite(name="b", path=str(tasks_dir)), "found: tiny_group, tiny_gsm, tiny_mc, tiny_mc_qa"),
        (LmEvalSuite(name="b", path=str(tasks_dir / "tiny_gsm.yaml"), filter="loose"),
         "its filters: strict-match, flexible-extract"),
    ):
        with pytest.raises(ConfigError, match=message):
            LmEvalTask(spec, ctx).fingerprint()
