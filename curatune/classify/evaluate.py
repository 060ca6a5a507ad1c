"""`curatune evaluate` for ``task: classification``: score the zero-shot baseline and every cell.

The zero-shot baseline (the run's ``base``) is computed here, on the test split
(train/heldout.parquet); a cell's labels come from its predictions.parquet, written by the
sweep. Every system gets accuracy and macro-F1 in eval/scores.parquet (suite
``classify.suite``, stage ``base`` or ``final``) and its per-example labels in
eval/samples/<suite>/<cell>__<stage>.parquet (prompt = text, reference = gold label, output =
predicted label, acc = 0/1), so the generic analysis (saturation curves, significance against
the base) runs unchanged. eval/classification.json adds what the saturation curve alone
cannot say: at each size, is SetFit better than zero-shot, and than the same head on the frozen
embedder, beyond what the choice of test items explains?
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd

from curatune.classify.methods import TextEncoder, ZeroShot
from curatune.classify.sweep import TASK, with_task_suite
from curatune.config import ExperimentConfig
from curatune.errors import DataError
from curatune.evaluate.analysis import analyze_run
from curatune.evaluate.analysis.comparisons import (
    SampleItems,
    compare_systems,
    label_family,
)
from curatune.evaluate.analysis.config import SignificanceConfig
from curatune.evaluate.analysis.significance import macro_f1_statistics
from curatune.models import load_embedder
from curatune.runcheck import read_run_json
from curatune.rundir import (
    BASE,
    PREDICTIONS,
    SCORE_COLUMNS,
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    list_cells,
    parse_cell_key,
)
from curatune.runlock import holds_stage_lock

METRICS = ("acc", "macro_f1")
SIGNATURES = {
    "acc": "acc|share of test examples whose predicted label is the gold label",
    "macro_f1": "macro_f1|mean over the test split's classes of per-class F1 (scikit-learn f1_score "
                "average=macro, labels=test classes, zero_division=0)",
}


def score_labels(references: list[str], outputs: list[str], classes: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 with scikit-learn (the reference the paired bootstrap must reproduce)."""
    from sklearn.metrics import (  # heavy import; only classification runs need it
        accuracy_score,
        f1_score,
    )

    return {"acc": float(accuracy_score(references, outputs)),
            "macro_f1": float(f1_score(references, outputs, labels=classes, average="macro", zero_division=0))}


@holds_stage_lock("eval")
def evaluate_classification(config: ExperimentConfig, run_dir: RunDir | str | None = None, *,
                            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir if run_dir is not None else config.run_dir)
    if not run_dir.plan.exists():
        raise DataError(f"{run_dir.plan}: not found; run `curatune sweep CONFIG` first")
    plan = read_run_json(run_dir.plan)
    if plan.get("task") != TASK:
        raise DataError(f"{run_dir.plan}: not a classification run (task: classification); "
                        "it was planned by a generation sweep")
    config = with_task_suite(config)
    run_dir.write_manifest(config.resolved(), "evaluate")
    suite, classes = plan["suite"], list(plan["classes"])
    test = pd.read_parquet(run_dir.heldout)
    test_ids = test["id"].astype(str).tolist()

    if progress:
        progress("zero-shot baseline")
    encoder = TextEncoder(load_embedder(config.model.embedder, config.model.device), config.classify.setfit.max_length)
    zero_shot = ZeroShot(encoder, classes, config.classify.label_names, config.classify.zero_shot_template)
    base_start = time.perf_counter()
    base_labels = zero_shot.predict(encoder.encode(test["text"].tolist()))
    base_seconds = time.perf_counter() - base_start

    rows = _score(run_dir, suite, test, classes, BASE, BASE, 0, 0, BASE, base_labels)
    scored, skipped = 1, []
    for cell in list_cells(run_dir):
        if cell.status != "done":
            skipped.append(f"{cell.key} ({cell.status})")
            continue
        labels = _cell_labels(cell.path / PREDICTIONS, test_ids)
        rows += _score(run_dir, suite, test, classes, cell.key, cell.method, cell.size, cell.seed, "final", labels)
        scored += 1
    atomic_write_parquet(run_dir.scores, pd.DataFrame(rows, columns=SCORE_COLUMNS))
    atomic_write_json(run_dir.signatures, {suite: SIGNATURES})
    analysis_config = config.evaluate.analysis
    analysis = analyze_run(run_dir, analysis_config)
    comparisons = compare_classification(run_dir, suite, analysis_config.significance)
    comparisons["zero_shot"] = {"template": config.classify.zero_shot_template, "prompts": zero_shot.prompts,
                                "seconds": base_seconds}
    atomic_write_json(run_dir.classification, comparisons)
    run_dir.stamp_stage_finished("evaluate", systems_scored=scored)
    return {"scored": scored, "skipped": skipped, "score_rows": len(rows), "scores": str(run_dir.scores),
            "analysis": str(run_dir.analysis), "comparisons": str(run_dir.classification),
            "warnings": analysis.get("warnings", []), "seconds": round(time.perf_counter() - started, 1)}


def _cell_labels(path, test_ids: list[str]) -> list[str]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # missing or damaged file: pyarrow raises several types
        raise DataError(f"{path}: cannot read the cell's predictions ({exc}); delete the cell folder and re-run "
                        "`curatune sweep`") from None
    by_id = dict(zip(frame["example_id"].astype(str), frame["prediction"].astype(str)))
    missing = [i for i in test_ids if i not in by_id]
    if missing:
        raise DataError(f"{path}: no prediction for {len(missing)} test examples (e.g. {missing[0]}): the test split "
                        "changed after this cell was trained; delete train/ and re-run `curatune sweep`")
    return [by_id[i] for i in test_ids]


def _score(run_dir: RunDir, suite: str, test: pd.DataFrame, classes: list[str], cell: str, method: str, size: int,
           seed: int, stage: str, labels: list[str]) -> list[dict[str, Any]]:
    references = test["label"].astype(str).tolist()
    atomic_write_parquet(run_dir.sample_file(suite, cell, stage), pd.DataFrame({
        "example_id": test["id"].astype(str).to_numpy(), "prompt": test["text"].to_numpy(),
        "reference": references, "output": labels,
        "acc": [float(a == b) for a, b in zip(references, labels)],
    }))
    values = score_labels(references, labels, classes)
    check, statistic = macro_f1_statistics(references, labels, classes)
    assert abs(statistic(check.sum(0)) - values["macro_f1"]) < 1e-9  # the bootstrap's statistic is sklearn's
    return [{"cell": cell, "method": method, "size": size, "seed": seed, "stage": stage, "suite": suite,
             "metric": metric, "value": values[metric], "n_items": len(references)} for metric in METRICS]


def compare_classification(run_dir: RunDir, suite: str, settings: SignificanceConfig) -> dict[str, Any]:
    """Paired tests on the test items, p-values adjusted together (settings.fdr):

    * per cell (one seed): against zero-shot and, for setfit, against logreg of the same size and
      seed: McNemar's exact test for accuracy, a paired bootstrap for macro-F1;
    * per (method, size), seeds pooled (their outputs as one corpus): the same comparisons, both
      metrics by paired bootstrap (a pooled per-item accuracy is no longer 0 or 1)."""
    items = SampleItems(run_dir)
    members: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for cell in list_cells(run_dir):
        if cell.status == "done":
            members.setdefault((cell.method, cell.size), []).append((cell.key, "final"))
    entries: list[dict[str, Any]] = []

    def add(method: str, size: int, seeds: str, against: str, a: list, b: list) -> None:
        for metric in METRICS:
            result = compare_systems(items, suite, metric, a, b, settings)
            entry = {"method": method, "size": size, "seeds": seeds, "against": against, "metric": metric,
                     **{k: result.get(k) for k in ("test", "n_items", "value_a", "value_b", "difference",
                                                   "ci_low", "ci_high", "ci_level", "p_value")},
                     "reason": result.get("reason"), "p_adjusted": None, "direction": "higher",
                     "label": result["status"] if result["status"] != "tested" else None}
            entries.append(entry)

    for (method, size), systems in sorted(members.items()):
        add(method, size, "pooled", "zero_shot", [(BASE, BASE)], systems)
        frozen = members.get(("logreg", size))
        if method == "setfit" and frozen:
            add(method, size, "pooled", "logreg", frozen, systems)
        for cell, stage in systems:
            seed = parse_cell_key(cell)[2]
            add(method, size, str(seed), "zero_shot", [(BASE, BASE)], [(cell, stage)])
            twin = [(c, s) for c, s in (frozen or []) if parse_cell_key(c)[2] == seed]
            if method == "setfit" and twin:
                add(method, size, str(seed), "logreg", twin, [(cell, stage)])
    label_family(entries, settings)
    return {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "suite": suite,
            "alpha": settings.alpha, "fdr": settings.fdr, "n_resamples": settings.n_resamples,
            "comparisons": entries}
