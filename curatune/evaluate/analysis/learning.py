"""Learning vs forgetting per cell and stage, and the Pareto frontier of task gain against
general drop (see the package docstring for gain, drop and points)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from curatune.evaluate.analysis.inputs import ScoreIndex, SuiteRoles
from curatune.evaluate.metrics import MetricTable
from curatune.rundir import BASE


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
