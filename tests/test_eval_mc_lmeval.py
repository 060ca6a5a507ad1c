"""Our scorers vs EleutherAI lm-evaluation-harness on the tiny model (skipped without lm-eval).

lm-eval is a bench-only dependency; this runs when it is installed and checks, item by
item, that predictions are identical and log-likelihoods agree in float32.
"""
from __future__ import annotations

import json

import pytest
import torch

from curatune.evaluate.multiple_choice import MCItem, score_multiple_choice
from curatune.evaluate.perplexity import rolling_perplexity

lm_eval = pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: {output_type}
test_split: test
{fields}
metric_list:
{metrics}
metadata:
  version: 1.0
"""
ACC_METRICS = "  - metric: acc\n  - metric: acc_norm"
PPL_METRICS = "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte"

ITEMS = [
    MCItem("a", ("Question: Which object is a magnet attracted to?\nAnswer:",), ("iron nail", "glass", "a long wooden stick"), 0),
    MCItem("b", ("Question: How do I add two numbers in Python?\n",), ("def add(a, b): return a + b", "print(a)"), 0),
    MCItem("c", ("Translate to German: A man is riding a bicycle.",), ("Ein Mann fährt Fahrrad.", "Acme red M"), 1),
    MCItem("d", ("Extract the brand:",), ('{"brand": "Acme"}', '{"colour": "red", "size": "M"}', "cotton"), 2),
]
PARTIAL = [
    MCItem("w", ("The fox chased the dog so the fox", "The fox chased the dog so the dog"),
           ("The fox chased the dog so the fox", "The fox chased the dog so the dog"), 1, "ran away quickly."),
    MCItem("x", ("Acme", "The brand"), ("Acme", "The brand"), 0, "is red."),
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 8,
    'Extract the brand, colour and size from the product description as JSON. {"brand": "Acme"}',
]


def _evaluate(tmp_path, model_dir, name, rows, output_type, fields, metrics, max_length=None):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"{name}.yaml").write_text(TASK.format(name=name, data=json.dumps(str(data)), output_type=output_type,
                                                       fields=fields, metrics=metrics))
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=4, max_length=max_length)
    # include_defaults=False: only the task written here (indexing lm-eval's registry takes ~50 s)
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=[name], task_manager=manager,
                          num_fewshot=0, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    results = {k.split(",")[0]: v for k, v in out["results"][name].items()}
    return results, sorted(out["samples"][name], key=lambda s: s["doc_id"])


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_multiple_choice_matches_lm_eval(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    rows = [{"query": i.contexts[0], "choices": list(i.choices), "gold": i.gold} for i in ITEMS]
    theirs, samples = _evaluate(tmp_path, tiny_model_dir, "cur_mc", rows, "multiple_choice",
                                "doc_to_text: query\ndoc_to_target: gold\ndoc_to_choice: choices", ACC_METRICS)
    ours = score_multiple_choice(model, tok, ITEMS, batch_size=4, progress=False)
    for row, sample in zip(ours.per_item, samples):
        assert row["logliks"] == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
        assert (row["acc"], row["acc_norm"]) == (sample["acc"], sample["acc_norm"])
    assert ours.metrics["acc"] == pytest.approx(theirs["acc"])
    assert ours.metrics["acc_norm"] == pytest.approx(theirs["acc_norm"])


def test_partial_scoring_matches_lm_eval_multiple_input(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    rows = [{"context_options": list(i.contexts), "continuation": i.continuation, "gold": i.gold} for i in PARTIAL]
    _, samples = _evaluate(tmp_path, tiny_model_dir, "cur_wino", rows, "multiple_choice",
                           "doc_to_text: gold\ndoc_to_target: continuation\ndoc_to_choice: context_options", ACC_METRICS)
    ours = score_multiple_choice(model, tok, PARTIAL, progress=False)
    for row, sample in zip(ours.per_item, samples):
        assert row["logliks"] == pytest.approx([r[0][0] for r in sample["resps"]], abs=1e-4)
        assert (row["acc"], row["acc_norm"]) == (sample["acc"], sample["acc_norm"])


def test_rolling_perplexity_matches_lm_eval(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    theirs, samples = _evaluate(tmp_path, tiny_model_dir, "cur_ppl", [{"text": t} for t in TEXTS],
                                "loglikelihood_rolling", "doc_to_text: ''\ndoc_to_target: text", PPL_METRICS,
                                max_length=16)
    ours = rolling_perplexity(model, tok, TEXTS, max_length=16, progress=False)
    for row, sample in zip(ours.per_item, samples):
        assert row["loglik"] == pytest.approx(sample["resps"][0][0], abs=1e-4)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours.metrics[metric] == pytest.approx(theirs[metric], rel=1e-5)
