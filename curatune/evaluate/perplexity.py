"""Language-modelling scores that need no answers: rolling perplexity and LAMBADA.

:func:`rolling_perplexity` follows lm-evaluation-harness's ``loglikelihood_rolling`` (the
wikitext task): each text is tokenized whole, cut into disjoint windows of at most
``max_length`` predicted tokens, where the first window is conditioned on the prefix token
(BOS, else EOS) and every later window on as many preceding tokens as fit in the model's
context. Scores are summed over the corpus and weighted as lm-eval's
``weighted_perplexity`` / ``bits_per_byte`` aggregations do:

* ``word_perplexity = exp(-sum(loglik) / sum(words))`` with ``words = len(re.split(r"\\s+", text))``
* ``byte_perplexity = exp(-sum(loglik) / sum(utf-8 bytes))``
* ``bits_per_byte = -sum(loglik) / sum(bytes) / ln 2``
* ``token_perplexity = exp(-sum(loglik) / sum(tokens))`` (tokenizer-dependent; not in lm-eval)

:func:`score_lambada` is lm-eval's ``lambada_openai``: the last word, with its leading
space, scored after the passage; ``acc`` is 1 when every token of it is the model's argmax,
``perplexity = exp(-mean(loglik))`` over items.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from curatune.errors import DataError
from curatune.evaluate.lm_scoring import ItemScores, LoglikelihoodScorer, Request
from curatune.evaluate.multiple_choice import _read_rows, _stem, _subset


@dataclass(frozen=True)
class TextItem:
    example_id: str
    text: str


@dataclass(frozen=True)
class LambadaItem:
    example_id: str
    context: str
    continuation: str


# ---- loading ---------------------------------------------------------------------------------
_TEXT_FIELDS = ("text", "page", "content", "document")


def load_text_items(path: str | os.PathLike, limit: int | None = None, *, seed: int = 0,
                    text_field: str | None = None) -> list[TextItem]:
    """Documents for perplexity: JSONL/JSON rows with a text field, or a plain ``.txt`` file.

    The text field is ``text_field`` or the first of text/page/content/document present. In a
    ``.txt`` file, documents are separated by blank lines. ``limit`` keeps a fixed seeded subset.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    stem = _stem(path)
    items: list[TextItem] = []
    if path.suffix.lower() == ".txt":
        text = path.read_text(encoding="utf-8")
        docs = [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text)]
        items = [TextItem(f"{stem}-{i}", d) for i, d in enumerate(d for d in docs if d.strip())]
    else:
        for i, row in _read_rows(path):
            if not isinstance(row, dict):
                raise DataError(f"{path}: row {i}: expected a JSON object")
            key = text_field or next((k for k in _TEXT_FIELDS if k in row), None)
            if key is None or key not in row:
                raise DataError(f"{path}: row {i}: no text field (looked for {text_field or ', '.join(_TEXT_FIELDS)})")
            value = row[key]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}: row {i}: field '{key}' must be a non-empty string")
            items.append(TextItem(str(row.get("id") or f"{stem}-{i}"), value))
    if not items:
        raise DataError(f"{path}: no text found")
    return _subset(items, limit, seed)


def load_lambada_items(path: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[LambadaItem]:
    """LAMBADA rows: llm-foundry ``{context, continuation}`` or lm-eval's ``{text}`` (last word is the target)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    stem = _stem(path)
    items = []
    for i, row in _read_rows(path):
        at = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise DataError(f"{at}: expected a JSON object")
        example_id = str(row.get("id") or f"{stem}-{i}")
        if "context" in row and "continuation" in row:
            context, continuation = row["context"], row["continuation"]
            if not isinstance(context, str) or not isinstance(continuation, str) or not continuation.strip():
                raise DataError(f"{at}: fields 'context' and 'continuation' must be strings, continuation non-empty")
            # lm-eval's target is " " + last word; llm-foundry stores the word without its space
            if not continuation[:1].isspace() and not context[-1:].isspace():
                continuation = " " + continuation
            items.append(LambadaItem(example_id, context, continuation))
        elif isinstance(row.get("text"), str):
            words = row["text"].split(" ")  # lm-eval: text.split(' ')[:-1] | join(' '), ' ' + last
            if len(words) < 2:
                raise DataError(f"{at}: field 'text' needs at least two words")
            items.append(LambadaItem(example_id, " ".join(words[:-1]), " " + words[-1]))
        else:
            raise DataError(f"{at}: expected fields {{context, continuation}} or {{text}}, got {sorted(row)}")
    if not items:
        raise DataError(f"{path}: no LAMBADA items found")
    return _subset(items, limit, seed)


# ---- rolling perplexity ----------------------------------------------------------------------
def rolling_windows(tokens: Sequence[int], prefix_token: int, max_length: int) -> list[Request]:
    """lm-eval's ``get_rolling_token_windows(context_len=1)`` followed by ``make_disjoint_window``.

    Every token is predicted exactly once; window k predicts up to ``max_length`` tokens and
    is conditioned on the tokens before them (the prefix token for the first window).
    """
    windows: list[Request] = []
    if not tokens:
        return windows
    tokens = list(tokens)
    first = min(max_length, len(tokens))
    windows.append(Request((prefix_token,), tuple(tokens[:first])))
    predicted = first
    while predicted < len(tokens):
        n_pred = min(len(tokens) - predicted, max_length)
        end = predicted + n_pred
        inputs = tokens[max(0, end - max_length - 1): end - 1]
        # make_disjoint_window: the context is the inputs that are not also predictions
        context = inputs[: len(inputs) - (n_pred - 1)]
        windows.append(Request(tuple(context), tuple(tokens[end - n_pred: end])))
        predicted = end
    return windows


def rolling_perplexity(model, tokenizer, texts: Iterable[str | TextItem], max_length: int | None = None,
                       batch_size: int = 8, *, progress: bool = True) -> ItemScores:
    """Corpus perplexity of ``texts`` (strings or :class:`TextItem`), lm-eval wikitext-style."""
    items = [t if isinstance(t, TextItem) else TextItem(f"text-{i}", t) for i, t in enumerate(texts)]
    if not items:
        raise DataError("no texts to score")
    scorer = LoglikelihoodScorer(model, tokenizer, max_length=max_length, batch_size=batch_size,
                                 progress=progress, desc="perplexity")
    windows_per_item = []
    flat: list[list[Request]] = []
    for item in items:
        windows = rolling_windows(scorer.tok_encode(item.text), scorer.prefix_token_id, scorer.max_length)
        windows_per_item.append(len(windows))
        flat.extend([w] for w in windows)
    scored = scorer.score_groups(flat)
    per_item = []
    k = 0
    for item, n_windows in zip(items, windows_per_item):
        results = [s[0] for s in scored[k:k + n_windows]]
        k += n_windows
        loglik = float(sum(r.loglik for r in results))
        n_tokens = sum(r.n_tokens for r in results)
        n_words = len(re.split(r"\s+", item.text))
        n_bytes = len(item.text.encode("utf-8"))
        per_item.append({
            "example_id": item.example_id,
            "prompt": item.text,
            "reference": "",
            "output": "",
            **_ppl_metrics(loglik, n_words, n_bytes, n_tokens),
            "loglik": loglik,
            "n_tokens": n_tokens,
            "n_words": n_words,
            "n_bytes": n_bytes,
        })
    totals = {key: sum(r[key] for r in per_item) for key in ("loglik", "n_words", "n_bytes", "n_tokens")}
    metrics = _ppl_metrics(totals["loglik"], totals["n_words"], totals["n_bytes"], totals["n_tokens"])
    return ItemScores(metrics, per_item)


def _ppl_metrics(loglik: float, n_words: int, n_bytes: int, n_tokens: int) -> dict[str, float]:
    return {
        "word_perplexity": _safe_exp(-loglik / n_words),
        "byte_perplexity": _safe_exp(-loglik / n_bytes),
        "bits_per_byte": -loglik / n_bytes / math.log(2),
        "token_perplexity": _safe_exp(-loglik / n_tokens) if n_tokens else float("nan"),
    }


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


# ---- LAMBADA ---------------------------------------------------------------------------------
def score_lambada(model, tokenizer, items: Sequence[LambadaItem], batch_size: int = 16, *,
                  max_length: int | None = None, progress: bool = True) -> ItemScores:
    """lm-eval ``lambada_openai``: ``acc`` (last word fully greedy) and ``perplexity``.

    Per item, ``output`` is the model's argmax tokens at the target positions (teacher-forced),
    which equals the target exactly when ``acc`` is 1.
    """
    if not items:
        raise DataError("no LAMBADA items to score")
    scorer = LoglikelihoodScorer(model, tokenizer, max_length=max_length, batch_size=batch_size,
                                 progress=progress, desc="lambada")
    scored = scorer.score_texts([[(item.context, item.continuation)] for item in items])
    per_item = []
    for item, (result,) in zip(items, scored):
        per_item.append({
            "example_id": item.example_id,
            "prompt": item.context,
            "reference": item.continuation,
            "output": tokenizer.decode(list(result.greedy_tokens)),
            "acc": float(result.is_greedy),
            "perplexity": _safe_exp(-result.loglik),
            "loglik": result.loglik,
        })
    mean_ll = sum(r["loglik"] for r in per_item) / len(per_item)
    metrics = {"acc": sum(r["acc"] for r in per_item) / len(per_item), "perplexity": _safe_exp(-mean_ll)}
    return ItemScores(metrics, per_item)
