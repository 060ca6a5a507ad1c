"""comet_like: a reference-based embedding-similarity metric (an ``evaluate`` module).

It is NOT COMET. COMET is a neural estimator trained on human judgements of translation
quality; this is an untrained embedding similarity that runs offline with a small sentence
embedder (all-MiniLM-L6-v2 by default, which reads English only). Use it to compare models on
the same data, not as a COMET number. Against expert MQM judgments (WMT21 TED talks, en-de and
zh-en; bench/mt_metric_mqm.py) it did not beat chrF++ consistently at ranking systems, and its
segment-level agreement was lower: chrF++ is the translation metric to read first.

Segment score, with unit-normalized embeddings h (hypothesis), r (reference), s (source):

    with sources:    0.75 * cos(h, r) + 0.25 * (1 - |cos(h, s) - cos(r, s)|)
    without sources: cos(h, r)

The first term rewards meaning shared with the reference. The second rewards a hypothesis
that relates to the source as closely as the reference does: 1 when they relate equally;
lower for an answer that ignores the source, and for one that copies the source when the
reference does not. h == r scores 1; a verbatim copy of the source scores cos(r, s).
The corpus score is the mean of the segment scores. The signature names the version
(``version:1``); a version that scores differently gets a new number.

Usage (offline)::

    import evaluate
    from curatune.evaluate.comet_like import MODULE_DIR
    metric = evaluate.load(str(MODULE_DIR))
    metric.compute(predictions=[...], references=[...], sources=[...])
"""
import datasets
import evaluate

from curatune.evaluate.metrics import (
    COMET_LIKE_REFERENCE_WEIGHT,
    comet_like_scores,
    comet_like_signature,
    embedder_label,
    load_default_embedder,
)

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): one reference per prediction.
    sources (list of str, optional): the inputs the predictions answer; adds the source-consistency term.
    embedder (str or SentenceTransformer, optional): 'default' (all-MiniLM-L6-v2), a local folder,
        or an already loaded SentenceTransformer.
    batch_size (int, optional): sentences per embedding batch (default 64).
    reference_weight (float, optional): weight of cos(h, r) when sources are given (default 0.75).
Returns:
    score (float): mean segment score; scores (list of float): one per prediction; signature (str).
Examples:
    >>> metric = evaluate.load(str(MODULE_DIR))
    >>> metric.compute(predictions=["a red shirt"], references=["a red shirt"])["score"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CometLike(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # sources is passed through as a keyword (evaluate checks only these two inputs).
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://www.sbert.net/docs/sentence_transformer/pretrained_models.html"],
        )

    def _compute(self, predictions, references, sources=None, embedder="default", batch_size=64,
                 reference_weight=COMET_LIKE_REFERENCE_WEIGHT):
        name = embedder if isinstance(embedder, str) else "custom"
        model = load_default_embedder(embedder) if isinstance(embedder, str) else embedder
        scores = comet_like_scores(
            predictions, references, sources, embedder=model, batch_size=batch_size, reference_weight=reference_weight
        )
        return {
            "score": float(sum(scores) / len(scores)) if scores else float("nan"),
            "scores": scores,
            "signature": comet_like_signature(embedder_label(name), sources is not None, reference_weight),
        }
