"""Per-segment translation features: hand-checked token matching and the feature table."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu

from curatune.evaluate import mt_features as F


class _WordVectors:
    """A stand-in SentenceTransformer: one one-hot vector per word, framed by [CLS]/[SEP] rows."""

    VOCAB = ["[CLS]", "[SEP]", "a", "red", "blue", "shirt", "mug", "big"]

    def encode(self, texts, output_value=None, **kwargs):
        assert output_value == "token_embeddings"
        out = []
        for text in texts:
            words = ["[CLS]", *text.lower().split(), "[SEP]"]
            out.append(np.stack([np.eye(len(self.VOCAB))[self.VOCAB.index(w)] for w in words]))
        return out


def test_greedy_match_hand_checked():
    e = np.eye(3)
    # hypothesis tokens {0, 1}, reference tokens {0, 2}: each side matches one of its two tokens
    p, r, f = F.greedy_match(e[[0, 1]], e[[0, 2]])
    assert (p, r, f) == pytest.approx((0.5, 0.5, 0.5))
    # hypothesis {0}, reference {0, 2}: precision 1, recall 1/2, F1 2/3
    assert F.greedy_match(e[[0]], e[[0, 2]]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert F.greedy_match(e[:0], e[[0]]) == (0.0, 0.0, 0.0)


def test_embed_texts_mean_pools_all_tokens_and_matches_without_specials():
    embedded = F.embed_texts(["a red shirt"], _WordVectors())["a red shirt"]
    assert embedded.tokens.shape == (3, 8)  # [CLS] and [SEP] dropped
    # sentence vector: mean of 5 one-hot rows, unit-normalized -> 1/sqrt(5) on each of 5 words
    assert embedded.sentence == pytest.approx(np.array([1, 1, 1, 1, 0, 1, 0, 0]) / math.sqrt(5))


def test_segment_features_table():
    hyps, refs, srcs = ["a red shirt", "a blue mug"], ["a red shirt", "a big red mug"], ["shirt", "mug"]
    table = F.segment_features(hyps, refs, srcs, _WordVectors())
    assert list(table.columns) == list(F.FEATURES) and len(table) == 2
    first, second = table.iloc[0], table.iloc[1]
    assert first["chrf"] == pytest.approx(100.0) and first["bs_f"] == pytest.approx(1.0)
    assert first["cos_hr"] == pytest.approx(1.0) and first["log_len_ratio"] == 0.0
    # "a blue mug" vs "a big red mug": 2 of 3 hypothesis words and 2 of 4 reference words match
    assert second["bs_p"] == pytest.approx(2 / 3) and second["bs_r"] == pytest.approx(0.5)
    assert second["chrf"] == pytest.approx(sacrebleu.sentence_chrf("a blue mug", ["a big red mug"], word_order=2).score)
    assert second["chrf_src"] == pytest.approx(sacrebleu.sentence_chrf("a blue mug", ["mug"], word_order=2).score)
    assert second["log_len_ratio"] == pytest.approx(math.log(11 / 14))
    with pytest.raises(ValueError):
        F.segment_features(["a"], ["a", "b"], ["x"], _WordVectors())
