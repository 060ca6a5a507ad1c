"""Cheap per-segment features of a translation against its reference and source.

One forward pass of the sentence embedder per text gives both its token embeddings
(for BERTScore-style greedy matching) and its sentence embedding (the mean of the token
embeddings, unit-normalized: exactly what all-MiniLM-L6-v2's pooling computes, which
:func:`embed_texts` checks). The lexical features are sacrebleu's sentence-level scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sacrebleu.metrics import BLEU, CHRF, TER

#: Columns of :func:`segment_features`, in order.
FEATURES = (
    "chrf", "bleu", "ter", "chrf_src",
    "cos_hr", "cos_hs", "cos_rs",
    "bs_p", "bs_r", "bs_f",
    "log_len_ratio",
)


@dataclass
class TextEmbedding:
    sentence: np.ndarray  # (dim,), unit norm
    tokens: np.ndarray  # (n_tokens, dim), unit rows, special tokens removed


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def embed_texts(texts: Sequence[str], embedder: Any, batch_size: int = 64) -> dict[str, TextEmbedding]:
    """Sentence and token embeddings of each distinct text, from one forward pass each.

    The sentence vector is the mean of all token vectors (special tokens included),
    unit-normalized: the mean-pooling + Normalize head of all-MiniLM-L6-v2. The token
    vectors for matching drop the first and last ([CLS], [SEP]) as BERTScore does.
    """
    distinct = list(dict.fromkeys(texts))
    # Longest first keeps padding low within each batch.
    order = sorted(range(len(distinct)), key=lambda i: -len(distinct[i]))
    ordered = [distinct[i] for i in order]
    tokens = embedder.encode(ordered, batch_size=batch_size, output_value="token_embeddings",
                             convert_to_numpy=False, show_progress_bar=False)
    out = {}
    for text, token_matrix in zip(ordered, tokens):
        matrix = np.asarray(token_matrix.float().cpu().numpy() if hasattr(token_matrix, "cpu") else token_matrix,
                            dtype=np.float32)
        sentence = _unit(matrix.mean(axis=0))
        inner = matrix[1:-1] if len(matrix) > 2 else matrix
        out[text] = TextEmbedding(sentence=sentence, tokens=_unit(inner))
    return out


def greedy_match(hyp_tokens: np.ndarray, ref_tokens: np.ndarray) -> tuple[float, float, float]:
    """BERTScore-style precision, recall and F1 of unit token vectors (no idf weighting)."""
    if len(hyp_tokens) == 0 or len(ref_tokens) == 0:
        return 0.0, 0.0, 0.0
    similarity = hyp_tokens @ ref_tokens.T
    precision = float(similarity.max(axis=1).mean())
    recall = float(similarity.max(axis=0).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


class LexicalScorer:
    """sacrebleu sentence-level chrF++, BLEU (effective order) and TER."""

    def __init__(self) -> None:
        self.chrf = CHRF(word_order=2)
        self.bleu = BLEU(effective_order=True)
        self.ter = TER()

    def scores(self, hypothesis: str, reference: str) -> tuple[float, float, float]:
        return (
            self.chrf.sentence_score(hypothesis, [reference]).score,
            self.bleu.sentence_score(hypothesis, [reference]).score,
            self.ter.sentence_score(hypothesis, [reference]).score,
        )


def segment_features(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str],
    embedder: Any,
    batch_size: int = 64,
) -> pd.DataFrame:
    """One row of :data:`FEATURES` per (hypothesis, reference, source)."""
    if not (len(hypotheses) == len(references) == len(sources)):
        raise ValueError("hypotheses, references and sources must have the same length")
    embedded = embed_texts(list(hypotheses) + list(references) + list(sources), embedder, batch_size)
    lexical = LexicalScorer()
    rows = []
    for hyp, ref, src in zip(hypotheses, references, sources):
        h, r, s = embedded[hyp], embedded[ref], embedded[src]
        chrf, bleu, ter = lexical.scores(hyp, ref)
        rows.append((
            chrf, bleu, min(ter, 200.0), lexical.chrf.sentence_score(hyp, [src]).score,
            float(h.sentence @ r.sentence), float(h.sentence @ s.sentence), float(r.sentence @ s.sentence),
            *greedy_match(h.tokens, r.tokens),
            float(np.log((len(hyp) + 1) / (len(ref) + 1))),
        ))
    return pd.DataFrame(rows, columns=list(FEATURES))
