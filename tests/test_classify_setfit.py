"""task: classification: loading labelled texts, nested stratified subsets, the three classifiers,
macro-F1's paired statistic, and the sweep -> evaluate path on a tiny embedder built offline."""
from __future__ import annotations

import json
import os
import random
import stat

import numpy as np
import pandas as pd
import pytest

from curatune.classify.config import ClassifyConfig, SetFitSettings
from curatune.classify.data import clean_label, load_labelled, shared_template
from curatune.classify.subsets import carve_test, nested_subsets
from curatune.config import SourceConfig, validate_config
from curatune.errors import ConfigError, DataError
from curatune.evaluate.analysis.significance import (
    macro_f1_statistics,
    paired_bootstrap,
)
from curatune.testing.tiny_embedder import build_tiny_embedder

ANIMALS = "cat dog fox mat lazy sleeps quick brown jumps honey bees penguins".split()
VEHICLES = "car bus bicycle road red blue man riding next down".split()


@pytest.fixture(scope="module")
def tiny_embedder_dir(tmp_path_factory):
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


def synthetic(n_per_class: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_per_class):
        for label, words in (("animal", ANIMALS), ("vehicle", VEHICLES)):
            rows.append({"text": " ".join(rng.choices(words, k=8)) + f" {i}", "label": label})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- data


def test_template_is_stripped_and_the_end_marker_dropped(tmp_path):
    reviews = [(f"{word} product number {i}", "Positive" if i % 3 else "Negative")
               for i, word in enumerate(["Great", "Broken", "Works", "Cheap", "Solid"] * 6)]
    rows = [{"prompt": f"Title: {t}\nIs the review positive or negative?\n", "completion": f"{lab}<|endoftext|>"}
            for t, lab in reviews]
    data = load_labelled([SourceConfig(path=write_jsonl(tmp_path / "t.jsonl", rows))], ClassifyConfig())
    assert data.records["text"].tolist() == [t for t, _ in reviews]
    assert data.counts() == {"Negative": 10, "Positive": 20}
    # a handful of rows: a shared opening word could be taken for the template, so nothing is cut
    few = load_labelled([SourceConfig(path=write_jsonl(tmp_path / "f.jsonl", rows[:3]))], ClassifyConfig())
    assert few.records["text"].iloc[0].startswith("Title: Great")
    assert shared_template(["a x b", "a y b"]) == ("a ", " b")
    assert shared_template(["Review: x", "Returned: y"]) == ("", "")
    assert clean_label(" Business<|endoftext|>") == "Business"


def test_fields_are_detected_or_named_and_bad_labels_are_refused(tmp_path):
    rows = [{"sentence": f"s{i}", "sentiment": "pos" if i % 2 else "neg", "id": i} for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_labelled([SourceConfig(path=path)], ClassifyConfig())
    assert list(data.fields.values())[0]["text"] == "sentence" and len(data.records) == 10
    with pytest.raises(DataError, match="no field 'review'"):
        load_labelled([SourceConfig(path=path)], ClassifyConfig(text_field="review"))
    free_text = [{"text": f"t{i}", "label": f"a long answer {i}"} for i in range(50)]
    with pytest.raises(DataError, match="free text, not labels"):
        load_labelled([SourceConfig(path=write_jsonl(tmp_path / "f.jsonl", free_text))], ClassifyConfig())
    one = [{"text": f"t{i}", "label": "x"} for i in range(5)]
    with pytest.raises(DataError, match="single value"):
        load_labelled([SourceConfig(path=write_jsonl(tmp_path / "o.jsonl", one))], ClassifyConfig())


def test_rows_are_kept_or_rejected_with_a_reason(tmp_path):
    rows = synthetic(5) + [{"text": "", "label": "animal"}, {"text": "x", "label": ""},
                           {"text": "dup", "label": "animal"}, {"text": "dup", "label": "animal"},
                           {"text": "clash", "label": "animal"}, {"text": "clash", "label": "vehicle"}]
    data = load_labelled([SourceConfig(path=write_jsonl(tmp_path / "d.jsonl", rows))], ClassifyConfig())
    reasons = sorted(r["reason"].split(" ")[0] for r in data.rejected)
    assert reasons == ["conflicting_labels", "conflicting_labels", "empty_label", "empty_text", "repeated_text"]
    assert len(data.records) + len(data.rejected) == len(rows)


# ----------------------------------------------------------------------------- subsets


def test_subsets_are_nested_balanced_and_disjoint_from_the_test_split():
    rng = np.random.default_rng(0)
    records = pd.DataFrame({"id": [f"r{i}" for i in range(300)], "text": [f"t{i}" for i in range(300)],
                            "label": rng.choice(["a", "b", "c"], size=300, p=[0.5, 0.3, 0.2]), "source": "x"})
    split = carve_test(records, per_class=10, largest_size=32, seed=1)
    assert split.test["label"].value_counts().to_dict() == {"a": 10, "b": 10, "c": 10}
    assert not set(split.test["id"]) & set(split.pool["id"])
    assert len(split.test) + len(split.pool) == len(records)
    subsets = nested_subsets(split.pool, [8, 16, 32], seeds=[0, 1])

    def subset(seed: int, size: int) -> pd.DataFrame:
        return subsets[(subsets["seed"] == seed) & (subsets["size"] == size)]

    for seed in (0, 1):
        assert set(subset(seed, 8)["id"]) < set(subset(seed, 16)["id"]) < set(subset(seed, 32)["id"])
        for size in (8, 16, 32):
            assert subset(seed, size)["label"].value_counts().to_dict() == {"a": size, "b": size, "c": size}
    assert set(subset(0, 8)["id"]) != set(subset(1, 8)["id"])
    # the same data in another file order gives the same subsets
    shuffled = nested_subsets(split.pool.sample(frac=1.0, random_state=3), [8, 16, 32], seeds=[0, 1])
    assert shuffled.sort_values(["seed", "size", "id"]).reset_index(drop=True).equals(
        subsets.sort_values(["seed", "size", "id"]).reset_index(drop=True))


def test_a_class_too_small_for_test_plus_the_largest_size_is_named():
    records = pd.DataFrame({"id": [f"r{i}" for i in range(60)], "text": "t", "source": "x",
                            "label": ["big"] * 50 + ["small"] * 10})
    with pytest.raises(DataError, match=r"\{'small': 10\}.*heldout_per_class to at most 2"):
        carve_test(records, per_class=5, largest_size=8, seed=0)


# ----------------------------------------------------------------------------- metrics


def test_macro_f1_statistic_equals_scikit_learn_on_every_resample():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c", "d"]
    references = rng.choice(classes, 200).tolist()
    outputs = [r if rng.random() < 0.6 else str(rng.choice(classes)) for r in references]
    stats, statistic = macro_f1_statistics(references, outputs, classes)
    assert statistic(stats.sum(0)) == pytest.approx(f1_score(references, outputs, labels=classes, average="macro"))
    index = rng.choice(200, 200)  # one bootstrap resample, summed the way paired_bootstrap sums it
    expected = f1_score([references[i] for i in index], [outputs[i] for i in index], labels=classes,
                        average="macro", zero_division=0)
    assert statistic(stats[index].sum(0)) == pytest.approx(expected)
    better = [r if rng.random() < 0.9 else "a" for r in references]
    stats_b, _ = macro_f1_statistics(references, better, classes)
    result = paired_bootstrap(stats, stats_b, statistic, n_resamples=300, seed=0)
    assert result.difference > 0 and result.ci_low > 0  # a clearly better system is told apart


# ----------------------------------------------------------------------------- classifiers


def test_zero_shot_picks_the_label_whose_name_the_text_is(tiny_embedder_dir):
    from curatune.classify.methods import TextEncoder, ZeroShot
    from curatune.models import load_embedder

    encoder = TextEncoder(load_embedder(str(tiny_embedder_dir), "cpu"), 64)
    zero_shot = ZeroShot(encoder, ["bees", "bicycle", "honey"], {}, "{label}")
    assert zero_shot.predict(encoder.encode(["honey", "bees", "bicycle"])) == ["honey", "bees", "bicycle"]
    named = ZeroShot(encoder, ["1", "2"], {"1": "penguins", "2": "road"}, "a {label}")
    assert named.prompts == ["a penguins", "a road"]


def separation(vectors: np.ndarray, labels: list[str]) -> float:
    """Mean cosine of same-label pairs minus mean cosine of different-label pairs."""
    labels = np.asarray(labels)
    similarity = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(similarity[same & off_diagonal].mean() - similarity[~same].mean())


def test_contrastive_tuning_pulls_the_classes_apart(tiny_embedder_dir, tmp_path):
    pytest.importorskip("setfit")  # optional: pip install 'curatune[classify]'
    from curatune.classify.config import HeadSettings
    from curatune.classify.methods import TextEncoder, train_setfit
    from curatune.models import load_trainable_embedder

    train, test = synthetic(8, seed=0), synthetic(20, seed=1)
    body = load_trainable_embedder(str(tiny_embedder_dir), "cpu")
    encoder = TextEncoder(body, 64)
    test_labels = [r["label"] for r in test]
    before = separation(encoder.encode([r["text"] for r in test]), test_labels)
    settings = SetFitSettings(num_iterations=5, batch_size=16, learning_rate=1e-3, max_length=64)
    outcome = train_setfit(body, [r["text"] for r in train], [r["label"] for r in train],
                           [r["text"] for r in test], settings, HeadSettings(), seed=0, work_dir=tmp_path / "w")
    after = separation(encoder.encode([r["text"] for r in test]), test_labels)
    assert after > before + 0.05, (before, after)  # held-out texts of one class end up closer together
    accuracy = np.mean([p == t for p, t in zip(outcome.predictions, test_labels)])
    assert accuracy > 0.75  # chance is 0.5
    assert outcome.info["pairs"] == 2 * 5 * 16 and outcome.info["steps"] > 0
    assert not (tmp_path / "w").exists()  # setfit's scratch folder is removed


@pytest.mark.slow
def test_sweep_then_evaluate_writes_the_run_directory_contract(tiny_embedder_dir, tmp_path):
    pytest.importorskip("setfit")
    from curatune.classify.evaluate import evaluate_classification
    from curatune.classify.sweep import run_classification_sweep
    from curatune.rundir import PREDICTIONS, RunDir, list_cells

    data = write_jsonl(tmp_path / "d.jsonl", synthetic(20))
    config = validate_config({
        "task": "classification", "run_dir": str(tmp_path / "run"),
        "model": {"embedder": str(tiny_embedder_dir), "device": "cpu"}, "data": {"sources": [{"path": data}]},
        "classify": {"sizes_per_class": [2, 4], "seeds": [0], "heldout_per_class": 10,
                     "setfit": {"num_iterations": 2, "batch_size": 8, "save_weights": True}},
    })
    run_dir = RunDir(config.run_dir)
    summary = run_classification_sweep(config, run_dir)
    assert summary["cells_done"] == 4 and not summary["failed"]
    cells = {c.key: c for c in list_cells(run_dir)}
    assert set(cells) == {"setfit-n2-s0", "setfit-n4-s0", "logreg-n2-s0", "logreg-n4-s0"}
    assert cells["setfit-n4-s0"].done["train_examples"] == 8
    assert len(pd.read_parquet(cells["logreg-n2-s0"].path / PREDICTIONS)) == 20
    assert (cells["setfit-n2-s0"].path / "final" / "head.safetensors").exists()
    mask = os.umask(0o022)
    os.umask(mask)
    for weights in (cells["setfit-n2-s0"].path / "final").rglob("*.safetensors"):  # not 0600 (safetensors#782)
        assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~mask, weights
    assert not list((cells["setfit-n2-s0"].path / "final").glob("*.pkl"))  # no pickle
    again = run_classification_sweep(config, run_dir)
    assert again["ran"] == [] and len(again["already_done"]) == 4
    changed = config.model_copy(update={"classify": config.classify.model_copy(
        update={"setfit": config.classify.setfit.model_copy(update={"num_iterations": 3})})})
    with pytest.raises(ConfigError, match="setfit-n2-s0, setfit-n4-s0 were trained with other settings"):
        run_classification_sweep(changed, run_dir)

    evaluate_classification(config, run_dir)
    scores = pd.read_parquet(run_dir.scores)
    assert set(scores["cell"]) == {"base", *cells}
    assert set(scores["metric"]) == {"acc", "macro_f1"} and (scores["n_items"] == 20).all()
    analysis = json.loads(run_dir.analysis.read_text())
    assert {(s["method"], s["metric"]) for s in analysis["saturation"]} >= {("setfit", "acc"), ("logreg", "macro_f1")}
    comparisons = json.loads(run_dir.classification.read_text())["comparisons"]
    tests = {(c["method"], c["seeds"], c["against"], c["metric"]): c["test"] for c in comparisons}
    assert tests[("setfit", "0", "logreg", "acc")] == "mcnemar_exact"
    assert tests[("setfit", "0", "zero_shot", "macro_f1")] == "paired_bootstrap"
    assert all(c["label"] for c in comparisons)


T0_TEMPLATES = ("instruct", "self_instruct", "data", "finetuning", "t0_train_50k", "data_per_template")


@pytest.mark.parametrize("file, counts, instruction", [
    ("ag_news_classify.jsonl", {"Business": 78, "Science and technology": 122}, "What label best describes"),
    ("amazon_polarity_Is_this_review.jsonl", {"Negative": 89, "Positive": 111}, "Is the review positive"),
    ("yelp_review_full_format_star.jsonl", {"1 star": 50, "2 stars": 51, "3 stars": 39, "4 stars": 25, "5 stars": 35},
     "Stars:"),
])
def test_real_t0_templates_become_text_and_label(shared_data, file, counts, instruction):
    path = shared_data.joinpath(*T0_TEMPLATES, file)
    data = load_labelled([SourceConfig(path=str(path))], ClassifyConfig())
    assert data.counts() == counts and not data.rejected
    assert not data.records["text"].str.contains(instruction, regex=False).any()
    raw = json.loads(path.read_text(encoding="utf-8").split("\n")[0])["prompt"]
    assert data.records["text"].iloc[0][:40] in " ".join(raw.split())  # the text itself is kept


def test_real_t0_template_without_labels_is_refused(shared_data):
    path = shared_data.joinpath(*T0_TEMPLATES, "trec_trec1.jsonl")  # every completion is empty
    with pytest.raises(DataError, match="no labelled rows"):
        load_labelled([SourceConfig(path=str(path))], ClassifyConfig())


def test_a_stage_run_on_a_path_locks_that_folder_not_the_file_system_root(tmp_path):
    """pathlib paths have a .root attribute too ("/"): the lock must use the path itself."""
    from curatune.runlock import holds_stage_lock, lock_path

    @holds_stage_lock("train")
    def stage(config, run_dir=None):
        return lock_path(run_dir, "train").exists()

    assert stage(None, tmp_path / "run")
