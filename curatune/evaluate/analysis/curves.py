"""Saturating curve families, their vectorized fits, and the choice between them.

Every family is y = a - b * basis(x, theta) with x = size / smallest size: linear in (a, b)
for a fixed shape theta. A fit profiles theta over a fine log-spaced grid with a closed-form
weighted least squares for (a, b) at each grid point (a global search, so no local optimum
to fall into, and vectorized over bootstrap replicates), and the best point of the original
data is polished with ``scipy.optimize.curve_fit``.

The family is chosen by AICc on the cell-level likelihood (see :func:`aicc`), per data set,
so a bootstrap replicate may choose another family than the data did: the interval then
carries the uncertainty of the choice too.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit


@dataclass(frozen=True)
class CurveModel:
    name: str
    formula: str
    shape_names: tuple[str, ...]

    @property
    def n_params(self) -> int:
        return 2 + len(self.shape_names)

    def basis(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """basis(x) for each row of ``theta`` (T, k) -> (T, len(x))."""
        theta = np.atleast_2d(theta)
        x = np.asarray(x, dtype=float)[None, :]
        if self.name == "power_law":
            return np.power(x, -theta[:, :1])
        if self.name == "exponential":
            return np.exp(-x / theta[:, :1])
        if self.name == "log_logistic":
            # 1 / (1 + (x/c)^d): a sigmoid in log n (slow start, a steep middle, then the
            # power-law tail (x/c)^-d), the shape a power law and an exponential both miss.
            return 1.0 / (1.0 + np.power(x / theta[:, :1], theta[:, 1:2]))
        if self.name == "weibull":
            # exp(-(x/c)^d): the exponential stretched (d < 1: a long, slow tail) or compressed
            # (d > 1: a sharp knee), Viering & Loog's (2022) "wbl4"; d = 1 is the exponential.
            return np.exp(-np.power(x / theta[:, :1], theta[:, 1:2]))
        # shifted power law (1 + x/s)^-d: flat start for x << s, a power law n^-d for x >> s,
        # and exp(-x/c) in the limit d -> inf with s = d*c, so it bridges the other two.
        return np.power(1.0 + x / theta[:, :1], -theta[:, 1:2])

    def function(self, x: np.ndarray, a: float, b: float, *theta: float) -> np.ndarray:
        return a - b * self.basis(x, np.array([theta]))[0]

    def bounds(self, x_max: float) -> tuple[list[float], list[float]]:
        if self.name == "power_law":  # exponents from almost flat in log (1e-3) to very fast (5)
            return [1e-3], [5.0]
        if self.name == "exponential":  # scales from a tenth of the smallest size to 50x the largest
            return [0.1], [50.0 * x_max]
        if self.name == "log_logistic":
            return [0.01, 0.05], [50.0 * x_max, 10.0]  # midpoint c, steepness d
        if self.name == "weibull":
            return [0.01, 0.05], [50.0 * x_max, 10.0]  # scale c, shape d
        return [0.01, 0.01], [50.0 * x_max, 50.0]  # shift s, exponent d

    def grid(self, x_max: float) -> np.ndarray:
        """Shapes to profile over, (T, k)."""
        low, high = self.bounds(x_max)
        if len(low) == 1:
            return np.geomspace(low[0], high[0], 400)[:, None]
        s, d = np.meshgrid(np.geomspace(low[0], high[0], 48), np.geomspace(low[1], high[1], 48), indexing="ij")
        return np.stack([s.ravel(), d.ravel()], axis=1)

    def to_sizes(self, params: np.ndarray, n0: float) -> dict[str, float]:
        """Parameters of the same curve written in sizes n rather than x = n / n0."""
        a, b, *theta = (float(p) for p in params)
        if self.name == "power_law":
            return {"a": a, "b": b * n0 ** theta[0], "c": theta[0]}
        if self.name == "exponential":
            return {"a": a, "b": b, "c": theta[0] * n0}
        if self.name in ("log_logistic", "weibull"):
            return {"a": a, "b": b, "c": theta[0] * n0, "d": theta[1]}
        return {"a": a, "b": b, "s": theta[0] * n0, "d": theta[1]}


CURVE_MODELS = (
    CurveModel("power_law", "y = a - b * n^(-c)", ("c",)),
    CurveModel("exponential", "y = a - b * exp(-n / c)", ("c",)),
    CurveModel("log_logistic", "y = a - b / (1 + (n / c)^d)", ("c", "d")),
    CurveModel("shifted_power", "y = a - b * (1 + n / s)^(-d)", ("s", "d")),
    CurveModel("weibull", "y = a - b * exp(-(n / c)^d)", ("c", "d")),
)


def _least_squares(basis: np.ndarray, Y: np.ndarray,
                   weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form weighted least squares of each row of ``Y`` (R, m) on (1, -basis) for every
    shape: ``basis`` is (T, m), shared by all rows, or (R, T, m), one set of shapes per row.
    Returns the slope (= -b) and the weighted SSE, both (R, T), with inf where a basis is
    constant (no slope to fit), and the weighted means of the basis ((T,) or (R, T)) and of
    ``Y`` ((R,)), from which the intercept is a = mean_y + b * mean_basis."""
    w = weights / weights.sum()
    mean_g = basis @ w  # (..., T)
    centred = basis - mean_g[..., None]
    var_g = (centred**2) @ w
    mean_y = Y @ w  # (R,)
    if basis.ndim == 2:
        cov = ((centred * w) @ (Y - mean_y[:, None]).T).T  # (R, T)
        var_g = np.broadcast_to(var_g, cov.shape)
    else:
        cov = np.einsum("rtm,m,rm->rt", centred, w, Y - mean_y[:, None])
    usable = var_g > 1e-14 * max(float(var_g.max()), 1e-300)
    slope = np.where(usable, cov / np.where(usable, var_g, 1.0), 0.0)
    # SSE = weighted total sum of squares minus the explained part, times the weight total.
    total = ((Y - mean_y[:, None]) ** 2) @ w  # (R,)
    sse = (total[:, None] - slope * cov) * weights.sum()
    return slope, np.where(usable, sse, np.inf), mean_g, mean_y


REFINE_POINTS = 9  # per shape dimension and refinement round
REFINE_ROUNDS = 2


def profile_fit(model: CurveModel, x: np.ndarray, Y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best (a, b, *theta) and weighted SSE for each row of ``Y`` (replicates x sizes).

    The shapes are profiled on the coarse grid, then each row's best shape is refined on a
    finer local grid around it (two rounds, each spanning one step of the previous grid on
    either side): the 48 x 48 grid of the two-shape families steps 12 % in the exponent, too
    coarse for a noiseless curve of the right family to beat a wrong one."""
    grid = model.grid(float(x.max()))
    slope, sse, mean_g, mean_y = _least_squares(model.basis(x, grid), Y, weights)
    rows = np.arange(Y.shape[0])
    best = np.argmin(sse, axis=1)
    theta, best_sse = grid[best], sse[rows, best]
    b, a = -slope[rows, best], mean_y + -slope[rows, best] * mean_g[best]
    # Log-spaced grids: one step in log units per shape dimension.
    steps = np.array([np.log(np.unique(grid[:, j])[1] / np.unique(grid[:, j])[0]) for j in range(grid.shape[1])])
    low, high = (np.log(np.array(v)) for v in model.bounds(float(x.max())))
    offsets = np.stack(np.meshgrid(*[np.linspace(-1, 1, REFINE_POINTS)] * grid.shape[1], indexing="ij"), -1)
    offsets = offsets.reshape(-1, grid.shape[1])  # (T2, k)
    for _ in range(REFINE_ROUNDS):
        local = np.exp(np.clip(np.log(theta)[:, None, :] + offsets[None] * steps, low, high))  # (R, T2, k)
        basis = np.stack([model.basis(x, local[r]) for r in rows])  # (R, T2, m)
        l_slope, l_sse, l_mean_g, _ = _least_squares(basis, Y, weights)
        pick = np.argmin(l_sse, axis=1)
        better = l_sse[rows, pick] < best_sse
        theta = np.where(better[:, None], local[rows, pick], theta)
        b = np.where(better, -l_slope[rows, pick], b)
        a = np.where(better, mean_y + b * l_mean_g[rows, pick], a)
        best_sse = np.where(better, l_sse[rows, pick], best_sse)
        steps = steps * 2 / (REFINE_POINTS - 1)
    params = np.column_stack([a, b, theta])
    return params, np.maximum(best_sse, 0.0)


def polish(model: CurveModel, x: np.ndarray, y: np.ndarray, weights: np.ndarray,
           params: np.ndarray, sse: float) -> tuple[np.ndarray, float]:
    """curve_fit from the grid optimum; the polished point only when it fits better."""
    low, high = model.bounds(float(x.max()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            polished, _ = curve_fit(
                model.function, x, y, p0=params, sigma=1.0 / np.sqrt(weights),
                bounds=([-np.inf, -np.inf, *low], [np.inf, np.inf, *high]), maxfev=4000,
            )
        polished_sse = float(np.sum(weights * (model.function(x, *polished) - y) ** 2))
        if np.isfinite(polished_sse) and polished_sse <= sse:
            return polished, polished_sse
    except (RuntimeError, ValueError, FloatingPointError):
        pass
    return params, sse


def aicc(sse_means: np.ndarray, pure_error: float, n_cells: int, n_params: int) -> np.ndarray:
    """AICc of a curve with ``n_params`` parameters plus the noise variance, from the cells'
    Gaussian likelihood: residual sum of squares = the seeds' spread around their size mean
    (``pure_error``, the same for every curve) + the seed-weighted SSE of the size means.

    With one seed per size, 6 sizes and 4 parameters the correction is infinite: a 4-parameter
    curve needs more cells than that to be chosen at all."""
    k = n_params + 1
    if n_cells - k - 1 <= 0:
        return np.full(np.shape(sse_means), np.inf)
    rss = np.maximum(pure_error + np.asarray(sse_means, dtype=float), 1e-300)
    return n_cells * np.log(rss / n_cells) + 2 * k + 2 * k * (k + 1) / (n_cells - k - 1)


def choose(sse: list[np.ndarray], pure_error: float, n_cells: int) -> np.ndarray:
    """Index of the chosen family per data set, from each family's SSE (R,) arrays: lowest
    AICc; with too few cells for any AICc (3 sizes, one seed), the 3-parameter family with
    the lower SSE (both have 3 parameters, so that is the AIC choice too)."""
    scores = np.stack([aicc(e, pure_error, n_cells, m.n_params) for e, m in zip(sse, CURVE_MODELS)])
    if np.isfinite(scores).any(axis=0).all():
        return np.argmin(scores, axis=0)
    plain = np.stack([e if m.n_params == 3 else np.full(np.shape(e), np.inf) for e, m in zip(sse, CURVE_MODELS)])
    return np.argmin(plain, axis=0)


@dataclass
class CurveFit:
    model: CurveModel
    params: np.ndarray  # (a, b, *theta) in x = n / n0 units
    n0: float
    sse: float
    r2: float | None

    def predict(self, sizes: np.ndarray) -> np.ndarray:
        return self.model.function(np.asarray(sizes, dtype=float) / self.n0, *self.params)


def _sse_floor(means: np.ndarray, weights: np.ndarray) -> float:
    # A noiseless curve fits to rounding error; below this the SSE differences between
    # families are numerical noise, not evidence.
    spread = float(np.sum(weights * (means - np.average(means, weights=weights)) ** 2))
    return 1e-12 * max(spread, 1e-12)


def fit_curve(sizes: np.ndarray, means: np.ndarray, weights: np.ndarray | None = None,
              pure_error: float = 0.0, n_cells: int | None = None) -> CurveFit | None:
    """Weighted least-squares fit of every family to per-size means (weights = seeds per
    size); the lowest AICc wins. ``pure_error`` = sum of squared seed deviations from their
    size means, ``n_cells`` = number of cells (default: one per size). None when no family
    gives finite predictions."""
    sizes = np.asarray(sizes, dtype=float)
    means = np.asarray(means, dtype=float)
    weights = np.ones_like(means) if weights is None else np.asarray(weights, dtype=float)
    n_cells = int(round(weights.sum())) if n_cells is None else n_cells
    n0 = float(sizes.min())
    x = sizes / n0
    floor = _sse_floor(means, weights)
    fits, errors = [], []
    for model in CURVE_MODELS:
        params, sse = profile_fit(model, x, means[None, :], weights)
        params, sse = polish(model, x, means, weights, params[0], float(sse[0]))
        finite = bool(np.all(np.isfinite(model.function(x, *params))))
        fits.append((model, np.asarray(params, dtype=float), sse))
        errors.append(np.array([max(sse, floor) if finite else np.inf]))
    if not np.isfinite(errors).any():
        return None
    model, params, sse = fits[int(choose(errors, pure_error, n_cells)[0])]
    plain_sse = float(np.sum((model.function(x, *params) - means) ** 2))
    sst = float(np.sum((means - means.mean()) ** 2))
    return CurveFit(model, params, n0, sse, 1.0 - plain_sse / sst if sst > 0 else None)


@dataclass
class ReplicateFits:
    """The chosen family and its parameters for every bootstrap replicate."""

    n0: float
    choice: np.ndarray  # (R,) index into CURVE_MODELS
    params: list[np.ndarray]  # per family, (R, n_params) (rows of other families unused)

    def predict(self, sizes: np.ndarray) -> np.ndarray:
        x = np.asarray(sizes, dtype=float) / self.n0
        out = np.empty((len(self.choice), len(x)))
        for i, model in enumerate(CURVE_MODELS):
            rows = self.choice == i
            if rows.any():
                p = self.params[i][rows]
                out[rows] = p[:, :1] - p[:, 1:2] * model.basis(x, p[:, 2:])
        return out

    def shares(self) -> dict[str, float]:
        return {m.name: float(np.mean(self.choice == i)) for i, m in enumerate(CURVE_MODELS) if (self.choice == i).any()}


def fit_replicates(sizes: np.ndarray, replicates: np.ndarray, weights: np.ndarray, pure_error: float,
                   n_cells: int) -> ReplicateFits:
    """Every family fitted to every replicate (R x sizes), each replicate choosing its own
    family by AICc, as :func:`fit_curve` does for the data."""
    sizes = np.asarray(sizes, dtype=float)
    n0 = float(sizes.min())
    x = sizes / n0
    errors, params = [], []
    floors = np.array([_sse_floor(r, weights) for r in replicates])
    for model in CURVE_MODELS:
        p, sse = profile_fit(model, x, replicates, weights)
        params.append(p)
        errors.append(np.maximum(sse, floors))
    return ReplicateFits(n0, choose(errors, pure_error, n_cells), params)
