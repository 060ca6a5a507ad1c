"""Meta-evaluation of translation metrics: hand-computed pairwise accuracy, Kendall tau, cross-fitting."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression

from curatune.evaluate import meta_eval


def test_pairwise_accuracy_hand_checked():
    human = {"a": 3.0, "b": 1.0, "c": 2.0}
    # pairs (a,b) and (a,c) agree, (b,c) is reversed
    assert meta_eval.pairwise_accuracy({"a": 3.0, "b": 2.0, "c": 1.0}, human) == pytest.approx(2 / 3)
    assert meta_eval.pairwise_accuracy({"a": 9.0, "b": 0.0, "c": 5.0}, human) == 1.0
    assert meta_eval.pairwise_accuracy({"a": -9.0, "b": 0.0, "c": -5.0}, human) == 0.0
    # a metric tie is a disagreement unless the humans tie too
    assert meta_eval.pairwise_accuracy({"a": 1.0, "b": 1.0}, {"a": 2.0, "b": 1.0}) == 0.0
    assert meta_eval.pairwise_accuracy({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}) == 1.0
    # only systems scored by both count
    assert meta_eval.pairwise_accuracy({"a": 2.0, "b": 1.0, "x": 5.0}, {"a": 2.0, "b": 1.0, "y": 0.0}) == 1.0
    with pytest.raises(ValueError):
        meta_eval.pairwise_accuracy({"a": 1.0}, {"a": 1.0})


def test_pairwise_accuracy_matrix_equals_the_pairwise_loop():
    rng = np.random.default_rng(0)
    metric, human = rng.normal(size=(50, 6)).round(1), rng.normal(size=(50, 6)).round(1)  # ties included
    expected = [meta_eval.pairwise_accuracy(dict(enumerate(m)), dict(enumerate(h))) for m, h in zip(metric, human)]
    assert meta_eval.pairwise_accuracy_matrix(metric, human) == pytest.approx(expected)
    assert meta_eval.pairwise_accuracy_matrix([3.0, 2.0, 1.0], [3.0, 1.0, 2.0]) == pytest.approx([2 / 3])
    with pytest.raises(ValueError):
        meta_eval.pairwise_accuracy_matrix([[1.0]], [[1.0]])


def test_segment_kendall_is_tau_b():
    # 6 pairs: 5 concordant, 1 discordant
    assert meta_eval.segment_kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # a tie in x: tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)) = 2 / sqrt(2 * 3)
    assert meta_eval.segment_kendall([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert meta_eval.segment_kendall([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_grouped_kendall_averages_segments_and_skips_constant_ones():
    frame = pd.DataFrame({
        "seg_id": [1, 1, 1, 2, 2, 2, 3, 3, 3],
        "metric": [1, 2, 3, 3, 2, 1, 5, 5, 5],  # segment 3: metric constant -> skipped
        "mqm": [1, 2, 3, 1, 2, 3, 1, 2, 3],
    })
    assert meta_eval.grouped_kendall(frame, "metric", "mqm") == pytest.approx(0.0)  # (+1 + -1) / 2
    assert meta_eval.grouped_kendall(frame[frame.seg_id == 1], "metric", "mqm") == pytest.approx(1.0)
    assert math.isnan(meta_eval.grouped_kendall(frame[frame.seg_id == 3], "metric", "mqm"))


def _frame() -> pd.DataFrame:
    # 3 systems x 4 segments in 2 talks; y = 10 * system index + segment
    rows = [(s, seg, "t1" if seg < 2 else "t2", float(10 * i + seg))
            for i, s in enumerate(["A", "B", "C"]) for seg in range(4)]
    frame = pd.DataFrame(rows, columns=["system", "seg_id", "doc", "y"])
    frame["x"] = frame["y"]
    return frame


def test_cross_fitted_predictions_never_train_on_the_scored_system():
    frame = _frame()
    predicted = meta_eval.cross_fitted_predictions(frame, ["x"], "y", DummyRegressor, common_origin=False)
    # a mean predictor fitted without system A predicts the mean of B and C: (10..13, 20..23) -> 16.5
    expected = {"A": np.mean(range(10, 14)) / 2 + np.mean(range(20, 24)) / 2, "B": 11.5, "C": 6.5}
    for system, value in expected.items():
        assert predicted[frame.system == system] == pytest.approx(value)


def test_cross_fitted_predictions_hold_out_talks_too():
    frame = _frame()
    predicted = meta_eval.cross_fitted_predictions(frame, ["x"], "y", DummyRegressor, segment_group="doc",
                                                   common_origin=False)
    # (A, t1) is predicted from B and C in t2 only: segments 2, 3 -> mean(12, 13, 22, 23) = 17.5
    cell = (frame.system == "A") & (frame.doc == "t1")
    assert predicted[cell] == pytest.approx(17.5)
    assert not np.isnan(predicted).any()


def test_common_origin_removes_the_fold_intercepts():
    frame = _frame()
    # Without it, a constant model fitted without the best system scores that system lowest:
    # its intercept is the mean of the worse systems (the leave-one-out artifact).
    biased = meta_eval.cross_fitted_predictions(frame, ["x"], "y", DummyRegressor, common_origin=False)
    frame["biased"] = biased
    assert meta_eval.pairwise_accuracy(meta_eval.system_means(frame, "biased"), meta_eval.system_means(frame, "y")) == 0.0
    # With it, a constant model says nothing (all zero), and a linear one gives w * (x - mean x).
    flat = meta_eval.cross_fitted_predictions(frame, ["x"], "y", DummyRegressor)
    assert flat == pytest.approx(np.zeros(len(frame)))
    frame["y3"] = 3 * frame["x"] + 7
    linear = meta_eval.cross_fitted_predictions(frame, ["x"], "y3", LinearRegression, segment_group="doc")
    assert linear == pytest.approx(3 * (frame["x"] - frame["x"].mean()).to_numpy())


def test_system_means():
    frame = _frame()
    assert meta_eval.system_means(frame, "y") == {"A": 1.5, "B": 11.5, "C": 21.5}
