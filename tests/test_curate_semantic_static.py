"""Static (model2vec) embeddings for semantic dedup: distillation, its cache, the step's option.

A tiny random BERT stands in for MiniLM (distilling MiniLM takes minutes on a shared CPU):
its table knows token identity only, so the planted copies here are reordered or re-cased
texts (the same tokens: a static model ignores order and the uncased tokenizer ignores
case). Detection quality on real paraphrases is measured against MiniLM in
bench/curate_semantic_static.py.
"""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import curatune.curate.static_embeddings as static
from curatune.curate.base import CurateContext
from curatune.curate.config import SemanticDedupConfig
from curatune.curate.dedup import SemanticDedup
from curatune.records import Record
from curatune.testing.tiny_embedder import build_tiny_embedder


@pytest.fixture(scope="module")
def tiny_embedder_dir(tmp_path_factory):
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture
def context(tiny_embedder_dir, tmp_path):
    static._loaded.clear()  # each test starts without a table loaded in this process
    return CurateContext(workers=1, cache_dir=tmp_path / "cache", embedder=str(tiny_embedder_dir))


def rec(prompt: str, response: str) -> Record:
    return Record.make([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


def test_table_is_distilled_once_then_read_from_the_cache(context, monkeypatch):
    texts = ["the quick brown fox", "Fox brown quick the", "a man is riding a bicycle", ""]
    first = static.embed_static(texts, context, dims=16)
    assert first.shape == (4, 16) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first[:3], axis=1), 1.0, rtol=1e-5)
    assert first[0] @ first[1] == pytest.approx(1.0, abs=1e-5)  # same tokens, other order and case
    assert first[0] @ first[2] < 0.9
    assert not first[3].any()  # no tokens: the zero vector, similar to nothing
    tables = [p for p in (context.cache_dir / "static").iterdir()]
    assert len(tables) == 1 and (tables[0] / static.SETTINGS_FILE).exists()
    assert (tables[0] / "model.safetensors").exists()
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tables[0] / "model.safetensors").stat().st_mode) == 0o666 & ~mask  # shared cache, not 0600
    # A new process (nothing loaded) reads the table: distilling again would fail here.
    static._loaded.clear()
    monkeypatch.setattr(static, "distill_table", lambda *a: (_ for _ in ()).throw(AssertionError("distilled again")))
    np.testing.assert_allclose(static.embed_static(texts, context, dims=16), first, atol=1e-6)


def test_cache_key_follows_the_source_model_and_the_settings(tiny_embedder_dir, tmp_path):
    key = static.table_key(tiny_embedder_dir, static.DistillSettings(dims=16))
    assert key == static.table_key(tiny_embedder_dir, static.DistillSettings(dims=16))
    assert key != static.table_key(tiny_embedder_dir, static.DistillSettings(dims=8))
    assert key != static.table_key(tiny_embedder_dir, static.DistillSettings(dims=16, sif_coefficient=1e-3))
    # Another copy of the model, or changed weights in the same folder, is another table.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_embedder_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    copy_key = static.table_key(copy, static.DistillSettings(dims=16))
    assert copy_key != key
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert static.table_key(copy, static.DistillSettings(dims=16)) != copy_key


def test_a_failed_distillation_leaves_no_table_behind(context, monkeypatch):
    real = static.distill_table

    def killed(source, settings, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(static, "distill_table", killed)
    with pytest.raises(KeyboardInterrupt):
        static.embed_static(["a man"], context, dims=16)
    assert list((context.cache_dir / "static").iterdir()) == []
    monkeypatch.setattr(static, "distill_table", real)
    assert static.embed_static(["a man"], context, dims=16).shape == (1, 16)


QUESTIONS = [
    ("Where is the Eiffel Tower? It was built for the 1889 world fair.", "The Eiffel Tower stands in Paris, on the Champ de Mars."),
    ("Which animal is a bird that cannot fly? Think of cold places.", "Penguins are birds that cannot fly; they swim in the cold south."),
    ("What do bees make? Name the sweet food they store.", "Bees make honey from nectar and store it in wax combs."),
    ("Describe the road scene with the bicycle.", "A man is riding a bicycle down the road next to a red car."),
    ("Summarize the weather report for the weekend.", "Rain on Saturday, sunny and warm on Sunday afternoon."),
    ("Which sport uses a racket and a net?", "Tennis is played with a racket, a ball and a net across the court."),
    ("Name a musical instrument with keys and strings.", "The piano has black and white keys that strike strings inside."),
    ("What does the quick brown fox do?", "The quick brown fox jumps over the lazy dog while the cat sleeps."),
]


def test_static_option_finds_planted_copies_and_keeps_the_rest(context):
    records = [rec(q, a) for q, a in QUESTIONS]
    # Planted copies: sentences reordered and re-cased (the same tokens), answers likewise.
    planted = {8: 0, 9: 2}
    records.append(rec("It was built for the 1889 world fair. WHERE is the Eiffel Tower?",
                       "On the Champ de Mars: the Eiffel Tower stands in Paris."))
    records.append(rec("Name the sweet food they store. What do bees make?",
                       "bees make honey from nectar and store it in wax combs."))
    # The same words, but the answer states another number: not a duplicate (numbers_must_match).
    records.append(rec("Where is the Eiffel Tower? It was built for the 1889 world fair.",
                       "The Eiffel Tower stands in Paris, on the Champ de Mars 2."))
    cfg = SemanticDedupConfig(embedding="static", static_dims=16, strip_templates=False)
    result = SemanticDedup(cfg).run(records, context)
    removed = {records.index(r.record): r for r in result.removed}
    assert set(removed) == set(planted)
    for i, original in planted.items():
        assert removed[i].duplicate_of == records[original].id and removed[i].reason == "semantic_duplicate"
        assert "informative answers" in removed[i].detail
    assert len(result.kept) + len(result.removed) == len(records)
    assert result.counters["embedding"] == "static" and result.counters["dtype"] == "float32"
    # The same records with the transformer path are untouched by the option.
    assert SemanticDedupConfig().embedding == "transformer"


def test_config_rejects_unknown_embedding():
    with pytest.raises(ValueError):
        SemanticDedupConfig(embedding="minilm")
    with pytest.raises(ValueError):
        SemanticDedupConfig(static_dims=2)
