"""Meta-evaluation of translation metrics against human judgments.

How well does a metric agree with people? Two views, as in the WMT metrics tasks:

* system level, :func:`pairwise_accuracy`: the share of system pairs that the metric orders
  like the human scores (Kocmi et al., 2021), with ``sign(0) = 0`` so a metric tie counts
  as a disagreement unless the humans tie too;
* segment level, :func:`segment_kendall`: Kendall's tau-b (scipy) between metric and human
  scores over every rated (system, segment) item, and :func:`grouped_kendall`, the mean of
  the per-segment tau-b over the systems that translated that segment (WMT's "group by
  item" view, which ignores how hard each segment is).

:func:`cross_fitted_predictions` scores every row with a model that never saw the row's
system (leave-systems-out) and, optionally, never saw the row's segment group either, so a
learned metric is judged only on systems it was not fitted on.
"""
from __future__ import annotations

import itertools
from typing import Callable, Hashable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from scipy import stats


def pairwise_accuracy(metric: Mapping[Hashable, float], human: Mapping[Hashable, float]) -> float:
    """Share of system pairs whose metric difference has the sign of the human difference.

    Both mappings are system -> score, higher is better. Only systems in both count.
    """
    systems = sorted(set(metric) & set(human), key=str)
    if len(systems) < 2:
        raise ValueError("pairwise accuracy needs at least two systems scored by both")
    agree = total = 0
    for a, b in itertools.combinations(systems, 2):
        agree += np.sign(metric[a] - metric[b]) == np.sign(human[a] - human[b])
        total += 1
    return agree / total


def pairwise_accuracy_matrix(metric: np.ndarray, human: np.ndarray) -> np.ndarray:
    """:func:`pairwise_accuracy` of many score sets at once (e.g. bootstrap replicates).

    ``metric`` and ``human`` are (replicates, systems) arrays; returns one accuracy per row.
    """
    metric, human = np.atleast_2d(np.asarray(metric, float)), np.atleast_2d(np.asarray(human, float))
    if metric.shape != human.shape or metric.shape[1] < 2:
        raise ValueError("metric and human need the same (replicates, systems) shape, with two systems or more")
    upper = np.triu_indices(metric.shape[1], k=1)
    metric_sign = np.sign(metric[:, :, None] - metric[:, None, :])[:, upper[0], upper[1]]
    human_sign = np.sign(human[:, :, None] - human[:, None, :])[:, upper[0], upper[1]]
    return (metric_sign == human_sign).mean(axis=1)


def segment_kendall(metric: Sequence[float], human: Sequence[float]) -> float:
    """Kendall's tau-b (scipy) of aligned metric and human segment scores, all items pooled."""
    return float(stats.kendalltau(np.asarray(metric, dtype=float), np.asarray(human, dtype=float)).statistic)


def grouped_kendall(frame: pd.DataFrame, metric: str, human: str, group: str = "seg_id") -> float:
    """Mean over groups (segments) of tau-b between ``metric`` and ``human`` across systems.

    Groups where either column is constant have no defined tau and are skipped.
    """
    taus = []
    for _, rows in frame.groupby(group, sort=False):
        if rows[metric].nunique() < 2 or rows[human].nunique() < 2:
            continue
        taus.append(stats.kendalltau(rows[metric].to_numpy(float), rows[human].to_numpy(float)).statistic)
    return float(np.mean(taus)) if taus else float("nan")


class Regressor(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Regressor": ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def cross_fitted_predictions(
    frame: pd.DataFrame,
    features: Sequence[str],
    target: str,
    make_model: Callable[[], Regressor],
    system: str = "system",
    segment_group: str | None = None,
    common_origin: bool = True,
) -> np.ndarray:
    """One out-of-fold prediction per row.

    Leave-one-system-out: the rows of each system are predicted by a model fitted on the
    other systems. With ``segment_group`` (e.g. a document fold), a cell (system s, group g)
    is predicted by a model fitted on rows of other systems AND other groups, so the model
    saw neither the system nor the source sentences it scores.

    ``common_origin``: each fold's prediction is reported relative to that fold's prediction
    at one fixed point (the mean feature vector of the whole frame; features only, no labels).
    Why: a model fitted without system s learns an intercept from the OTHER systems' mean
    score, which is lower the better s is; with weak features that fold-to-fold offset, not the
    features, would decide the system ranking, and rank systems backwards. A fitted metric is
    one model for all systems, so only differences within a model mean anything; for a linear
    model this makes every fold's prediction exactly ``w · (x - anchor)``.
    """
    predictions = np.full(len(frame), np.nan)
    X, y = frame[list(features)].to_numpy(float), frame[target].to_numpy(float)
    systems = frame[system].to_numpy()
    groups = frame[segment_group].to_numpy() if segment_group else np.zeros(len(frame))
    anchor = X.mean(axis=0, keepdims=True)
    for held_system in pd.unique(systems):
        for held_group in pd.unique(groups):
            scored = (systems == held_system) & (groups == held_group)
            if not scored.any():
                continue
            train = (systems != held_system) & ((groups != held_group) if segment_group else True)
            if not train.any():
                raise ValueError(f"no training rows left when holding out {held_system!r}/{held_group!r}")
            model = make_model().fit(X[train], y[train])
            predictions[scored] = model.predict(X[scored]) - (model.predict(anchor)[0] if common_origin else 0.0)
    return predictions


def system_means(frame: pd.DataFrame, column: str, system: str = "system") -> dict[Hashable, float]:
    """System -> mean of ``column`` over its segments."""
    return frame.groupby(system)[column].mean().to_dict()
