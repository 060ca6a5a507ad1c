"""Early vs final: do the early checkpoints rank the cells like the final weights
(Oliver & Wang 2024)? Spearman correlation and top-k overlap per task metric."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from curatune.evaluate.analysis.inputs import ScoreIndex, SuiteRoles
from curatune.evaluate.metrics import MetricTable


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
