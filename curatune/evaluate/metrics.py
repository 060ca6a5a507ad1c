"""Metrics for generated answers, each checked against a reference implementation.

* ``bleu``, ``chrf`` (chrF++: character 6-grams plus word bigrams, ``word_order=2``) and
  ``ter`` are sacrebleu's corpus-level scores with sacrebleu's default settings, so a
  number here equals ``sacrebleu REF -i HYP -m bleu chrf ter --chrf-word-order 2``
  (bench/eval_sacrebleu.py checks it). Each comes with sacrebleu's signature string.
  The per-example columns are sacrebleu's sentence-level scores (BLEU with effective
  order, as sacrebleu recommends for single sentences); they are for browsing, the
  corpus number is not their mean.
* ``exact_match``: 1 when hypothesis and reference are equal after collapsing runs of
  whitespace and trimming; case and punctuation count.
* ``field_f1`` (extraction tasks): hypothesis and reference are parsed as JSON objects
  (a surrounding Markdown code fence is allowed) and flattened to (key, normalized value)
  pairs; F1 of the pair multisets per example, averaged over examples whose reference is
  a JSON object. An unparsable hypothesis predicts no fields (F1 = 0). ``json_valid`` is
  the share of hypotheses that parse as a JSON object.
* ``comet_like``: embedding similarity, see :mod:`curatune.evaluate.comet_like` and
  :func:`comet_like_scores`. It is not COMET, and it does not beat chrF++ consistently at
  ordering translation systems the way expert MQM judgments do (bench/mt_metric_mqm.py).

Every scorer returns a :class:`MetricResult`: corpus values, how many items each value
covers, one per-example column per value, and signatures.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from curatune.errors import ConfigError
from curatune.models import load_embedder

#: Bumped whenever comet_like's scores change; it is in the signature (``version:N``) and, from
#: version 2 on, in the generation suites' resume fingerprint, so scores of two versions are
#: never mixed in one run.
COMET_LIKE_VERSION = "1"
#: What the report and the app say wherever comet_like is shown.
COMET_LIKE_NOTE = (
    "comet_like is an embedding similarity (MiniLM cosine to the reference, plus a source term), "
    "not COMET: against expert MQM judgments of WMT21 TED translations it did not beat chrF++ "
    "consistently, so read chrF++ as the translation metric (bench/results/mt_metric_mqm.md)."
)
#: Weight of cos(h, r) in a comet_like segment score; the rest goes to the source-consistency term.
COMET_LIKE_REFERENCE_WEIGHT = 0.75


@dataclass
class MetricResult:
    corpus: dict[str, float] = field(default_factory=dict)
    n_items: dict[str, int] = field(default_factory=dict)
    #: One list per column, aligned with the inputs; NaN where an item has no value.
    per_item: dict[str, list[float]] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)

    def update(self, other: "MetricResult") -> None:
        self.corpus.update(other.corpus)
        self.n_items.update(other.n_items)
        self.per_item.update(other.per_item)
        self.signatures.update(other.signatures)


# ----------------------------------------------------------------------------- directions


@dataclass(frozen=True)
class MetricInfo:
    """Direction (+1 higher is better, -1 lower is better) and the width of the metric's range
    (None for unbounded metrics)."""

    direction: int
    scale: float | None = None


#: Every metric the evaluation stage writes, with its direction and scale.
METRICS: dict[str, MetricInfo] = {
    # higher is better
    "bleu": MetricInfo(+1, 100.0),
    "chrf": MetricInfo(+1, 100.0),
    "comet_like": MetricInfo(+1, 1.0),
    "exact_match": MetricInfo(+1, 1.0),
    "field_f1": MetricInfo(+1, 1.0),
    "json_valid": MetricInfo(+1, 1.0),
    "acc": MetricInfo(+1, 1.0),
    "acc_norm": MetricInfo(+1, 1.0),
    "macro_f1": MetricInfo(+1, 1.0),
    "base_answer_logprob": MetricInfo(+1, None),
    "answer_agreement": MetricInfo(+1, 1.0),
    # IFEval through the lm_eval suite kind: share of prompts (instructions) followed, strict / loose
    "prompt_level_strict_acc": MetricInfo(+1, 1.0),
    "prompt_level_loose_acc": MetricInfo(+1, 1.0),
    "inst_level_strict_acc": MetricInfo(+1, 1.0),
    "inst_level_loose_acc": MetricInfo(+1, 1.0),
    # lower is better
    "ter": MetricInfo(-1, 100.0),
    "perplexity": MetricInfo(-1, None),
    "word_perplexity": MetricInfo(-1, None),
    "byte_perplexity": MetricInfo(-1, None),
    "token_perplexity": MetricInfo(-1, None),
    "bits_per_byte": MetricInfo(-1, None),
    "kl_divergence": MetricInfo(-1, None),
}

#: Base-model values that hold by definition, used when scores.parquet has no base row.
DEFINITIONAL_BASE = {"kl_divergence": 0.0, "answer_agreement": 1.0}

#: Order in which a suite's headline metric is picked when the config does not name one.
PRIMARY_PREFERENCE = (
    "field_f1", "chrf", "acc_norm", "acc", "macro_f1", "exact_match", "prompt_level_strict_acc", "bleu",
    "comet_like", "json_valid", "bits_per_byte", "word_perplexity", "byte_perplexity", "token_perplexity",
    "perplexity",
    "kl_divergence", "base_answer_logprob", "ter",
)


class MetricTable:
    """Directions and scales, the built-in table plus the config's overrides."""

    def __init__(self, overrides: dict[str, str] | None = None):
        self._metrics = dict(METRICS)
        for name, direction in (overrides or {}).items():
            scale = self._metrics[name].scale if name in self._metrics else None
            self._metrics[name] = MetricInfo(+1 if direction == "higher" else -1, scale)

    def known(self, metric: str) -> bool:
        return metric in self._metrics

    def direction(self, metric: str) -> int:
        return self._metrics[metric].direction

    def gain(self, metric: str, value: float, base: float) -> float:
        """How much better than the base model (positive = better), in metric units."""
        return self.direction(metric) * (value - base)

    def relative(self, delta: float, base: float) -> float | None:
        return delta / abs(base) if base else None

    def scale(self, metric: str) -> float | None:
        """Width of the metric's range (1 for 0-1 metrics, 100 for 0-100), None when unbounded."""
        return self._metrics[metric].scale

    def points(self, metric: str, delta: float, base: float) -> float | None:
        """A gain or drop on a 0-100 scale (see the module docstring)."""
        scale = self._metrics[metric].scale
        if scale is not None:
            return 100.0 * delta / scale
        return 100.0 * delta / abs(base) if base else None

    def epsilon_scale(self, metric: str, base: float | None, observed: np.ndarray) -> float:
        """The unit ``saturation_epsilon`` is a fraction of: the metric's range, else the base
        value, else (KL divergence, 0 for the base model) the largest observed magnitude."""
        scale = self._metrics[metric].scale
        if scale is not None:
            return scale
        if base is not None and np.isfinite(base) and base != 0:
            return abs(base)
        largest = float(np.max(np.abs(observed))) if len(observed) else 0.0
        return largest if largest > 0 else 1.0


# ----------------------------------------------------------------------------- sacrebleu


def _sacrebleu_metric(name: str, hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    from sacrebleu.metrics import BLEU, CHRF, TER

    corpus_metric, sentence_metric = {
        "bleu": (BLEU(), BLEU(effective_order=True)),
        "chrf": (CHRF(word_order=2), CHRF(word_order=2)),
        "ter": (TER(), TER()),
    }[name]
    hyps, refs = list(hypotheses), list(references)
    corpus = corpus_metric.corpus_score(hyps, [refs]).score
    per_item = [float(sentence_metric.sentence_score(h, [r]).score) for h, r in zip(hyps, refs)]
    return MetricResult(
        corpus={name: float(corpus)},
        n_items={name: len(hyps)},
        per_item={name: per_item},
        signatures={name: str(corpus_metric.get_signature())},
    )


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    return _sacrebleu_metric("bleu", hypotheses, references)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    return _sacrebleu_metric("chrf", hypotheses, references)


def corpus_ter(hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    return _sacrebleu_metric("ter", hypotheses, references)


# ----------------------------------------------------------------------------- exact match


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    per_item = [float(normalize_whitespace(h) == normalize_whitespace(r)) for h, r in zip(hypotheses, references)]
    return MetricResult(
        corpus={"exact_match": _mean(per_item)},
        n_items={"exact_match": len(per_item)},
        per_item={"exact_match": per_item},
        signatures={"exact_match": "exact_match|whitespace:collapsed|case:mixed"},
    )


# ----------------------------------------------------------------------------- field F1

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```$", re.S)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds (optionally inside a Markdown code fence), else None."""
    stripped = text.strip()
    fence = _FENCE.match(stripped)
    if fence:
        stripped = fence.group(1).strip()
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _normalize_key(key: str) -> str:
    return normalize_whitespace(str(key)).casefold()


def _normalize_number(value: float) -> str:
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(float(value))


# A plain number, optionally with thousands separators ("1,299.00"); "1,2" stays text.
_NUMBER = re.compile(r"[-+]?((\d{1,3}(,\d{3})+|\d+)(\.\d+)?|\.\d+)(e[-+]?\d+)?")


def normalize_value(value: Any) -> str:
    """Canonical text of a scalar: case and whitespace folded, numbers and numeric strings alike."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _normalize_number(float(value))
    text = normalize_whitespace(str(value)).casefold()
    if _NUMBER.fullmatch(text):
        return _normalize_number(float(text.replace(",", "")))
    return text


def json_fields(obj: dict[str, Any], prefix: str = "") -> Counter:
    """(key path, normalized value) pairs of a JSON object; nested objects use dotted keys,
    each list element is its own pair under the list's key."""
    pairs: Counter = Counter()
    for key, value in obj.items():
        path = prefix + _normalize_key(key)
        if isinstance(value, dict):
            pairs.update(json_fields(value, path + ".") if value else Counter({(path, "{}"): 1}))
        elif isinstance(value, list):
            if not value:
                pairs[(path, "[]")] += 1
            for element in value:
                if isinstance(element, dict):
                    pairs.update(json_fields(element, path + "[]."))
                elif isinstance(element, list):
                    pairs[(path, json.dumps(element, sort_keys=True))] += 1
                else:
                    pairs[(path, normalize_value(element))] += 1
        else:
            pairs[(path, normalize_value(value))] += 1
    return pairs


def field_f1_score(hypothesis: str, reference: str) -> float | None:
    """F1 over (key, value) pairs; None when the reference is not a JSON object."""
    gold = parse_json_object(reference)
    if gold is None:
        return None
    predicted_obj = parse_json_object(hypothesis)
    predicted = json_fields(predicted_obj) if predicted_obj is not None else Counter()
    expected = json_fields(gold)
    if not predicted and not expected:
        return 1.0
    true_positives = sum((predicted & expected).values())
    if true_positives == 0:
        return 0.0
    precision = true_positives / sum(predicted.values())
    recall = true_positives / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


def field_f1(hypotheses: Sequence[str], references: Sequence[str]) -> MetricResult:
    scores = [field_f1_score(h, r) for h, r in zip(hypotheses, references)]
    per_item = [float("nan") if s is None else s for s in scores]
    scored = [s for s in scores if s is not None]
    valid = [float(parse_json_object(h) is not None) for h in hypotheses]
    return MetricResult(
        corpus={"field_f1": _mean(scored), "json_valid": _mean(valid)},
        n_items={"field_f1": len(scored), "json_valid": len(valid)},
        per_item={"field_f1": per_item, "json_valid": valid},
        signatures={
            "field_f1": "field_f1|pairs:key.path=value|values:casefold+whitespace+numbers|average:macro",
            "json_valid": "json_valid|object|code_fence:allowed",
        },
    )


def looks_like_json_task(references: Sequence[str], threshold: float = 0.5) -> bool:
    """True when most references are JSON objects (an extraction task)."""
    if not references:
        return False
    return sum(parse_json_object(r) is not None for r in references) / len(references) >= threshold


# ----------------------------------------------------------------------------- comet_like


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def comet_like_segments(
    hyp_emb: np.ndarray,
    ref_emb: np.ndarray,
    src_emb: np.ndarray | None = None,
    reference_weight: float = COMET_LIKE_REFERENCE_WEIGHT,
) -> np.ndarray:
    """Segment scores from embeddings (rows aligned).

    With sources: ``w * cos(h, r) + (1 - w) * (1 - |cos(h, s) - cos(r, s)|)``; without:
    ``cos(h, r)``. The first term rewards meaning shared with the reference. The second
    rewards a hypothesis that relates to the source as closely as the reference does: it
    is 1 when the two relate equally, and drops for an answer that ignores the source and
    for one that parrots it when the reference does not. A hypothesis equal to the
    reference scores exactly 1; a copy of the source scores cos(r, s).
    """
    h, r = _unit_rows(np.asarray(hyp_emb, dtype=np.float64)), _unit_rows(np.asarray(ref_emb, dtype=np.float64))
    cos_hr = np.sum(h * r, axis=1)
    if src_emb is None:
        return np.clip(cos_hr, -1.0, 1.0)
    s = _unit_rows(np.asarray(src_emb, dtype=np.float64))
    cos_hs, cos_rs = np.sum(h * s, axis=1), np.sum(r * s, axis=1)
    consistency = 1.0 - np.abs(cos_hs - cos_rs)
    return np.clip(reference_weight * cos_hr + (1.0 - reference_weight) * consistency, -1.0, 1.0)


def load_default_embedder(name: str = "default") -> Any:
    """The sentence embedder (the packaged all-MiniLM-L6-v2 by default), loaded once per process."""
    return load_embedder(name)


def embedder_label(name: str = "default") -> str:
    """Short embedder name for signatures."""
    if name == "default":
        return "all-MiniLM-L6-v2"
    return str(name).rstrip("/").split("/")[-1]


def comet_like_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str] | None = None,
    *,
    embedder: Any = None,
    batch_size: int = 64,
    reference_weight: float = COMET_LIKE_REFERENCE_WEIGHT,
) -> list[float]:
    """Segment scores of the comet_like metric (see :func:`comet_like_segments`)."""
    if not hypotheses:
        return []
    embedder = embedder if embedder is not None else load_default_embedder()

    def embed(texts: Sequence[str]) -> np.ndarray:
        return embedder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    src = embed(sources) if sources is not None else None
    return comet_like_segments(embed(hypotheses), embed(references), src, reference_weight).tolist()


def comet_like_signature(embedder_name: str, with_sources: bool,
                         reference_weight: float = COMET_LIKE_REFERENCE_WEIGHT) -> str:
    weights = f"w_ref:{reference_weight:g}|w_src:{1 - reference_weight:g}" if with_sources else "w_ref:1|src:no"
    return f"comet_like|embedder:{embedder_name}|{weights}|agg:mean|version:{COMET_LIKE_VERSION}"


def comet_like(
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str] | None = None,
    *,
    embedder: Any = None,
    embedder_name: str = "default",
) -> MetricResult:
    scores = comet_like_scores(hypotheses, references, sources, embedder=embedder)
    return MetricResult(
        corpus={"comet_like": _mean(scores)},
        n_items={"comet_like": len(scores)},
        per_item={"comet_like": scores},
        signatures={"comet_like": comet_like_signature(embedder_label(embedder_name), sources is not None)},
    )


# ----------------------------------------------------------------------------- registry

Scorer = Callable[..., MetricResult]

_SCORERS: dict[str, Scorer] = {
    "bleu": lambda h, r, s, ctx: corpus_bleu(h, r),
    "chrf": lambda h, r, s, ctx: corpus_chrf(h, r),
    "ter": lambda h, r, s, ctx: corpus_ter(h, r),
    "exact_match": lambda h, r, s, ctx: exact_match(h, r),
    "field_f1": lambda h, r, s, ctx: field_f1(h, r),
    "comet_like": lambda h, r, s, ctx: comet_like(
        h, r, s, embedder=ctx.get("embedder_loader", load_default_embedder)(), embedder_name=ctx.get("embedder_name", "default")
    ),
}

JSON_TASK_METRICS = ["exact_match", "field_f1", "chrf", "comet_like"]
TEXT_TASK_METRICS = ["bleu", "chrf", "ter", "exact_match", "comet_like"]


def auto_metrics(references: Sequence[str]) -> list[str]:
    """Metrics for a generation suite that names none: picked from what the references are."""
    return list(JSON_TASK_METRICS if looks_like_json_task(references) else TEXT_TASK_METRICS)


def score_generations(
    metrics: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    sources: Sequence[str] | None = None,
    *,
    embedder_loader: Callable[[], Any] | None = None,
    embedder_name: str = "default",
) -> MetricResult:
    """Score ``hypotheses`` against ``references`` with each named metric.

    ``embedder_loader`` is called only when comet_like is asked for, so suites without it
    never load an embedder.
    """
    if len(hypotheses) != len(references) or (sources is not None and len(sources) != len(hypotheses)):
        raise ValueError("hypotheses, references and sources must have the same length")
    context: dict[str, Any] = {"embedder_name": embedder_name}
    if embedder_loader is not None:
        context["embedder_loader"] = embedder_loader
    result = MetricResult()
    for name in metrics:
        if name not in _SCORERS:
            raise ConfigError(f"unknown generation metric {name!r}; choose from {', '.join(_SCORERS)}")
        result.update(_SCORERS[name](list(hypotheses), list(references), sources, context))
    return result


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
