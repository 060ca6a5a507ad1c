"""Metrics of generated answers: hand-checked values and agreement with sacrebleu."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curatune.evaluate import metrics as M

# A small MT-like fixture with punctuation, casing and length differences.
HYPS = [
    "A man is riding a bicycle down the street.",
    "Two dogs play in the snow",
    "the girl in a red coat reads a book .",
    "",
    "People are standing around a food truck, waiting.",
    "A child jumps into the swimming pool!",
]
REFS = [
    "A man rides a bike down the street.",
    "Two dogs are playing in the snow.",
    "A girl in a red coat is reading a book.",
    "An old man sits on a bench.",
    "People stand around a food truck waiting for lunch.",
    "A child jumps into the pool.",
]


def test_bleu_hand_checked():
    # p1..p4 = 4/5, 3/4, 2/3, 1/2 and no brevity penalty: BLEU = (0.2) ** (1/4)
    result = M.corpus_bleu(["a b c d e"], ["a b c d f"])
    assert result.corpus["bleu"] == pytest.approx(100 * 0.2**0.25, abs=1e-6)
    assert M.corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]).corpus["bleu"] == pytest.approx(100.0)
    # fewer than four words: no 4-gram matches, corpus BLEU is 0 (as in sacrebleu)
    assert M.corpus_bleu(["the cat sat"], ["the cat sat"]).corpus["bleu"] == 0.0


def test_chrf_and_ter_hand_checked():
    assert M.corpus_chrf(["same words here"], ["same words here"]).corpus["chrf"] == pytest.approx(100.0)
    # one deleted word out of four reference words
    assert M.corpus_ter(["the cat sat"], ["the cat sat on"]).corpus["ter"] == pytest.approx(25.0)
    assert M.corpus_ter(["x y"], ["x y"]).corpus["ter"] == 0.0


def test_sacrebleu_metrics_match_sacrebleu_python_api():
    import sacrebleu

    bleu, chrf, ter = M.corpus_bleu(HYPS, REFS), M.corpus_chrf(HYPS, REFS), M.corpus_ter(HYPS, REFS)
    assert bleu.corpus["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert chrf.corpus["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, abs=1e-9)
    assert ter.corpus["ter"] == pytest.approx(sacrebleu.corpus_ter(HYPS, [REFS]).score, abs=1e-9)
    assert bleu.signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "|nc:6|nw:2|" in chrf.signatures["chrf"]  # chrF++: word bigrams
    assert ter.signatures["ter"].startswith("nrefs:1|case:lc|tok:tercom")
    # per-example columns are sacrebleu's sentence scores
    assert bleu.per_item["bleu"][0] == pytest.approx(sacrebleu.sentence_bleu(HYPS[0], [REFS[0]]).score)
    assert chrf.per_item["chrf"][2] == pytest.approx(
        sacrebleu.sentence_chrf(HYPS[2], [REFS[2]], word_order=2).score
    )
    assert len(ter.per_item["ter"]) == len(HYPS) and ter.n_items["ter"] == len(HYPS)


def test_exact_match_normalizes_whitespace_only():
    result = M.exact_match(["a  b\n c ", "A b c", "a b c."], ["a b c", "a b c", "a b c"])
    assert result.per_item["exact_match"] == [1.0, 0.0, 0.0]
    assert result.corpus["exact_match"] == pytest.approx(1 / 3)


REF = json.dumps({"brand": "Acme", "colour": "red", "size": "M", "price": 19.99})


@pytest.mark.parametrize(
    "hypothesis, expected",
    [
        (REF, 1.0),
        ('{"brand": "acme", "colour": " Red ", "size": "m", "price": "19.99"}', 1.0),  # case, space, number text
        ('```json\n{"brand": "Acme", "colour": "red", "size": "M", "price": 19.99}\n```', 1.0),  # code fence
        ('{"brand": "Acme", "colour": "blue", "size": "M", "price": 19.99}', 0.75),  # P = R = 3/4
        ('{"brand": "Acme", "colour": "red"}', 2 * 1.0 * 0.5 / 1.5),  # P = 1, R = 1/2
        ('{"brand": "Acme", "colour": "red", "size": "M", "price": 19.99, "x": 1}', 2 * 0.8 * 1 / 1.8),
        ("brand: Acme, colour: red", 0.0),  # unparsable: no predicted fields
        ('["Acme", "red"]', 0.0),  # JSON but not an object
        ('{"brand": "Acme", ', 0.0),  # truncated
        ("{}", 0.0),
    ],
)
def test_field_f1_cases(hypothesis, expected):
    assert M.field_f1_score(hypothesis, REF) == pytest.approx(expected)


def test_field_f1_nested_lists_and_empty():
    ref = '{"a": {"b": 1, "c": [1, 2, 2]}, "d": []}'
    assert M.field_f1_score('{"a": {"b": 1, "c": [2, 1, 2]}, "d": []}', ref) == 1.0  # list order ignored
    # pairs: a.b=1, a.c=1, a.c=2, a.c=2, d=[]; hypothesis misses one a.c=2 -> P=1, R=4/5
    assert M.field_f1_score('{"a": {"b": 1, "c": [1, 2]}, "d": []}', ref) == pytest.approx(2 * 0.8 / 1.8)
    assert M.field_f1_score("{}", "{}") == 1.0  # nothing to extract, nothing predicted
    assert M.field_f1_score('{"a": 1}', "not json") is None


def test_field_f1_corpus_and_json_valid():
    result = M.field_f1([REF, "oops", '{"brand": "Acme"}'], [REF, REF, "free text reference"])
    # third reference is not JSON: excluded from field_f1, still counted for json_valid
    assert result.corpus["field_f1"] == pytest.approx(0.5)
    assert result.n_items == {"field_f1": 2, "json_valid": 3}
    assert result.corpus["json_valid"] == pytest.approx(2 / 3)
    assert math.isnan(result.per_item["field_f1"][2])


def test_normalize_value_numbers():
    assert M.normalize_value("1,299.00") == M.normalize_value(1299) == "1299"
    assert M.normalize_value("1,2") == "1,2"  # not a number with thousands separators
    assert M.normalize_value(True) == "true" and M.normalize_value(None) == "null"
    assert M.normalize_value("e5") == "e5"


def test_auto_metrics_follow_the_references():
    assert "field_f1" in M.auto_metrics([REF, REF, "x"])
    assert "bleu" in M.auto_metrics(["plain text", "more text"])


def test_comet_like_segments_hand_checked():
    h = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    r = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = M.comet_like_segments(h, r, s)
    # row 0: h == r -> 1; row 1: orthogonal to r, but relates to s unlike r -> 0.75*0 + 0.25*(1-|1-0|) = 0
    # row 2: h is a copy of s, orthogonal to r -> 0.75*0 + 0.25*(1-|1-0|) = 0 = cos(r, s)
    assert scores.tolist() == pytest.approx([1.0, 0.0, 0.0])
    h2 = np.array([[1.0, 1.0]])
    r2 = np.array([[1.0, 0.0]])
    assert M.comet_like_segments(h2, r2).tolist() == pytest.approx([1 / math.sqrt(2)])
    # h == r always scores 1, whatever the source
    rng = np.random.default_rng(0)
    r3, s3 = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    assert M.comet_like_segments(r3, r3, s3) == pytest.approx(np.ones(5))


class _BagOfLetters:
    """A deterministic stand-in embedder: letter counts."""

    def encode(self, texts, **kwargs):
        return np.array([[t.lower().count(c) + 1e-3 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts])


def test_score_generations_registry_and_lazy_embedder():
    calls = []

    def loader():
        calls.append(1)
        return _BagOfLetters()

    result = M.score_generations(["exact_match", "chrf"], ["a b"], ["a b"], ["src"], embedder_loader=loader)
    assert set(result.corpus) == {"exact_match", "chrf"} and not calls
    result = M.score_generations(["comet_like"], ["abc", "xyz"], ["abc", "abc"], None, embedder_loader=loader)
    assert calls == [1]
    assert result.per_item["comet_like"][0] == pytest.approx(1.0)
    assert result.corpus["comet_like"] == pytest.approx(np.mean(result.per_item["comet_like"]))
    assert result.signatures["comet_like"].startswith("comet_like|embedder:all-MiniLM-L6-v2|w_ref:1|src:no")
    with pytest.raises(Exception, match="unknown generation metric"):
        M.score_generations(["rouge"], ["a"], ["a"])


def test_comet_like_loads_offline_with_evaluate(monkeypatch):
    """evaluate.load(<folder>) works without the hub and agrees with the library function."""
    import evaluate

    from curatune.evaluate.comet_like import MODULE_DIR

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert (MODULE_DIR / "comet_like.py").is_file()
    metric = evaluate.load(str(MODULE_DIR))
    embedder = _BagOfLetters()
    preds, refs, srcs = ["a red cotton shirt", "zzz"], ["a red cotton shirt", "a blue mug"], ["shirt", "mug"]
    out = metric.compute(predictions=preds, references=refs, sources=srcs, embedder=embedder)
    expected = M.comet_like_scores(preds, refs, srcs, embedder=embedder)
    assert out["scores"] == pytest.approx(expected)
    assert out["scores"][0] == pytest.approx(1.0)
    assert out["score"] == pytest.approx(np.mean(expected))
    assert "w_ref:0.75|w_src:0.25" in out["signature"]


def test_comet_like_with_default_minilm_ranks_paraphrase_above_unrelated():
    import evaluate

    from curatune.evaluate.comet_like import MODULE_DIR

    metric = evaluate.load(str(MODULE_DIR))
    out = metric.compute(
        predictions=["A man is riding a bicycle.", "The stock market fell sharply today.", "A man rides a bike."],
        references=["A man rides a bike."] * 3,
    )
    paraphrase, unrelated, identical = out["scores"]
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > 0.7 > unrelated
    assert "embedder:all-MiniLM-L6-v2" in out["signature"]


def test_comet_like_signature_names_its_version_and_settings():
    """Scores are recorded with this string; a scoring change must bump the version in it."""
    assert M.COMET_LIKE_VERSION == "1"
    assert M.comet_like_signature("all-MiniLM-L6-v2", True) == (
        "comet_like|embedder:all-MiniLM-L6-v2|w_ref:0.75|w_src:0.25|agg:mean|version:1"
    )
    assert M.comet_like_signature("my-embedder", False) == "comet_like|embedder:my-embedder|w_ref:1|src:no|agg:mean|version:1"
    assert M.comet_like_signature("e", True, 0.5).startswith("comet_like|embedder:e|w_ref:0.5|w_src:0.5|")
    assert "not COMET" in M.COMET_LIKE_NOTE and "chrF++" in M.COMET_LIKE_NOTE
