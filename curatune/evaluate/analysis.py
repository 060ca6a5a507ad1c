"""Learning vs forgetting, saturation curves and early-vs-final agreement from eval scores.

Input is the evaluation stage's output only (``eval/scores.parquet`` and, when present,
``eval/samples/<suite>/<cell>__<stage>.parquet``); output is ``eval/analysis.json`` and
``eval/saturation_curves.parquet``. The analysis is a pure function of those files and the
:class:`AnalysisConfig` (the bootstrap is seeded), so re-running it gives the same numbers.

Vocabulary:

* *task suites* (``config.task_suites``) measure what fine-tuning is meant to teach;
  every other suite is a *general* suite where a drop from the base model is forgetting.
* *gain* of a score = how much better it is than the base model, sign-adjusted with the
  metric's direction (so a lower TER is a positive gain); *drop* = -gain (Biderman et al.
  2024 measure forgetting as base minus fine-tuned accuracy).
* *points*: a gain or drop on a 0-100 scale, so suites with different metrics can be
  averaged: x100 for 0-1 metrics, x1 for 0-100 metrics, percent of the base value for
  unbounded metrics (perplexity, bits per byte). KL divergence to the base model is 0 for
  the base model by definition, so it has no points and stays out of the averages.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from curatune.errors import ConfigError, DataError
from curatune.evaluate.analysis_config import AnalysisConfig
from curatune.rundir import RunDir, atomic_write_json, atomic_write_parquet

SCORE_COLUMNS = ["cell", "method", "size", "seed", "stage", "suite", "metric", "value", "n_items"]
CURVE_COLUMNS = ["method", "suite", "metric", "size", "fit", "lo", "hi", "model", "observed"]
TEXT_COLUMNS = ("prompt", "reference", "output")  # of eval/samples files
BASE = "base"


# ----------------------------------------------------------------------------- metrics


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
    "base_answer_logprob": MetricInfo(+1, None),
    "answer_agreement": MetricInfo(+1, 1.0),
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
    "field_f1", "chrf", "acc_norm", "acc", "exact_match", "bleu", "comet_like", "json_valid",
    "bits_per_byte", "word_perplexity", "byte_perplexity", "token_perplexity", "perplexity",
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


# ----------------------------------------------------------------------------- inputs


def load_scores(path: Path) -> pd.DataFrame:
    """Read and check eval/scores.parquet; a problem names the file, row and column."""
    if not path.exists():
        raise DataError(f"{path}: not found; run `curatune evaluate CONFIG` first")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (expected {SCORE_COLUMNS})")
    if frame.empty:
        raise DataError(f"{path}: no rows; the evaluation produced no scores")
    frame = frame[SCORE_COLUMNS].copy()
    for column in ("cell", "method", "stage", "suite", "metric"):
        frame[column] = frame[column].astype(str)
    for column in ("size", "seed", "value", "n_items"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row}, column {column}: {frame[column].iloc[row]!r} is not a number")
        frame[column] = numeric
    frame["size"] = frame["size"].fillna(0).astype(int)
    frame["seed"] = frame["seed"].fillna(0).astype(int)
    bad_stage = ~frame["stage"].isin(["base", "early", "final"])
    if bad_stage.any():
        row = int(np.flatnonzero(bad_stage.to_numpy())[0])
        raise DataError(f"{path}: row {row}, column stage: {frame['stage'].iloc[row]!r} is not base, early or final")
    key = ["cell", "stage", "suite", "metric"]
    duplicated = frame.duplicated(key)
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        values = ", ".join(f"{k}={frame[k].iloc[row]}" for k in key)
        raise DataError(f"{path}: row {row} repeats the score for {values}")
    return frame


class SampleStore:
    """Per-example metric values from eval/samples, loaded lazily and cached per file."""

    def __init__(self, samples_dir: Path):
        self.samples_dir = samples_dir
        self._frames: dict[tuple[str, str, str], pd.DataFrame | None] = {}
        self.files_read = 0

    def values(self, suite: str, cell: str, stage: str, metric: str) -> pd.Series | None:
        """Item values indexed by example_id, or None when the file or column is absent."""
        key = (suite, cell, stage)
        if key not in self._frames:
            self._frames[key] = self._load(suite, cell, stage)
        frame = self._frames[key]
        if frame is None or metric not in frame.columns:
            return None
        values = pd.to_numeric(frame[metric], errors="coerce")
        values.index = frame["example_id"].astype(str)
        values = values[~values.index.duplicated()].dropna()
        return values if len(values) else None

    def _load(self, suite: str, cell: str, stage: str) -> pd.DataFrame | None:
        path = self.samples_dir / suite / f"{cell}__{stage}.parquet"
        if not path.exists():
            return None
        try:
            import pyarrow.parquet as pq

            # Skip the text columns: prompts and outputs can be most of the file.
            names = pq.read_schema(path).names
            frame = pd.read_parquet(path, columns=[c for c in names if c not in TEXT_COLUMNS])
        except Exception as exc:
            warnings.warn(f"{path}: unreadable, item bootstrap skips it ({exc})", stacklevel=2)
            return None
        if "example_id" not in frame.columns:
            return None
        self.files_read += 1
        return frame


@dataclass
class SuiteRoles:
    """Which suites are task suites, each suite's headline metric, and metrics left out."""

    task: list[str]
    general: list[str]
    primary: dict[str, str]
    metrics: dict[str, list[str]]  # suite -> analysed metrics (known direction), sorted
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, scores: pd.DataFrame, config: AnalysisConfig, table: MetricTable) -> "SuiteRoles":
        suites = sorted(scores["suite"].unique())
        notes: list[str] = []
        metrics: dict[str, list[str]] = {}
        for suite in suites:
            present = sorted(scores.loc[scores["suite"] == suite, "metric"].unique())
            unknown = [m for m in present if not table.known(m)]
            if unknown:
                notes.append(
                    f"suite {suite}: metrics {unknown} have no known direction and are left out "
                    "(set evaluate.analysis.metric_directions)"
                )
            metrics[suite] = [m for m in present if table.known(m)]
        task = [s for s in config.task_suites if s in suites]
        if not task:
            raise ConfigError(
                f"evaluate.analysis.task_suites = {config.task_suites}: none of these suites is in "
                f"eval/scores.parquet (suites there: {suites})"
            )
        general = [s for s in suites if s not in task]
        primary: dict[str, str] = {}
        for suite in suites:
            chosen = config.primary_metrics.get(suite)
            if chosen is not None:
                if chosen not in metrics[suite]:
                    raise ConfigError(
                        f"evaluate.analysis.primary_metrics.{suite} = {chosen!r}: suite {suite} has "
                        f"metrics {metrics[suite]} with a known direction"
                    )
                primary[suite] = chosen
                continue
            ranked = [m for m in PRIMARY_PREFERENCE if m in metrics[suite]] + metrics[suite]
            if ranked:
                primary[suite] = ranked[0]
            else:
                notes.append(f"suite {suite}: no metric with a known direction; left out")
        task = [s for s in task if s in primary]
        general = [s for s in general if s in primary]
        if not task:
            raise ConfigError(f"task suites {config.task_suites} have no metric with a known direction")
        return cls(task, general, primary, metrics, notes)


class ScoreIndex:
    """Fast lookup of one score: (cell, stage, suite, metric) -> value."""

    def __init__(self, scores: pd.DataFrame):
        self.scores = scores
        self._values = {
            (r.cell, r.stage, r.suite, r.metric): float(r.value)
            for r in scores.itertuples(index=False)
            if pd.notna(r.value)
        }
        cells = scores[scores["stage"] != "base"][["cell", "method", "size", "seed"]].drop_duplicates("cell")
        self.cells = cells.sort_values(["method", "size", "seed"]).to_dict("records")

    def get(self, cell: str, stage: str, suite: str, metric: str) -> float | None:
        return self._values.get((cell, stage, suite, metric))

    def base(self, suite: str, metric: str) -> float | None:
        value = self._values.get((BASE, "base", suite, metric))
        if value is None:  # a base cell scored under another key, or a definitional value
            rows = self.scores[
                (self.scores["stage"] == "base") & (self.scores["suite"] == suite) & (self.scores["metric"] == metric)
            ]["value"].dropna()
            if len(rows):
                return float(rows.iloc[0])
            return DEFINITIONAL_BASE.get(metric)
        return value

    def base_cell(self) -> str:
        cells = self.scores.loc[self.scores["stage"] == "base", "cell"].unique()
        return str(cells[0]) if len(cells) else BASE


# ----------------------------------------------------------------------------- learning vs forgetting


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def learning_forgetting_rows(index: ScoreIndex, roles: SuiteRoles, table: MetricTable) -> list[dict[str, Any]]:
    """One row per fine-tuned cell and stage: gains on task metrics, drops on general suites."""
    rows = []
    for cell in index.cells:
        for stage in ("early", "final"):
            learning: dict[str, dict[str, float | None]] = {}
            learning_rel: dict[str, dict[str, float | None]] = {}
            task_points = []
            seen = False
            for suite in roles.task:
                learning[suite], learning_rel[suite] = {}, {}
                for metric in roles.metrics[suite]:
                    value, base = index.get(cell["cell"], stage, suite, metric), index.base(suite, metric)
                    if value is None or base is None:
                        continue
                    seen = True
                    gain = table.gain(metric, value, base)
                    learning[suite][metric] = gain
                    learning_rel[suite][metric] = table.relative(gain, base)
                    if metric == roles.primary[suite]:
                        task_points.append(table.points(metric, gain, base))
            forgetting: dict[str, float | None] = {}
            forgetting_rel: dict[str, float | None] = {}
            drop_points = []
            for suite in roles.general:
                metric = roles.primary[suite]
                value, base = index.get(cell["cell"], stage, suite, metric), index.base(suite, metric)
                if value is None or base is None:
                    continue
                seen = True
                drop = -table.gain(metric, value, base)
                forgetting[suite] = drop
                forgetting_rel[suite] = table.relative(drop, base)
                drop_points.append(table.points(metric, drop, base))
            if not seen:
                continue
            rows.append(
                {
                    "cell": cell["cell"],
                    "method": cell["method"],
                    "size": int(cell["size"]),
                    "seed": int(cell["seed"]),
                    "stage": stage,
                    "learning": learning,
                    "learning_relative": learning_rel,
                    "forgetting": forgetting,
                    "forgetting_relative": forgetting_rel,
                    "forgetting_metric": {s: roles.primary[s] for s in forgetting},
                    "task_gain": _mean(task_points),
                    "general_drop": _mean(drop_points),
                }
            )
    return rows


def pareto_frontier(points: list[tuple[float | None, float | None]]) -> list[bool]:
    """Flags of the non-dominated points when maximizing the first and minimizing the second.

    A point with a missing coordinate is never on the frontier. Equal points are all kept.
    """
    usable = [g is not None and d is not None and np.isfinite(g) and np.isfinite(d) for g, d in points]
    flags = []
    for i, (gain, drop) in enumerate(points):
        if not usable[i]:
            flags.append(False)
            continue
        dominated = any(
            usable[j] and points[j][0] >= gain and points[j][1] <= drop and (points[j][0] > gain or points[j][1] < drop)
            for j in range(len(points))
            if j != i
        )
        flags.append(not dominated)
    return flags


def pareto_table(rows: list[dict[str, Any]], roles: SuiteRoles, with_base: bool = True) -> list[dict[str, Any]]:
    """Final-stage learning and forgetting per (method, size), averaged over seeds, with the
    base model as the (0, 0) point (not fine-tuning is an option too) and the frontier marked."""
    final = [r for r in rows if r["stage"] == "final"]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in final:
        groups.setdefault((row["method"], row["size"]), []).append(row)
    if not groups:
        return []
    no_general = not roles.general
    points = [] if not with_base else [
        {
            "method": BASE,
            "size": 0,
            "n_seeds": 1,
            "task_gain": 0.0,
            "general_drop": None if no_general else 0.0,
            "forgetting": {s: 0.0 for s in roles.general},
        }
    ]
    for (method, size), members in sorted(groups.items()):
        points.append(
            {
                "method": method,
                "size": size,
                "n_seeds": len(members),
                "task_gain": _mean(m["task_gain"] for m in members),
                "general_drop": _mean(m["general_drop"] for m in members),
                "forgetting": {s: _mean(m["forgetting"].get(s) for m in members) for s in roles.general},
            }
        )
    axis = _frontier_axis(points, roles, no_general)
    if no_general:  # nothing to trade off: the frontier is the best gain
        coords = [(p["task_gain"], 0.0) for p in points]
    elif axis == "general_drop":
        coords = [(p["task_gain"], p["general_drop"]) for p in points]
    else:
        coords = [(p["task_gain"], p["forgetting"].get(axis)) for p in points]
    for point, on in zip(points, pareto_frontier(coords)):
        point["on_frontier"] = on
        point["frontier_axis"] = axis
    return points


def _frontier_axis(points: list[dict[str, Any]], roles: SuiteRoles, no_general: bool) -> str:
    """What the frontier trades the task gain against: the mean drop over general suites in
    points, or, when no fine-tuned cell has one (the retention probe alone: its KL is 0 for
    the base model, so it has no "% of base"), the raw drop on the first general suite that
    has values, e.g. "retention"."""
    if no_general or any(p["general_drop"] is not None for p in points if p["method"] != BASE):
        return "general_drop"
    for suite in roles.general:
        if any(p["forgetting"].get(suite) is not None for p in points if p["method"] != BASE):
            return suite
    return "general_drop"


# ----------------------------------------------------------------------------- saturation curves


@dataclass(frozen=True)
class CurveModel:
    """A saturating curve y = a - b * basis(x, c), x = size / smallest size.

    For a fixed shape ``c`` the curve is linear in (a, b), so the fit profiles c over a
    fine log-spaced grid with a closed-form weighted least squares for (a, b) at each
    value (global in c, so no local optimum to fall into, and vectorized over bootstrap
    replicates), then polishes the best point with ``scipy.optimize.curve_fit``.
    """

    name: str
    formula: str

    def basis(self, x: np.ndarray, c: np.ndarray | float) -> np.ndarray:
        if self.name == "power_law":
            return np.power(x, -np.asarray(c)[..., None]) if np.ndim(c) else np.power(x, -c)
        return np.exp(-x / np.asarray(c)[..., None]) if np.ndim(c) else np.exp(-x / c)

    def function(self, x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a - b * self.basis(x, c)

    def c_bounds(self, x_max: float) -> tuple[float, float]:
        # power law: exponents from almost-flat-in-log (1e-3) to very fast (5);
        # exponential: scales from a tenth of the smallest size to 50x the largest.
        return (1e-3, 5.0) if self.name == "power_law" else (0.1, 50.0 * x_max)

    def c_grid(self, x_max: float, points: int = 400) -> np.ndarray:
        return np.geomspace(*self.c_bounds(x_max), points)

    def to_sizes(self, params: np.ndarray, n0: float) -> dict[str, float]:
        """Parameters of the same curve written in sizes n rather than x = n / n0."""
        a, b, c = (float(p) for p in params)
        if self.name == "power_law":
            return {"a": a, "b": b * n0**c, "c": c}
        return {"a": a, "b": b, "c": c * n0}


CURVE_MODELS = (
    CurveModel("power_law", "y = a - b * n^(-c)"),
    CurveModel("exponential", "y = a - b * exp(-n / c)"),
)


def profile_fit(model: CurveModel, x: np.ndarray, Y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best (a, b, c) and weighted SSE for each row of ``Y`` (replicates x sizes)."""
    grid = model.c_grid(float(x.max()))
    sw = np.sqrt(weights)
    basis = model.basis(x, grid)  # (C, m)
    design = np.stack([np.ones_like(basis), -basis], axis=2) * sw[None, :, None]  # (C, m, 2)
    Yw = Y * sw  # (R, m)
    coef = np.linalg.pinv(design) @ Yw.T[None]  # (C, 2, R)
    resid = Yw[None] - np.swapaxes(design @ coef, 1, 2)  # (C, R, m)
    sse = np.sum(resid**2, axis=2)  # (C, R)
    best = np.argmin(sse, axis=0)  # (R,)
    rows = np.arange(Y.shape[0])
    params = np.stack([coef[best, 0, rows], coef[best, 1, rows], grid[best]], axis=1)
    return params, sse[best, rows]


@dataclass
class CurveFit:
    model: CurveModel
    params: np.ndarray  # (a, b, c) in x = n / n0 units
    n0: float
    sse: float
    r2: float | None

    def predict(self, sizes: np.ndarray) -> np.ndarray:
        return self.model.function(np.asarray(sizes, dtype=float) / self.n0, *self.params)


def fit_curve(sizes: np.ndarray, means: np.ndarray, weights: np.ndarray | None = None) -> CurveFit | None:
    """Weighted least-squares fit of both saturating curves to per-size means; the one with
    the lower squared error wins (both have 3 parameters, so this is also the AIC choice).
    None when no fit gives finite predictions."""
    from scipy.optimize import OptimizeWarning, curve_fit

    sizes = np.asarray(sizes, dtype=float)
    means = np.asarray(means, dtype=float)
    weights = np.ones_like(means) if weights is None else np.asarray(weights, dtype=float)
    n0 = float(sizes.min())
    x = sizes / n0
    best: CurveFit | None = None
    for model in CURVE_MODELS:
        params, sse = profile_fit(model, x, means[None, :], weights)
        params, sse = params[0], float(sse[0])
        low, high = model.c_bounds(float(x.max()))
        try:  # polish the grid optimum; keep it only if it is better
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                polished, _ = curve_fit(
                    model.function, x, means, p0=params, sigma=1.0 / np.sqrt(weights),
                    bounds=([-np.inf, -np.inf, low], [np.inf, np.inf, high]), maxfev=2000,
                )
            polished_sse = float(np.sum(weights * (model.function(x, *polished) - means) ** 2))
            if np.isfinite(polished_sse) and polished_sse <= sse:
                params, sse = polished, polished_sse
        except (RuntimeError, ValueError, FloatingPointError):
            pass
        predicted = model.function(x, *params)
        if not np.all(np.isfinite(predicted)):
            continue
        if best is None or sse < best.sse:
            plain_sse = float(np.sum((predicted - means) ** 2))
            sst = float(np.sum((means - means.mean()) ** 2))
            best = CurveFit(model, np.asarray(params, dtype=float), n0, sse, 1.0 - plain_sse / sst if sst > 0 else None)
    return best


def saturation_points(
    predict: Callable[[np.ndarray], np.ndarray], smallest: float, largest: float, epsilon: float, grid_points: int = 400
) -> np.ndarray:
    """Per curve, the smallest size from which doubling the data changes the prediction by
    less than ``epsilon`` (metric units) at every larger size up to ``largest``; NaN when
    not reached by then. ``predict`` maps sizes (G,) to predictions (R, G).

    "At every larger size" matters for the exponential curve, whose gain from doubling
    first grows and then shrinks: a tiny gain at tiny sizes is not saturation.
    """
    grid = np.geomspace(smallest, largest, grid_points)
    gain = np.abs(predict(2 * grid) - predict(grid))  # (R, G)
    unsaturated = gain >= epsilon
    out = np.full(gain.shape[0], np.nan)
    for r, row in enumerate(unsaturated):
        if not row.any():
            out[r] = smallest
        elif not row[-1]:
            out[r] = grid[int(np.flatnonzero(row)[-1]) + 1]
    return out


def saturation_point(fit: CurveFit, smallest: float, largest: float, epsilon: float) -> float | None:
    """:func:`saturation_points` of one fitted curve; None when not reached."""
    point = saturation_points(lambda n: fit.predict(n)[None, :], smallest, largest, epsilon)[0]
    return None if np.isnan(point) else float(point)


@dataclass
class Series:
    """Final-stage values of one (method, suite, metric) over sizes and seeds."""

    method: str
    suite: str
    metric: str
    cells: dict[int, list[str]]  # size -> cells (one per seed)
    values: dict[str, float]  # cell -> value
    base: float | None

    @property
    def sizes(self) -> np.ndarray:
        return np.array(sorted(self.cells), dtype=float)

    def means(self) -> np.ndarray:
        return np.array([np.mean([self.values[c] for c in self.cells[s]]) for s in sorted(self.cells)])

    def counts(self) -> np.ndarray:
        return np.array([len(self.cells[s]) for s in sorted(self.cells)], dtype=float)


class Bootstrap:
    """Replicates of per-size means: seeds resampled within each size and, when per-example
    samples exist, evaluation items resampled with the same draw for every cell and the
    base model (a paired bootstrap, so a gain over base keeps its pairing).

    Corpus-level metrics (BLEU, chrF, TER) are not means of their per-example values, so an
    item replicate shifts the corpus score by the change of the per-example mean.
    """

    def __init__(self, samples: SampleStore, n: int, seed: int, base_cell: str):
        self.samples = samples
        self.n = n
        self.seed = seed
        self.base_cell = base_cell

    def _rng(self, *parts: str) -> np.random.Generator:
        return np.random.default_rng([self.seed] + [zlib.crc32(p.encode()) for p in parts])

    def replicates(self, series: Series) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(R x sizes) replicate means, (R,) replicate base values, and what was resampled."""
        cells = [c for size in sorted(series.cells) for c in series.cells[size]]
        item_shift, base_shift = self._item_shifts(series, cells)
        multi_seed = any(len(v) > 1 for v in series.cells.values())
        how = "+".join(x for x, on in (("items", item_shift is not None), ("seeds", multi_seed)) if on) or "none"
        if how == "none" or self.n == 0:
            return np.empty((0, len(series.cells))), None, "none"
        rng = self._rng("seeds", series.method, series.suite, series.metric)
        columns = []
        for size in sorted(series.cells):
            members = series.cells[size]
            per_cell = np.array([series.values[c] for c in members])[None, :].repeat(self.n, axis=0)
            if item_shift is not None:
                per_cell = per_cell + np.stack([item_shift[c] for c in members], axis=1)
            draw = rng.integers(0, len(members), size=(self.n, len(members)))
            columns.append(np.take_along_axis(per_cell, draw, axis=1).mean(axis=1))
        base = None
        if series.base is not None:
            base = np.full(self.n, series.base) + (base_shift if base_shift is not None else 0.0)
        return np.stack(columns, axis=1), base, how

    def _item_shifts(self, series: Series, cells: list[str]) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
        if self.n == 0:
            return None, None
        items = {c: self.samples.values(series.suite, c, "final", series.metric) for c in cells}
        if any(v is None for v in items.values()):
            return None, None
        base_items = self.samples.values(series.suite, self.base_cell, "base", series.metric)
        common = set.intersection(*(set(v.index) for v in items.values()))
        if base_items is not None:
            common &= set(base_items.index)
        if len(common) < 2:
            return None, None
        ids = sorted(common)
        # Same suite and same item set -> same draw for every method and metric (paired).
        counts = self._rng("items", series.suite, str(len(ids))).multinomial(
            len(ids), np.full(len(ids), 1.0 / len(ids)), size=self.n
        ).astype(float)

        def shift(values: pd.Series) -> np.ndarray:
            vector = values.loc[ids].to_numpy(dtype=float)
            return counts @ vector / len(ids) - vector.mean()

        return {c: shift(v) for c, v in items.items()}, (shift(base_items) if base_items is not None else None)


class SaturationAnalysis:
    """Fits, bands and saturation points for every (method, suite, metric) series."""

    def __init__(self, index: ScoreIndex, roles: SuiteRoles, table: MetricTable, config: AnalysisConfig,
                 samples: SampleStore):
        self.index, self.roles, self.table, self.config = index, roles, table, config
        self.bootstrap = Bootstrap(samples, config.n_bootstrap, config.seed, index.base_cell())

    def series(self) -> list[Series]:
        """Task suites: every metric; general suites: their primary metric."""
        wanted = [(s, m) for s in self.roles.task for m in self.roles.metrics[s]]
        wanted += [(s, self.roles.primary[s]) for s in self.roles.general]
        methods = sorted({c["method"] for c in self.index.cells})
        out = []
        for method in methods:
            for suite, metric in wanted:
                cells: dict[int, list[str]] = {}
                values: dict[str, float] = {}
                for cell in self.index.cells:
                    if cell["method"] != method:
                        continue
                    value = self.index.get(cell["cell"], "final", suite, metric)
                    if value is None:
                        continue
                    cells.setdefault(int(cell["size"]), []).append(cell["cell"])
                    values[cell["cell"]] = value
                if cells:
                    out.append(Series(method, suite, metric, cells, values, self.index.base(suite, metric)))
        return out

    def run(self, progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        rows, curves = [], []
        for series in self.series():
            if progress:
                progress(f"{series.method} {series.suite}/{series.metric}")
            row, curve = self.analyse(series)
            rows.append(row)
            if curve is not None:
                curves.append(curve)
        frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)
        return rows, frame

    def analyse(self, series: Series) -> tuple[dict[str, Any], pd.DataFrame | None]:
        cfg, table = self.config, self.table
        sizes, means, counts = series.sizes, series.means(), series.counts()
        direction = table.direction(series.metric)
        replicates, base_reps, resampled = self.bootstrap.replicates(series)
        alpha = (1 - cfg.ci_level) / 2
        row: dict[str, Any] = {
            "method": series.method,
            "suite": series.suite,
            "metric": series.metric,
            "direction": "higher" if direction > 0 else "lower",
            "sizes": [int(s) for s in sizes],
            "means": [float(m) for m in means],
            "n_seeds": [int(c) for c in counts],
            "base_value": series.base,
            "model": None,
            "formula": None,
            "params": None,
            "r2": None,
            "epsilon": None,
            "saturation_point": None,
            "saturation_point_lo": None,
            "saturation_point_hi": None,
            "saturation_extrapolated": None,
            "worse_than_base_sizes": [],
            "worse_than_base_confident": [],
            "bootstrap": resampled,
            "status": "ok",
            "note": None,
        }
        if series.base is not None:
            gains = direction * (means - series.base)
            row["worse_than_base_sizes"] = [int(s) for s, g in zip(sizes, gains) if g < 0]
            if len(replicates) and base_reps is not None:
                upper = np.quantile(direction * (replicates - base_reps[:, None]), 1 - alpha, axis=0)
                row["worse_than_base_confident"] = [int(s) for s, u in zip(sizes, upper) if u < 0]
        if len(sizes) < 3:
            row["status"] = "insufficient sizes"
            row["note"] = f"{len(sizes)} size(s) trained; a saturating curve needs at least 3"
            return row, None
        fit = fit_curve(sizes, means, counts)
        if fit is None:
            row["status"] = "fit failed"
            row["note"] = "neither a power law nor an exponential gave a finite fit"
            return row, None
        smallest, largest = float(sizes.min()), float(sizes.max()) * cfg.saturation_search_factor
        epsilon = cfg.saturation_epsilon * table.epsilon_scale(series.metric, series.base, means)
        point = saturation_point(fit, smallest, largest, epsilon)
        row.update(
            model=fit.model.name,
            formula=fit.model.formula,
            params=fit.model.to_sizes(fit.params, fit.n0),
            r2=fit.r2,
            epsilon=epsilon,
            saturation_point=None if point is None else int(math.ceil(point)),
            saturation_extrapolated=None if point is None else bool(point > sizes.max()),
        )
        if len(sizes) == 3:
            row["status"] = "interpolated"
            row["note"] = "3 sizes for 3 parameters: the curve passes through every mean, so R² says nothing"
        elif point is None:
            row["note"] = f"not saturated within {cfg.saturation_search_factor:g}x the largest size"
        grid = np.unique(np.concatenate([np.geomspace(sizes.min(), sizes.max(), cfg.curve_points), sizes]))
        lo = hi = np.full(len(grid), np.nan)
        if len(replicates):
            # The bootstrap refits the chosen model to every replicate at once.
            params, _ = profile_fit(fit.model, sizes / fit.n0, replicates, counts)

            def predict(n: np.ndarray) -> np.ndarray:
                return params[:, :1] - params[:, 1:2] * fit.model.basis(n / fit.n0, params[:, 2])

            curves = predict(grid)
            lo, hi = np.quantile(curves, alpha, axis=0), np.quantile(curves, 1 - alpha, axis=0)
            # Not-reached replicates count as infinitely large; "inverted_cdf" picks observed
            # order statistics so no interpolation meets an infinity.
            points = np.nan_to_num(saturation_points(predict, smallest, largest, epsilon), nan=np.inf)
            p_lo = np.quantile(points, alpha, method="inverted_cdf")
            p_hi = np.quantile(points, 1 - alpha, method="inverted_cdf")
            row["saturation_point_lo"] = int(math.ceil(p_lo)) if np.isfinite(p_lo) else None
            row["saturation_point_hi"] = int(math.ceil(p_hi)) if np.isfinite(p_hi) else None
        curve = pd.DataFrame(
            {
                "method": series.method,
                "suite": series.suite,
                "metric": series.metric,
                "size": grid,
                "fit": fit.predict(grid),
                "lo": lo,
                "hi": hi,
                "model": fit.model.name,
                "observed": np.isin(grid, sizes),
            }
        )
        return row, curve


# ----------------------------------------------------------------------------- early vs final


def rank_agreement(early: dict[str, float], final: dict[str, float], k: int, direction: int = 1) -> dict[str, Any]:
    """Spearman correlation and top-k overlap between two scorings of the same cells.

    Cells missing from either side are ignored; fewer than 3 shared cells, or a constant
    scoring, gives nulls with the reason.
    """
    cells = sorted(set(early) & set(final))
    out: dict[str, Any] = {
        "n_cells": len(cells), "spearman": None, "p_value": None, "k": None,
        "top_k_overlap": None, "top_k_early": [], "top_k_final": [], "reason": None,
    }
    if len(cells) < 3:
        out["reason"] = f"{len(cells)} cell(s) have both an early and a final score; need at least 3"
        return out
    e = np.array([early[c] for c in cells])
    f = np.array([final[c] for c in cells])
    kk = min(k, len(cells))
    # Best first; ties broken by cell name so the lists are deterministic.
    out["top_k_early"] = sorted(cells, key=lambda c: (-direction * early[c], c))[:kk]
    out["top_k_final"] = sorted(cells, key=lambda c: (-direction * final[c], c))[:kk]
    out["k"] = kk
    out["top_k_overlap"] = len(set(out["top_k_early"]) & set(out["top_k_final"])) / kk
    if np.ptp(e) == 0 or np.ptp(f) == 0:
        out["reason"] = "scores are constant on one side; rank correlation undefined"
        return out
    rho, p = spearman(e, f)
    out["spearman"], out["p_value"] = rho, p
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho (Pearson correlation of tie-averaged ranks) and its two-sided p-value
    from the t distribution with n - 2 degrees of freedom, as scipy.stats.spearmanr computes
    them (importing scipy.stats costs over a second, too much for `curatune report`)."""
    from scipy.special import stdtr

    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    rho = float(np.corrcoef(rx, ry)[0, 1])
    dof = len(x) - 2
    if abs(rho) >= 1.0:
        return float(np.clip(rho, -1.0, 1.0)), 0.0
    t = abs(rho) * math.sqrt(dof / ((1.0 - rho) * (1.0 + rho)))
    return rho, float(2 * stdtr(dof, -t))


def early_vs_final(index: ScoreIndex, roles: SuiteRoles, table: MetricTable, k: int) -> dict[str, Any]:
    metrics = []
    for suite in roles.task:
        for metric in roles.metrics[suite]:
            early, final = {}, {}
            for cell in index.cells:
                e = index.get(cell["cell"], "early", suite, metric)
                f = index.get(cell["cell"], "final", suite, metric)
                if e is not None:
                    early[cell["cell"]] = e
                if f is not None:
                    final[cell["cell"]] = f
            entry = {"suite": suite, "metric": metric, "primary": metric == roles.primary[suite]}
            entry.update(rank_agreement(early, final, k, table.direction(metric)))
            if not early and entry["reason"]:
                entry["reason"] = "no early-checkpoint scores (stage 'early') in eval/scores.parquet"
            metrics.append(entry)
    return {"top_k": k, "metrics": metrics}


# ----------------------------------------------------------------------------- entry point


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def analyze_run(
    run_dir: RunDir,
    config: AnalysisConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Analyse a run's evaluation scores; write eval/analysis.json and
    eval/saturation_curves.parquet (atomically, unless ``write`` is False) and return the
    analysis.

    ``progress``, when given, is called with a short label before each fitted series.
    """
    config = config or AnalysisConfig()
    scores = load_scores(run_dir.scores)
    table = MetricTable(config.metric_directions)
    roles = SuiteRoles.resolve(scores, config, table)
    index = ScoreIndex(scores)
    notes = list(roles.warnings)
    has_base = bool((scores["stage"] == "base").any())
    if not has_base:
        notes.append("no base-model scores (stage 'base'): learning and forgetting cannot be measured")
    samples = SampleStore(run_dir.samples)
    rows = learning_forgetting_rows(index, roles, table)
    saturation, curves = SaturationAnalysis(index, roles, table, config, samples).run(progress)
    analysis = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
        "suites": {
            "task": roles.task,
            "general": roles.general,
            "primary_metrics": roles.primary,
            "metrics": roles.metrics,
            "directions": {
                m: ("higher" if table.direction(m) > 0 else "lower")
                for ms in roles.metrics.values() for m in ms
            },
        },
        "learning_forgetting": rows,
        "pareto": pareto_table(rows, roles, with_base=has_base),
        "saturation": saturation,
        "early_vs_final": early_vs_final(index, roles, table, config.top_k),
        "inputs": {"score_rows": int(len(scores)), "sample_files_read": samples.files_read},
        "warnings": notes,
    }
    analysis = _clean(analysis)
    if write:
        # Curves first: a reader that finds a fresh analysis.json finds its curves too.
        atomic_write_parquet(run_dir.saturation_curves, curves[CURVE_COLUMNS].reset_index(drop=True))
        atomic_write_json(run_dir.analysis, analysis)
    return analysis
