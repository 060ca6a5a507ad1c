"""Saturation curves: a plateau model fitted to each method's learning curve, the size from
which doubling the data gains less than epsilon, bootstrap bands around both (each replicate
choosing its own curve family), and a verdict on what the interval allows one to conclude."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy.stats import f as f_distribution

from curatune.evaluate.analysis.config import AnalysisConfig
from curatune.evaluate.analysis.curves import (
    CURVE_MODELS,
    CurveFit,
    fit_curve,
    fit_replicates,
)
from curatune.evaluate.analysis.inputs import SampleStore, ScoreIndex, SuiteRoles
from curatune.evaluate.analysis.verdict import decide, round_size
from curatune.evaluate.metrics import MetricTable

__all__ = ["CURVE_COLUMNS", "CURVE_MODELS", "CurveFit", "SaturationAnalysis", "fit_curve", "saturation_points"]

CURVE_COLUMNS = ["method", "suite", "metric", "size", "fit", "lo", "hi", "model", "observed"]
#: Points of the log-spaced saturation search grid: steps of 0.14 % from 100 to 8 x 3,200.
FINE_GRID = 4000


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
            # The crossing lies between the last unsaturated grid point and the next one.
            last = int(np.flatnonzero(row)[-1])
            out[r] = np.sqrt(grid[last] * grid[last + 1])
    return out


#: Metrics on a 0-1 scale whose hundredths readers know as "points".
POINT_METRICS = {"acc": "accuracy", "acc_norm": "accuracy", "exact_match": "exact-match", "field_f1": "field F1",
                 "json_valid": "valid-JSON", "macro_f1": "macro-F1"}


def saturation_epsilon(table: MetricTable, config: AnalysisConfig, metric: str, base: float | None,
                       observed: np.ndarray) -> tuple[float, str]:
    """epsilon in the metric's own units, and the same in words.

    ``saturation_epsilons`` gives it per metric in the metric's units; otherwise it is
    ``saturation_epsilon`` x the metric's scale. Only for 0-100 metrics and 0-1 metrics
    read as percentages is that a "point"; for comet_like (a cosine) it is a cosine step,
    and for unbounded metrics a share of the base value."""
    scale = table.scale(metric)
    if metric in config.saturation_epsilons:
        epsilon = float(config.saturation_epsilons[metric])
    else:
        epsilon = config.saturation_epsilon * table.epsilon_scale(metric, base, observed)
    if scale == 100.0:
        text = f"{epsilon:g} {metric} point{'s' if epsilon != 1 else ''}"
    elif scale == 1.0 and metric in POINT_METRICS:
        text = f"{epsilon:g} {metric} ({100 * epsilon:g} {POINT_METRICS[metric]} point{'s' if epsilon != 0.01 else ''})"
    elif scale is not None:
        text = f"{epsilon:g} {metric} (a {epsilon / scale:.0%} step of its 0-{scale:g} range; not comparable to chrF points)"
    elif base is not None and np.isfinite(base) and base != 0:
        text = f"{epsilon:.3g} {metric} ({100 * epsilon / abs(base):.3g}% of the base model's {abs(base):.3g})"
    else:
        text = f"{epsilon:.3g} {metric}"
    return epsilon, text + " per doubling"


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

    def pure_error(self) -> float:
        """Sum of squared deviations of the seeds from their size mean (0 with one seed)."""
        return float(sum(np.sum((v - v.mean()) ** 2) for v in
                         (np.array([self.values[c] for c in self.cells[s]]) for s in self.cells)))


class Bootstrap:
    """Replicates of per-size means: seeds resampled within each size and, when per-example
    samples exist, evaluation items resampled with the same draw for every cell and the
    base model (a paired bootstrap, so a gain over base keeps its pairing).

    Corpus-level metrics (BLEU, chrF, TER) are not means of their per-example values, so an
    item replicate shifts the corpus score by the change of the per-example mean.

    Resampling k seeds with replacement shrinks the variance of their mean by (k - 1) / k
    (a third with 3 seeds), so the seeds' deviations from their size mean are widened by
    sqrt(k / (k - 1)) before they are drawn.
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
            values = np.array([series.values[c] for c in members])
            if len(members) > 1:
                values = values.mean() + (values - values.mean()) * np.sqrt(len(members) / (len(members) - 1))
            per_cell = values[None, :].repeat(self.n, axis=0)
            if item_shift is not None:
                per_cell = per_cell + np.stack([item_shift[c] for c in members], axis=1)
            draw = rng.integers(0, len(members), size=(self.n, len(members)))
            columns.append(np.take_along_axis(per_cell, draw, axis=1).mean(axis=1))
        base = None
        if series.base is not None:
            base = np.full(self.n, series.base) + (base_shift if base_shift is not None else 0.0)
        return np.stack(columns, axis=1), base, how

    def with_lack_of_fit(self, series: Series, replicates: np.ndarray, fit: CurveFit,
                         resampled: str) -> tuple[np.ndarray, str]:
        """Replicates that also carry what the fitted curve leaves unexplained.

        The means scatter around the fitted curve by their residuals. The part of that scatter
        the seeds and items already explain (the replicates' own variance) is noise; the rest
        is lack of fit: the curve family may be wrong. That excess is added to every
        replicate as residuals drawn with replacement (rescaled by sqrt(m / (m - p)) for the
        fitted parameters, and to the excess variance), so a curve that fits its means worse
        than the noise allows gets a wider interval. Without seeds or items the replicates
        are the fitted curve plus drawn residuals: the plain residual bootstrap.
        """
        sizes, means = series.sizes, series.means()
        residuals = means - fit.predict(sizes)
        dof = len(sizes) - fit.model.n_params
        scatter = float(np.mean(residuals**2)) * len(sizes) / dof
        noise = float(np.mean(np.var(replicates, axis=0))) if len(replicates) else 0.0
        # Lack of fit only when the scatter is larger than noise would make it 19 times in
        # 20 (an F test against the seeds' spread, or the items' when there is one seed):
        # adding it to every well-fitting curve would widen intervals past their level.
        noise_dof = int(series.counts().sum()) - len(sizes) if "seeds" in resampled else 1000
        if noise > 0 and scatter <= noise * f_distribution.ppf(0.95, dof, max(noise_dof, 1)):
            return replicates, resampled
        excess = scatter - noise
        # A curve that passes through its means to rounding error leaves nothing to add.
        if excess <= 1e-12 * max(scatter, float(np.var(means)), 1e-300):
            return replicates, resampled
        rng = self._rng("residuals", series.method, series.suite, series.metric)
        centred = residuals - residuals.mean()
        draws = centred[rng.integers(0, len(sizes), size=(self.n, len(sizes)))]
        draws *= np.sqrt(excess / max(float(np.mean(centred**2)), 1e-300))
        if len(replicates):
            return replicates + draws, resampled + "+residuals"
        return fit.predict(sizes)[None, :] + draws, "residuals"

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


def observed_lower_bound(sizes: np.ndarray, replicates: np.ndarray, epsilon: float, alpha: float,
                         smallest: float) -> float:
    """The largest trained size m whose doubling to a trained 2m gains more than ``epsilon`` in
    all but ``alpha`` of the replicates (the point lies past it by definition); the smallest
    size when no doubling does."""
    bound = smallest
    for i, m in enumerate(sizes):
        doubled = np.flatnonzero(np.isclose(sizes, 2 * m))
        if not len(doubled):
            continue
        gains = np.abs(replicates[:, doubled[0]] - replicates[:, i])
        if float(np.quantile(gains, alpha)) > epsilon:
            bound = max(bound, float(m))
    return bound


def fitted_range(lo: float | None, hi: float | None, search_limit: float) -> str:
    """What the fitted curves say about ends the data cannot check (None: the data's own end)."""
    if lo is not None and not np.isfinite(lo):
        return f"past {search_limit:,.0f}"
    if hi is None:
        return f"not before {round_size(lo, 2, 'down'):,}"
    if lo is None:
        return f"by {round_size(hi, 2, 'up'):,}"
    return f"between {round_size(lo, 2, 'down'):,} and {round_size(hi, 2, 'up'):,}"


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
            "epsilon_text": None,
            "saturation_point": None,
            "saturation_point_lo": None,
            "saturation_point_hi": None,
            "saturation_point_fit": None,
            "saturation_interval_fit": None,
            "saturation_verdict": None,
            "saturation_text": None,
            "saturation_extrapolated": None,
            "saturation_lo_extrapolated": None,
            "saturation_hi_extrapolated": None,
            "saturation_point_hi_fitted": None,
            "model_shares": None,
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
        pure_error, n_cells = series.pure_error(), int(counts.sum())
        fit = fit_curve(sizes, means, counts, pure_error, n_cells)
        if fit is None:
            row["status"] = "fit failed"
            row["note"] = "no curve family gave a finite fit"
            return row, None
        smallest, largest = float(sizes.min()), float(sizes.max()) * cfg.saturation_search_factor
        epsilon, epsilon_text = saturation_epsilon(table, cfg, series.metric, series.base, means)
        point = saturation_points(lambda n: fit.predict(n)[None, :], smallest, largest, epsilon, FINE_GRID)[0]
        point = None if np.isnan(point) else float(point)
        row.update(
            model=fit.model.name,
            formula=fit.model.formula,
            params=fit.model.to_sizes(fit.params, fit.n0),
            r2=fit.r2,
            epsilon=epsilon,
            epsilon_text=epsilon_text,
            saturation_point_fit=point,
            saturation_extrapolated=None if point is None else bool(point > sizes.max()),
        )
        if len(sizes) == 3:
            row["status"] = "interpolated"
            row["note"] = "3 sizes for 3 parameters: the curve passes through every mean, so R² says nothing"
        grid = np.unique(np.concatenate([np.geomspace(sizes.min(), sizes.max(), cfg.curve_points), sizes]))
        lo = hi = np.full(len(grid), np.nan)
        p_lo = p_hi = None
        if cfg.n_bootstrap and len(sizes) > fit.model.n_params:
            replicates, resampled = self.bootstrap.with_lack_of_fit(series, replicates, fit, resampled)
            row["bootstrap"] = resampled
        if len(replicates):
            # Every replicate refits every family and keeps the one its own AICc prefers, so
            # the interval includes the uncertainty of which family describes the curve.
            fits = fit_replicates(sizes, replicates, counts, pure_error, n_cells)
            curves = fits.predict(grid)
            lo, hi = np.quantile(curves, alpha, axis=0), np.quantile(curves, 1 - alpha, axis=0)
            # Not-reached replicates count as infinitely large; "inverted_cdf" picks observed
            # order statistics so no interpolation meets an infinity.
            points = np.nan_to_num(saturation_points(fits.predict, smallest, largest, epsilon, FINE_GRID), nan=np.inf)
            p_lo = float(np.quantile(points, alpha, method="inverted_cdf"))
            p_hi = float(np.quantile(points, 1 - alpha, method="inverted_cdf"))
            if point is not None:  # the interval holds its own point even when replicates barely vary
                p_lo, p_hi = min(p_lo, point), max(p_hi, point)
            row["model_shares"] = fits.shares()
        extrapolated_lo = None
        if p_lo is not None and p_lo > sizes.max():
            # A lower end past the largest trained size rests on the fitted family alone: a curve
            # that turns flat just past the data (a second, slower phase ending) is invisible to
            # it. Keep only what the data show: the point lies past every trained size m whose
            # doubling to 2m gains more than epsilon in 97.5 % of the replicates.
            extrapolated_lo = p_lo
            p_lo = observed_lower_bound(sizes, replicates, epsilon, alpha, smallest)
        extrapolated_hi = None
        if p_hi is not None and np.isfinite(p_hi) and p_hi > sizes.max():
            # The same holds for an upper end past the largest trained size: it says the curve
            # stops gaining by then, which only the family's tail says. A slower tail than the
            # chosen families' (a power law's, say) saturates later, and the data cannot tell
            # them apart, so the interval stays open above and the curves' end is quoted as such.
            extrapolated_hi = p_hi
            p_hi = np.inf
        verdict = decide(point, p_lo, p_hi, smallest=smallest, largest_trained=float(sizes.max()),
                         search_limit=largest, has_interval=p_lo is not None)
        if extrapolated_lo is not None or extrapolated_hi is not None:
            verdict.text += (f"; the fitted curves alone say {fitted_range(extrapolated_lo, extrapolated_hi, largest)}"
                             f", an extrapolation past the largest trained size ({sizes.max():,.0f})")
        # The interval the verdict read, unrounded (None: open), as saturation_point_fit is the point.
        row["saturation_interval_fit"] = None if p_lo is None else [
            float(end) if np.isfinite(end) else None for end in (p_lo, p_hi)]
        row["saturation_lo_extrapolated"] = extrapolated_lo is not None
        row["saturation_hi_extrapolated"] = extrapolated_hi is not None
        row["saturation_point_hi_fitted"] = (None if extrapolated_hi is None
                                             else round_size(extrapolated_hi, 2, "up"))
        row.update(
            saturation_point=verdict.point,
            saturation_point_lo=verdict.lo,
            saturation_point_hi=verdict.hi,
            saturation_verdict=verdict.verdict,
            saturation_text=verdict.text,
        )
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
