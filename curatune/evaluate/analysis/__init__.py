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

Modules, in the order the analysis runs:

- :mod:`.config`      the ``evaluate.analysis`` config section
- :mod:`.inputs`      scores.parquet checked, sample values, suite roles, score lookup
- :mod:`.lr_selection` with a learning-rate grid, the rate each (method, size) keeps (lowest
  mean validation loss); the other rates' cells are left out of everything below
- :mod:`.learning`    learning vs forgetting rows and the Pareto frontier
- :mod:`.significance` paired tests (McNemar, paired bootstrap, sacrebleu's paired-bs), FDR
- :mod:`.comparisons` which test per metric, items lined up from eval/samples, labels vs base,
  each method against the reference method (full) at every size, seeds pooled
- :mod:`.saturation`  saturation points, bootstrap bands (:mod:`.curves`: the curve families
  and their fits; :mod:`.verdict`: what an interval allows one to conclude, rounded)
- :mod:`.ranking`     early-vs-final rank agreement
- :mod:`.probes`      how well each KL probe predicts the benchmark drops over the cells
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from curatune.evaluate.analysis.comparisons import (
    SampleItems,
    compare_cells,
    compare_methods,
    mark_frontier_ordering,
    runner_up_checks,
    significance_vs_base,
)
from curatune.evaluate.analysis.config import AnalysisConfig, SignificanceConfig
from curatune.evaluate.analysis.inputs import (
    SampleStore,
    ScoreIndex,
    SuiteRoles,
    load_scores,
)
from curatune.evaluate.analysis.learning import (
    learning_forgetting_rows,
    pareto_frontier,
    pareto_table,
)
from curatune.evaluate.analysis.lr_selection import reported_scores, run_selection
from curatune.evaluate.analysis.probes import probe_correlations
from curatune.evaluate.analysis.ranking import early_vs_final, rank_agreement, spearman
from curatune.evaluate.analysis.saturation import (
    CURVE_COLUMNS,
    SaturationAnalysis,
    fit_curve,
)
from curatune.evaluate.metrics import MetricTable
from curatune.rundir import (
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    parse_cell_key,
)

__all__ = [
    "CURVE_COLUMNS", "AnalysisConfig", "MetricTable", "SignificanceConfig", "analyze_run", "compare_cells",
    "compare_methods",
    "fit_curve", "load_scores", "pareto_frontier", "pareto_table", "rank_agreement", "spearman",
]


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
    every_score = load_scores(run_dir.scores)
    # A learning-rate grid: each (method, size) is represented by its selected rate's cells only
    # (lr_selection's rule); the other rates' cells stay listed in analysis["lr_selection"].
    selection = run_selection(run_dir, config, every_score)
    every_score = scores = reported_scores(every_score, config)
    if selection.active:
        scores = scores[scores["cell"].map(selection.compares)].reset_index(drop=True)
    table = MetricTable(config.metric_directions)
    roles = SuiteRoles.resolve(scores, config, table)
    index = ScoreIndex(scores)
    notes = list(roles.warnings) + selection.warnings
    has_base = bool((scores["stage"] == "base").any())
    if not has_base:
        notes.append("no base-model scores (stage 'base'): learning and forgetting cannot be measured")
    samples = SampleStore(run_dir)
    rows = learning_forgetting_rows(index, roles, table)
    for row in rows:  # the rate a row was trained at, when it is a grid cell (None otherwise)
        parsed = parse_cell_key(str(row.get("cell", "")))
        row["lr"] = parsed.lr if parsed else None
    items = SampleItems(run_dir)
    significance = significance_vs_base(run_dir, rows, index, roles, table, config.significance, items)
    pareto = pareto_table(rows, roles, with_base=has_base)
    mark_frontier_ordering(pareto, rows, index, roles, table, config.significance, items)
    for point in pareto:  # the selected rate each (method, size) point stands for (None without a grid)
        point["lr"] = selection.selected_rate(point["method"], int(point.get("size") or 0))
    methods = compare_methods(index, roles, table, config.significance, items)
    unsettled = set(selection.unsettled)
    for entry in methods["entries"]:  # the selected rate each side stands for (None without a grid)
        entry["lr_a"] = selection.selected_rate(entry["method_a"], entry["size"])
        entry["lr_b"] = selection.selected_rate(entry["method_b"], entry["size"])
        # a side whose grid is still training (or unscored) stands at a rate that may yet change
        entry["provisional"] = bool({(entry["method_a"], entry["size"]), (entry["method_b"], entry["size"])} & unsettled)
    if selection.active:  # where a choice of rate is within seed noise: would the verdict survive the other one?
        methods["runner_up_checks"] = runner_up_checks(every_score, selection, roles, table, config.significance,
                                                       items, methods["entries"])
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
        "lr_selection": selection.to_dict(),
        "pareto": pareto,
        "significance": significance,
        "method_comparison": methods,
        "saturation": saturation,
        "early_vs_final": early_vs_final(index, roles, table, config.top_k),
        "probe_correlations": probe_correlations(rows, roles),
        "inputs": {"score_rows": int(len(scores)), "sample_files_read": samples.files_read},
        "warnings": notes,
    }
    analysis = _clean(analysis)
    if write:
        # Curves first: a reader that finds a fresh analysis.json finds its curves too.
        atomic_write_parquet(run_dir.saturation_curves, curves[CURVE_COLUMNS].reset_index(drop=True))
        atomic_write_json(run_dir.analysis, analysis)
    return analysis
