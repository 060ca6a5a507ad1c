"""Saturation curves: a plateau model fitted to each method's learning curve, the size where
the curve comes within epsilon of its plateau, and bootstrap bands around both."""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from curatune.evaluate.analysis.config import AnalysisConfig
from curatune.evaluate.analysis.inputs import SampleStore, ScoreIndex, SuiteRoles
from curatune.evaluate.metrics import MetricTable

CURVE_COLUMNS = ["method", "suite", "metric", "size", "fit", "lo", "hi", "model", "observed"]


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
