"""Paired significance tests: is a fine-tuned model's score different from the base model's
(or another cell's) on the same items, beyond what the choice of items explains?

Every function here is pure (arrays in, a :class:`PairedResult` out) and seeded; which test
applies to which metric, and reading the items from a run, is
:mod:`curatune.evaluate.analysis.comparisons`.

Tests (``a`` is the reference system, e.g. the base model; ``b`` the system under test;
differences are ``b - a`` in the metric's own units):

* :func:`mcnemar_exact` for per-item 0/1 metrics (acc, acc_norm, exact_match): the exact
  conditional McNemar test, a two-sided binomial test of the discordant items (right in one
  system only) against p = 1/2; equal to ``statsmodels`` ``mcnemar(table, exact=True)``.
  The interval for the difference in accuracy is Agresti & Min's (2005) adjusted Wald
  interval for matched proportions (add 1/2 to each of the four cells), which keeps its
  coverage with few discordant items where the plain Wald interval does not.
* :func:`paired_bootstrap` for metrics that are a function of per-item sums: means of
  per-item values (field F1, KL, log-likelihood, sentence chrF), ratios (bits per byte,
  perplexities) and sacrebleu's corpus BLEU, chrF++ and TER (sums of sufficient statistics).
  Items are resampled with replacement, the same resample for both systems (paired); the
  interval is the percentile interval of the resampled differences.

  Two p-value definitions are offered. ``"sacrebleu"`` is sacrebleu's ``--paired-bs``
  (Koehn 2004 as in Moses' bootstrap-hypothesis-difference-significance.pl): with d_k the
  resampled |b - a|, p = (#{d_k - mean(d) > |observed difference|} + 1) / (B + 1). With the
  same seed and number of resamples, :func:`sacrebleu_paired_bootstrap` reproduces
  sacrebleu's p-value and 95% intervals exactly (bench/significance_sacrebleu.py). That
  definition is what MT papers report, but it is known to be liberal (it centres the
  absolute differences, so for a clear difference it is closer to a one-sided p-value).
  ``"shift"`` is the textbook bootstrap test (Efron & Tibshirani 1993, section 16.4): the
  resampled differences shifted to mean 0 approximate the null distribution, and
  p = (#{|D_k - mean(D)| >= |observed difference|} + 1) / (B + 1). curatune uses
  "sacrebleu" for the corpus metrics (to agree with the reference) and "shift" for
  everything else.
* :func:`adjust_p_values`: false-discovery control over many tests (Benjamini-Hochberg by
  default, Holm on request), via statsmodels ``multipletests``.
* :func:`verdict`: the label a user reads, from the adjusted p-value and the direction of
  the metric.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np
from scipy.special import (  # scipy.stats costs seconds to import; `curatune report` imports this
    bdtr,
    ndtri,
)

#: sacrebleu's defaults for ``--paired-bs``: 1000 resamples, numpy seed 12345.
SACREBLEU_RESAMPLES = 1000
SACREBLEU_SEED = 12345

SIGNIFICANT_GAIN = "significant gain"
SIGNIFICANT_LOSS = "significant loss"
NO_CHANGE = "no detectable change"
CANNOT_TELL = "cannot tell"  # the items of the two systems do not match, or a file is missing
NOT_TESTED = "not tested"  # a comparison without a meaningful null (see comparisons.py)
LABELS = (SIGNIFICANT_GAIN, SIGNIFICANT_LOSS, NO_CHANGE, CANNOT_TELL, NOT_TESTED)

FdrMethod = Literal["fdr_bh", "holm"]


#: Discordance assumed before any run: 15% of items answered differently by the base model and a
#: fine-tuned one. Small fine-tunes of one model usually flip fewer items; a lower psi makes
#: small changes easier to detect, so this default errs on the side of asking for more items.
DEFAULT_DISCORDANCE = 0.15


@dataclass
class PairedResult:
    """One paired comparison of system b against system a on the same items."""

    test: str  # mcnemar_exact | paired_bootstrap | sacrebleu_paired_bs
    n_items: int
    value_a: float
    value_b: float
    difference: float  # value_b - value_a, in the metric's units
    ci_low: float
    ci_high: float
    ci_level: float
    p_value: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- McNemar


def _binary(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name}: McNemar's test needs per-item values of 0 or 1")
    return array.astype(bool)


#: Metrics whose per-item values are correct (1) or not (0): McNemar's test applies.
BINARY_METRICS = ("acc", "acc_norm", "exact_match", "json_valid", "answer_agreement",
                  "prompt_level_strict_acc", "prompt_level_loose_acc")


def is_binary(values: Sequence[float]) -> bool:
    array = np.asarray(values, dtype=float)
    return array.size > 0 and bool(np.isin(array, (0.0, 1.0)).all())


def mcnemar_exact(a: Sequence[float], b: Sequence[float], ci_level: float = 0.95) -> PairedResult:
    """McNemar's exact test of per-item correctness (1 = right) of two systems on the same items.

    Only the discordant items carry information: ``n_a`` right in a only, ``n_b`` right in b
    only. Under the null both are equally likely, so min(n_a, n_b) is binomial(n_a + n_b, 1/2)
    and the two-sided p-value is ``min(1, 2 * P(X <= min))`` (statsmodels' definition).
    """
    right_a, right_b = _binary(a, "a"), _binary(b, "b")
    if right_a.shape != right_b.shape:
        raise ValueError("a and b must hold the same items")
    n = int(right_a.size)
    if n == 0:
        raise ValueError("no items")
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(~right_a & right_b))
    discordant = only_a + only_b
    # bdtr(k, n, p) is the binomial CDF P(X <= k), what scipy.stats.binom.cdf computes.
    p = 1.0 if discordant == 0 else min(1.0, 2.0 * float(bdtr(min(only_a, only_b), discordant, 0.5)))
    low, high = agresti_min_interval(only_a, only_b, n, ci_level)
    return PairedResult(
        test="mcnemar_exact",
        n_items=n,
        value_a=float(right_a.mean()),
        value_b=float(right_b.mean()),
        difference=(only_b - only_a) / n,
        ci_low=low,
        ci_high=high,
        ci_level=ci_level,
        p_value=p,
        detail={"right_in_a_only": only_a, "right_in_b_only": only_b, "both_right": int(np.sum(right_a & right_b)),
                "both_wrong": int(np.sum(~right_a & ~right_b)), "interval": "agresti_min"},
    )


def agresti_min_interval(only_a: int, only_b: int, n: int, ci_level: float = 0.95) -> tuple[float, float]:
    """Agresti & Min (2005) interval for p_b - p_a of matched pairs: the Wald interval after
    adding 1/2 to each cell of the 2x2 table (n + 2 pairs), clipped to [-1, 1]."""
    z = float(ndtri(0.5 + ci_level / 2))
    n_adj = n + 2.0
    x, y = only_b + 0.5, only_a + 0.5
    diff = (x - y) / n_adj
    variance = ((x + y) - (x - y) ** 2 / n_adj) / n_adj**2
    half = z * math.sqrt(max(variance, 0.0))
    return max(-1.0, diff - half), min(1.0, diff + half)


# ----------------------------------------------------------------------------- bootstrap

#: A statistic of a (re)sample: a function of the column sums of the per-item statistics.
SumStatistic = Callable[[np.ndarray], float]


def resample_counts(n_items: int, n_resamples: int, seed: int | None) -> np.ndarray:
    """How often each item occurs in each bootstrap resample, shape (n_resamples, n_items).

    The indices come from ``np.random.default_rng(seed).choice(n, size=(B, n))``, the draw
    sacrebleu makes, so the same seed gives sacrebleu's resamples."""
    rng = np.random.default_rng(seed)
    indices = rng.choice(n_items, size=(n_resamples, n_items), replace=True)
    counts = np.zeros((n_resamples, n_items), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], indices), 1.0)
    return counts


def _sacrebleu_ci(scores: np.ndarray) -> tuple[float, float]:
    """sacrebleu's ``estimate_ci``: mean and half width of the 95% interval (n // 40 from each end)."""
    ordered = np.sort(scores)
    lower = len(ordered) // 40
    return float(ordered.mean()), float(0.5 * (ordered[len(ordered) - lower - 1] - ordered[lower]))


def paired_bootstrap(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    statistic: SumStatistic,
    *,
    n_resamples: int = SACREBLEU_RESAMPLES,
    seed: int | None = SACREBLEU_SEED,
    ci_level: float = 0.95,
    p_value: Literal["shift", "sacrebleu"] = "shift",
    float32_sums: bool = False,
    test: str = "paired_bootstrap",
) -> PairedResult:
    """Paired bootstrap of a statistic of per-item sums (see the module docstring).

    ``stats_a`` and ``stats_b``: (n_items, k) per-item statistics, rows aligned (row i is the
    same item in both). ``statistic`` maps a length-k vector of column sums to the score.
    ``float32_sums`` feeds the statistic float32 sums, as sacrebleu does (exact for its
    integer counts, and it changes the last digits of the scores).
    """
    stats_a = np.asarray(stats_a, dtype=np.float64)
    stats_b = np.asarray(stats_b, dtype=np.float64)
    if stats_a.ndim == 1:
        stats_a, stats_b = stats_a[:, None], stats_b[:, None]
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"a and b must hold the same items (shapes {stats_a.shape} and {stats_b.shape})")
    n = stats_a.shape[0]
    if n == 0:
        raise ValueError("no items")
    counts = resample_counts(n, n_resamples, seed)
    cast = (lambda v: v.astype(np.float32)) if float32_sums else (lambda v: v)
    sums_a, sums_b = cast(counts @ stats_a), cast(counts @ stats_b)
    scores_a = np.array([statistic(row) for row in sums_a], dtype=np.float64)
    scores_b = np.array([statistic(row) for row in sums_b], dtype=np.float64)
    value_a, value_b = float(statistic(stats_a.sum(0))), float(statistic(stats_b.sum(0)))
    observed = value_b - value_a
    diffs = scores_b - scores_a
    sacrebleu_p = None
    if p_value == "sacrebleu":
        absolute = np.abs(diffs)
        exceed = int(np.sum(absolute - absolute.mean() > abs(observed)))
        if observed == 0:
            # Identical scores: sacrebleu's strict ">" counts no resample and reports its smallest
            # p-value, 1 / (B + 1). No difference is no evidence of one: report 1 (and keep sacrebleu's).
            sacrebleu_p = (exceed + 1) / (n_resamples + 1)
            exceed = n_resamples
    elif p_value == "shift":
        exceed = int(np.sum(np.abs(diffs - diffs.mean()) >= abs(observed)))
    else:
        raise ValueError(f"p_value must be 'shift' or 'sacrebleu', got {p_value!r}")
    tail = (1 - ci_level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    mean_a, ci_a = _sacrebleu_ci(scores_a)
    mean_b, ci_b = _sacrebleu_ci(scores_b)
    return PairedResult(
        test=test,
        n_items=n,
        value_a=value_a,
        value_b=value_b,
        difference=observed,
        ci_low=float(low),
        ci_high=float(high),
        ci_level=ci_level,
        p_value=(exceed + 1) / (n_resamples + 1),
        detail={
            "n_resamples": n_resamples, "seed": seed, "p_value_definition": p_value,
            # Each system's resampled mean and 95% half width as sacrebleu prints them ("mu ± ci").
            "mean_a": mean_a, "ci_a": ci_a, "mean_b": mean_b, "ci_b": ci_b,
            **({"sacrebleu_p_value": sacrebleu_p} if sacrebleu_p is not None else {}),
        },
    )


def mean_statistic(values_a: Sequence[float], values_b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, SumStatistic]:
    """Per-item stats (value, 1) whose sums give the mean: value sum / item count."""
    a = np.column_stack([np.asarray(values_a, dtype=float), np.ones(len(values_a))])
    b = np.column_stack([np.asarray(values_b, dtype=float), np.ones(len(values_b))])
    return a, b, lambda sums: float(sums[0] / sums[1])


def macro_f1_statistics(references: Sequence[str], outputs: Sequence[str],
                        classes: Sequence[str] | None = None) -> tuple[np.ndarray, SumStatistic]:
    """Per-item stats whose column sums give macro-F1 over ``classes`` (default: the labels of
    ``references``): for each class, is the item a true positive, false positive, false negative.
    The statistic is scikit-learn's ``f1_score(average="macro", labels=classes, zero_division=0)``
    of the summed counts, so a paired bootstrap of macro-F1 resamples items, not classes."""
    references = np.asarray([str(r) for r in references])
    outputs = np.asarray([str(o) for o in outputs])
    classes = sorted(set(references.tolist())) if classes is None else list(classes)
    columns = []
    for label in classes:
        is_ref, is_out = references == label, outputs == label
        columns += [is_ref & is_out, ~is_ref & is_out, is_ref & ~is_out]
    stats = np.column_stack(columns).astype(np.float64) if columns else np.zeros((len(references), 0))

    def statistic(sums: np.ndarray) -> float:
        tp, fp, fn = sums[0::3], sums[1::3], sums[2::3]
        denominator = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)
        return float(f1.mean()) if len(f1) else float("nan")

    return stats, statistic


# ----------------------------------------------------------------------------- sacrebleu

SACREBLEU_METRICS = ("bleu", "chrf", "ter")


def sacrebleu_metric(name: str):
    """The sacrebleu metric object curatune scores ``name`` with (metrics.py: default BLEU,
    chrF++ = CHRF(word_order=2), default TER)."""
    from sacrebleu.metrics import BLEU, CHRF, TER  # the same import metrics.py makes

    if name == "bleu":
        return BLEU()
    if name == "chrf":
        return CHRF(word_order=2)
    if name == "ter":
        return TER()
    raise ValueError(f"{name!r} is not a sacrebleu corpus metric ({', '.join(SACREBLEU_METRICS)})")


def corpus_statistics(metric: str, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's per-segment sufficient statistics of ``metric`` (one reference per segment),
    shape (n_segments, k); the corpus score is a function of their column sums."""
    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references must have the same length")
    scorer = sacrebleu_metric(metric)
    return np.array(scorer._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64)


def corpus_statistic(metric: str) -> SumStatistic:
    """The corpus score of ``metric`` from summed sufficient statistics."""
    scorer = sacrebleu_metric(metric)
    return lambda sums: float(scorer._compute_score_from_stats(list(sums)).score)


def paired_corpus_test(
    metric: str,
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    *,
    n_resamples: int = SACREBLEU_RESAMPLES,
    seed: int | None = SACREBLEU_SEED,
    ci_level: float = 0.95,
) -> PairedResult:
    """sacrebleu's ``--paired-bs`` on precomputed statistics (:func:`corpus_statistics`)."""
    result = paired_bootstrap(stats_a, stats_b, corpus_statistic(metric), n_resamples=n_resamples, seed=seed,
                              ci_level=ci_level, p_value="sacrebleu", float32_sums=True,
                              test="sacrebleu_paired_bs")
    return result


def sacrebleu_paired_bootstrap(
    metric: str,
    hypotheses_a: Sequence[str],
    hypotheses_b: Sequence[str],
    references: Sequence[str],
    *,
    n_resamples: int = SACREBLEU_RESAMPLES,
    seed: int | None = SACREBLEU_SEED,
    ci_level: float = 0.95,
) -> PairedResult:
    """sacrebleu's ``--paired-bs`` for one corpus metric: baseline a, system b, one reference
    per segment. Same resamples (seed, count), same p-value, and the same "mean ± ci" per
    system (in ``detail``) as ``sacrebleu REF -i A B -m METRIC --paired-bs``; in addition the
    percentile interval of the difference b - a."""
    if not (len(hypotheses_a) == len(hypotheses_b) == len(references)):
        raise ValueError("hypotheses and references must have the same length")
    return paired_corpus_test(metric, corpus_statistics(metric, hypotheses_a, references),
                              corpus_statistics(metric, hypotheses_b, references),
                              n_resamples=n_resamples, seed=seed, ci_level=ci_level)


# ----------------------------------------------------------------------------- many tests


def adjust_p_values(p_values: Sequence[float], method: FdrMethod = "fdr_bh", alpha: float = 0.05) -> list[float]:
    """Adjusted p-values of a family of tests (statsmodels ``multipletests``).

    ``fdr_bh`` (Benjamini-Hochberg) bounds the expected share of false "significant" labels
    among all the significant ones; it stays valid when the tests are positively dependent
    (Benjamini & Yekutieli 2001), as tests of nested cells on the same items are. ``holm``
    bounds the chance of any false label at all (family-wise), at the price of missing more
    real changes when a run has hundreds of tests."""
    # statsmodels takes seconds to import: only when there is something to adjust.
    from statsmodels.stats.multitest import multipletests

    values = np.asarray(list(p_values), dtype=float)
    if values.size == 0:
        return []
    return [float(p) for p in multipletests(values, alpha=alpha, method=method)[1]]


def verdict(difference: float, direction: int, p_adjusted: float | None, alpha: float = 0.05) -> str:
    """The label of a comparison: significant gain / significant loss when the adjusted
    p-value is below ``alpha`` (gain or loss by the metric's direction: +1 higher is better),
    else no detectable change."""
    if p_adjusted is None or not math.isfinite(p_adjusted):
        return CANNOT_TELL
    if p_adjusted >= alpha or difference == 0:
        return NO_CHANGE
    return SIGNIFICANT_GAIN if direction * difference > 0 else SIGNIFICANT_LOSS
