"""Do the forgetting probes predict the benchmark drops? Spearman correlation, over a run's
final cells, between each probe's KL divergence from the base model (the data-free retention
probe, and a probe on the task's own held-out prompts: ``kind: retention, prompts: heldout``)
and each benchmark's drop, and the mean drop in points."""
from __future__ import annotations

from typing import Any

import numpy as np

from curatune.evaluate.analysis.inputs import SuiteRoles
from curatune.evaluate.analysis.ranking import spearman

GENERAL_DROP = "general_drop"


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def probe_correlations(rows: list[dict[str, Any]], roles: SuiteRoles) -> list[dict[str, Any]]:
    """One entry per (probe suite, benchmark suite or ``general_drop``): Spearman rho of the
    probe's KL against the drop over final cells, its p-value, and the number of cells. A
    positive rho means the cells that drift more from the base model also lose more."""
    probes = [s for s in roles.general if roles.primary.get(s) == "kl_divergence"]
    targets = [s for s in roles.general if s not in probes]
    final = [r for r in rows if r["stage"] == "final"]
    out = []
    for probe in probes:
        for target in [*targets, GENERAL_DROP]:
            pairs = []
            for row in final:
                x = row["forgetting"].get(probe)
                y = row.get(GENERAL_DROP) if target == GENERAL_DROP else row["forgetting"].get(target)
                if _finite(x) and _finite(y):
                    pairs.append((x, y))
            entry = {"probe": probe, "target": target,
                     "target_metric": "points" if target == GENERAL_DROP else roles.primary[target],
                     "n_cells": len(pairs), "spearman": None, "p_value": None, "reason": None}
            xs, ys = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
            if len(pairs) < 3:
                entry["reason"] = "fewer than 3 final cells with both values"
            elif np.ptp(xs) == 0 or np.ptp(ys) == 0:
                entry["reason"] = "one of the two is the same for every cell"
            else:
                entry["spearman"], entry["p_value"] = spearman(xs, ys)
            out.append(entry)
    return out
