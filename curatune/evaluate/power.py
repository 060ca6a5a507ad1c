"""Power before the run: how large a change each evaluation suite can detect at its item count,
and how many items a change of a given size needs (``curatune plan CONFIG``).

Accuracy-type suites (per-item 0/1: multiple choice, LAMBADA accuracy, exact match) are
compared with McNemar's test on paired items, whose power depends on the *discordance rate*
psi: the share of items that one model gets right and the other wrong. For a difference
delta = p_tuned - p_base, Connor (1987) gives the items needed at two-sided level alpha and
power 1 - beta::

    n = (z_{1-alpha/2} * sqrt(psi) + z_{1-beta} * sqrt(psi - delta^2))^2 / delta^2

and the minimum detectable effect (MDE) at n items is the delta solving it. psi comes from
an existing run (median over its fine-tuned cells of the share of items where the cell and
the base model disagree), else :data:`DEFAULT_DISCORDANCE`.

Continuous per-item metrics (field F1, sentence chrF++ as a proxy for corpus chrF++, KL,
log-likelihood) use the normal approximation of the paired mean difference,
n = ((z_{1-alpha/2} + z_{1-beta}) * sd / delta)^2, with sd the standard deviation of the
per-item differences between a cell and the base model; that needs a run (there is no
sensible default), so before a run those suites show "needs a run".

Both formulas are for one test at level alpha; with the false-discovery adjustment over a
whole run (docs/analysis.md), the effects a run can label are somewhat larger.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import (
    ndtri,  # the normal quantile, without importing scipy.stats (seconds)
)

from curatune.errors import CuratuneError
from curatune.evaluate import perplexity
from curatune.evaluate.analysis.comparisons import SampleItems, Unavailable
from curatune.evaluate.analysis.inputs import load_scores
from curatune.evaluate.analysis.significance import DEFAULT_DISCORDANCE
from curatune.evaluate.metrics import PRIMARY_PREFERENCE
from curatune.evaluate.multiple_choice import load_mc_items
from curatune.evaluate.retention import load_retention_prompts
from curatune.rundir import BASE, RunDir

ACCURACY_METRICS = ("acc_norm", "acc", "exact_match")


def _z(alpha: float, power: float) -> tuple[float, float]:
    return float(ndtri(1 - alpha / 2)), float(ndtri(power))


def mcnemar_items_needed(delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired items McNemar's test needs to detect a difference ``delta`` (Connor 1987); None
    when ``delta`` is impossible at this discordance (|delta| > psi)."""
    delta = abs(delta)
    if delta <= 0 or delta > discordance:
        return None
    z_a, z_b = _z(alpha, power)
    return math.ceil((z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - delta**2)) ** 2 / delta**2)


def mcnemar_mde(n_items: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest |p_tuned - p_base| McNemar's test detects with ``power`` at ``n_items`` pairs;
    None when even the largest possible difference (all discordant items one way) is not."""
    if n_items <= 0 or not 0 < discordance <= 1:
        return None
    z_a, z_b = _z(alpha, power)

    def shortfall(delta: float) -> float:
        return math.sqrt(n_items) * delta - z_a * math.sqrt(discordance) - z_b * math.sqrt(max(discordance - delta**2, 0.0))

    if shortfall(discordance) < 0:
        return None
    return float(optimize.brentq(shortfall, 1e-12, discordance))


def mean_items_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    if delta == 0 or sd <= 0:
        return None
    z_a, z_b = _z(alpha, power)
    return math.ceil(((z_a + z_b) * sd / abs(delta)) ** 2)


def mean_mde(n_items: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    if n_items <= 0 or sd <= 0:
        return None
    z_a, z_b = _z(alpha, power)
    return (z_a + z_b) * sd / math.sqrt(n_items)


@dataclass
class PowerRow:
    suite: str
    kind: str
    metric: str | None
    n_items: int | None
    test: str  # mcnemar | paired mean | none
    spread: float | None  # discordance (mcnemar) or sd of per-item differences (paired mean)
    spread_source: str
    mde: float | None  # in the metric's units
    drop: float | None  # the named drop, in the metric's units
    items_for_drop: int | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- from a run


def _final_cells(scores: pd.DataFrame) -> list[str]:
    return sorted(scores.loc[scores["stage"] == "final", "cell"].unique())


def observed_spread(run: RunDir, scores: pd.DataFrame, suite: str, metric: str) -> tuple[str, float] | None:
    """("discordance" | "sd", median over final cells) of per-item differences from the base
    model, from eval/samples; None when the run has no paired samples for it."""
    items = SampleItems(run)
    try:
        base = items.column_stats(suite, BASE, "base", metric)
    except Unavailable:
        return None
    values = []
    kind = None
    for cell in _final_cells(scores):
        try:
            other = items.column_stats(suite, cell, "final", metric)
        except Unavailable:
            continue
        if set(other.ids) != set(base.ids):
            continue
        ids = sorted(base.ids)
        diff = other.aligned(ids)[:, 0] - base.aligned(ids)[:, 0]
        if base.kind == "binary" and other.kind == "binary":
            kind = "discordance"
            values.append(float(np.mean(diff != 0)))
        else:
            kind = "sd"
            values.append(float(np.std(diff, ddof=1)) if len(diff) > 1 else 0.0)
    if not values or kind is None:
        return None
    return kind, float(np.median(values))


# ----------------------------------------------------------------------------- from a config


def _item_count(spec: Any, config: Any, run: RunDir | None, scores: pd.DataFrame | None) -> tuple[int | None, str]:
    if scores is not None:
        rows = scores[(scores["suite"] == spec.name) & (scores["stage"] == "base")]
        if len(rows):
            return int(rows["n_items"].max()), "scored"
    try:
        if spec.kind == "retention" and spec.prompts == "heldout":  # the task's held-out prompts
            return _heldout_count(spec.limit, config)
        if spec.kind == "retention":
            n = len(load_retention_prompts(spec.path))
        elif spec.kind == "multiple_choice":
            return len(load_mc_items(spec.path, limit=spec.limit, seed=config.evaluate.seed)), "file"
        elif spec.kind == "perplexity":
            return len(perplexity.load_text_items(spec.path, limit=spec.limit, seed=config.evaluate.seed)), "file"
        elif spec.kind == "lambada":
            return len(perplexity.load_lambada_items(spec.path, limit=spec.limit, seed=config.evaluate.seed)), "file"
        elif spec.kind == "lm_eval":  # lm-eval knows its documents (per subtask, for a group) once it loads them
            return None, "unknown before lm-eval loads the task"
        else:  # generation on the held-out split (not carved yet before a run)
            if spec.path is None:
                return _heldout_count(spec.limit if spec.limit is not None else config.evaluate.limit_heldout, config)
            return (spec.limit, "config") if spec.limit else (None, "unknown before loading")
    except CuratuneError as exc:
        return None, f"unreadable ({exc})"
    if spec.limit is not None:
        n = min(n, spec.limit)
    return n, "file"


def _heldout_count(limit: int | None, config: Any) -> tuple[int | None, str]:
    """Items of a suite drawn from the held-out split, as the config sizes it (unknown when
    data.eval_sources decide the split)."""
    n = config.data.heldout_size if not config.data.eval_sources else None
    if n is None:
        return (limit, "config") if limit is not None else (None, "unknown before the split")
    return (min(n, limit) if limit is not None else n), "config"


def _headline(spec: Any, config: Any, scores: pd.DataFrame | None) -> str | None:
    chosen = config.evaluate.analysis.primary_metrics.get(spec.name)
    if chosen:
        return chosen
    if scores is not None:
        present = set(scores.loc[scores["suite"] == spec.name, "metric"])
        ranked = [m for m in PRIMARY_PREFERENCE if m in present]
        if ranked:
            return ranked[0]
    if spec.kind in ("multiple_choice",):
        return "acc_norm"
    if spec.kind == "lambada":
        return "acc"
    if spec.kind == "perplexity":
        return "bits_per_byte"
    if spec.kind == "retention":
        return "kl_divergence"
    metrics = list(getattr(spec, "metrics", None) or [])  # lm_eval suites: lm-eval's metrics, known after a run
    ranked = [m for m in PRIMARY_PREFERENCE if m in metrics]
    return ranked[0] if ranked else None


def power_table(config: Any, run: RunDir | None = None, *, drop: float = 0.02, alpha: float = 0.05,
                power: float = 0.8, discordance: float | None = None) -> list[PowerRow]:
    """One row per evaluation suite of ``config``: item count, MDE and the items a change of
    ``drop`` (in the metric's units: 0.02 = two accuracy points) needs."""
    scores = None
    if run is not None and run.scores.exists():
        scores = load_scores(run.scores)
    rows = []
    for spec in config.evaluate.effective_suites():
        if getattr(spec, "split", None) == "validation":  # chooses a grid's rates; never tested against base
            size = config.train.effective_validation_size()
            n = min(size, spec.limit) if spec.limit else size
            rows.append(PowerRow(spec.name, spec.kind, None, n, "none", None, "", None, drop, None,
                                 "validation split: chooses the learning rate (lr_select_by); no test against the "
                                 "base model"))
            continue
        n, source = _item_count(spec, config, run, scores)
        metric = _headline(spec, config, scores)
        observed = observed_spread(run, scores, spec.name, metric) if scores is not None and metric else None
        if metric in ("kl_divergence", "answer_agreement"):
            rows.append(PowerRow(spec.name, spec.kind, metric, n, "none", None, "", None, drop, None,
                                 "no test against the base model (0 or 1 by definition); compared between cells"))
            continue
        if metric in ACCURACY_METRICS or (observed and observed[0] == "discordance"):
            psi, psi_source = (observed[1], "this run") if observed else (
                (discordance, "given") if discordance is not None else (DEFAULT_DISCORDANCE, "default"))
            mde = mcnemar_mde(n, psi, alpha, power) if n else None
            needed = mcnemar_items_needed(drop, psi, alpha, power)
            notes = [] if n else [f"item count {source}"]
            if n and mde is None:
                notes.append(f"with {psi:.3g} of items discordant, even all of them one way is too few to detect")
            if needed is None:
                notes.append(f"a change of {drop:g} needs at least that share of discordant items (here {psi:.3g})")
            rows.append(PowerRow(spec.name, spec.kind, metric, n, "mcnemar", psi, psi_source, mde, drop, needed,
                                 "; ".join(notes)))
            continue
        if observed and observed[0] == "sd":
            sd = observed[1]
            rows.append(PowerRow(spec.name, spec.kind, metric, n, "paired mean", sd, "this run",
                                 mean_mde(n, sd, alpha, power) if n else None, drop,
                                 mean_items_needed(drop, sd, alpha, power),
                                 "sentence-level values as a proxy for the corpus score" if metric in ("chrf", "bleu", "ter") else ""))
            continue
        rows.append(PowerRow(spec.name, spec.kind, metric, n, "paired mean" if metric else "none", None, "",
                             None, drop, None, "needs a run: the spread of per-item differences is unknown"))
    return rows


def sweep_size(config: Any) -> dict[str, int]:
    """Cells of the grid and evaluation units (model x stage x suite) it asks for; a suite's own
    ``stages`` (e.g. benchmarks at [base, final] only) count as configured."""
    train = config.train
    per_size_seed = {m: len(train.grid_rates(m)) for m in train.methods}  # a method's rates (1 without a grid)
    cells = sum(per_size_seed.values()) * len(train.sizes) * len(train.seeds)
    # evaluate.lr_grid_cells = selected: per (method, size, seed) one rate gets every suite, the others the task suites
    fully_scored = cells
    if config.evaluate.lr_grid_cells == "selected":
        fully_scored = len(train.methods) * len(train.sizes) * len(train.seeds)
    suites = config.evaluate.effective_suites()
    task_suites = set(config.evaluate.analysis.task_suites)
    units = 0
    for spec in suites:
        stages = spec.stages or config.evaluate.stages
        if getattr(spec, "split", None) == "validation":  # every grid cell's final weights, nothing else
            grid_rates = sum(n for m, n in per_size_seed.items() if train.learning_rates.get(m))
            units += grid_rates * len(train.sizes) * len(train.seeds) if "final" in stages else 0
            continue
        scored_cells = cells if spec.name in task_suites else fully_scored
        units += (1 if "base" in stages else 0) + scored_cells * sum(1 for s in stages if s != "base")
    return {"cells": cells, "suites": len(suites), "evaluation_units": units,
            "learning_rates": {m: n for m, n in per_size_seed.items() if train.learning_rates.get(m)}}
