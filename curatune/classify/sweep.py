"""`curatune sweep` for ``task: classification``: train every (method, size per class, seed) cell.

Writes the same run-directory files as a generation sweep (curatune/rundir.py): train/plan.json,
heldout.parquet (the test split), pool.parquet, subsets.parquet and one folder per cell,
``train/<method>/n<size per class>/s<seed>/`` with cell.json, predictions.parquet (the cell's
label for every test example, which `curatune evaluate` scores) and done.json written last, or
failed.json. A cell's size is per class: n8 holds 8 examples of every class.

Tuned weights are kept only with ``classify.setfit.save_weights`` (final/: the embedder as
safetensors, the head's coefficients in head.safetensors); a cell is done without them because
its predictions are what is scored.
"""
from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from curatune.classify.config import ClassifyConfig
from curatune.classify.data import LabelledData, load_labelled
from curatune.classify.methods import (
    CellOutcome,
    TextEncoder,
    train_logreg,
    train_setfit,
)
from curatune.classify.subsets import Split, carve_test, nested_subsets
from curatune.config import ExperimentConfig
from curatune.errors import ConfigError, CuratuneError
from curatune.models import (
    load_embedder,
    load_trainable_embedder,
    resolve_embedder_path,
)
from curatune.rundir import (
    CELL,
    DONE,
    FAILED,
    FINAL,
    PREDICTIONS,
    CellSpec,
    RunDir,
    atomic_path,
    atomic_write_json,
    atomic_write_parquet,
    cell_status,
    read_json_or_none,
)
from curatune.runlock import holds_stage_lock, restore_default_modes

#: Marks a classification run in train/plan.json (the app and `curatune evaluate` read it).
TASK = "classification"


def with_task_suite(config: ExperimentConfig) -> ExperimentConfig:
    """The config with the classification suite as the analysis' task suite, so that the resolved
    config.yaml the report and the app read analyses the run as it was scored."""
    analysis = config.evaluate.analysis.model_copy(update={"task_suites": [config.classify.suite]})
    evaluate = config.evaluate.model_copy(update={"analysis": analysis})
    return config.model_copy(update={"evaluate": evaluate})


def plan_classification(config: ExperimentConfig, run_dir: RunDir) -> tuple[LabelledData, Split, list[CellSpec]]:
    """Read the data, carve the test split, draw the subsets and write the plan files."""
    settings = config.classify
    data = load_labelled(config.data.sources, settings)
    split = carve_test(data.records, settings.heldout_per_class, max(settings.sizes_per_class), settings.heldout_seed)
    subsets = nested_subsets(split.pool, settings.sizes_per_class, settings.seeds)
    # Smallest sizes first: an interrupted sweep already has the start of every curve.
    specs = [CellSpec(m, size, seed) for size in settings.sizes_per_class for seed in settings.seeds
             for m in settings.methods]
    atomic_write_parquet(run_dir.heldout, split.test)
    atomic_write_parquet(run_dir.pool, split.pool)
    atomic_write_parquet(run_dir.subsets, subsets)
    atomic_write_json(run_dir.plan, {
        "task": TASK,
        "suite": settings.suite,
        "size_unit": "per_class",
        "classes": split.classes,
        "class_counts": data.counts(),
        "rejected_rows": len(data.rejected),
        "rejected_reasons": _reason_counts(data.rejected),
        "fields": data.fields,
        "heldout_size": len(split.test),
        "pool_size": len(split.pool),
        "cells": [{"method": s.method, "size": s.size, "seed": s.seed, "key": s.key} for s in specs],
    })
    atomic_write_json(run_dir.sweep_config, {"task": TASK, "embedder": config.model.embedder,
                                             "classify": settings.model_dump(mode="json")})
    return data, split, specs


def _reason_counts(rejected: list[dict[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rejected:
        counts[row["reason"]] = counts.get(row["reason"], 0) + 1
    return counts


class FrozenEmbeddings:
    """Embeddings of the pool and the test split by the untuned embedder, computed once per sweep
    (every logreg cell reuses them)."""

    def __init__(self, config: ExperimentConfig, split: Split):
        encoder = TextEncoder(load_embedder(config.model.embedder, config.model.device),
                              config.classify.setfit.max_length)
        start = time.perf_counter()
        self.pool = dict(zip(split.pool["id"], encoder.encode(split.pool["text"].tolist())))
        self.test = encoder.encode(split.test["text"].tolist())
        self.seconds = time.perf_counter() - start

    def of(self, ids: list[str]) -> np.ndarray:
        return np.stack([self.pool[i] for i in ids])


@holds_stage_lock("train")  # one process per stage on a run directory
def run_classification_sweep(config: ExperimentConfig, run_dir: RunDir | str | os.PathLike | None = None, *,
                             only: list[str] | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Train every classification cell not done yet; returns a summary like the generation sweep's."""
    started = time.perf_counter()
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir if run_dir is not None else config.run_dir)
    settings = config.classify
    if only:
        unknown = [m for m in only if m not in settings.methods]
        if unknown:
            raise ConfigError(f"--only {unknown}: not in classify.methods {settings.methods}")
    config = with_task_suite(config)
    run_dir.write_manifest(config.resolved(), "train")
    _, split, specs = plan_classification(config, run_dir)
    subsets = pd.read_parquet(run_dir.subsets)
    pool = split.pool.set_index("id")
    frozen: FrozenEmbeddings | None = None
    stale = [s.key for s in specs if cell_status(s.path(run_dir)) == "done"
             and _recorded(read_json_or_none(s.path(run_dir) / CELL)) != _recorded(_settings(config, s, split))]
    if stale:
        raise ConfigError(
            f"cells {', '.join(stale)} were trained with other settings or another test split than the config now "
            f"asks for; delete them (or {run_dir.train}) to retrain, or restore the settings they were trained with"
        )
    ran, already, failed = [], [], {}
    for spec in specs:
        folder = spec.path(run_dir)
        if only and spec.method not in only:
            continue
        if cell_status(folder) == "done":
            already.append(spec.key)
            continue
        if progress:
            progress(spec.key)
        ids = subsets.loc[(subsets["seed"] == spec.seed) & (subsets["size"] == spec.size), "id"].tolist()
        try:
            if spec.method == "logreg" and frozen is None:
                frozen = FrozenEmbeddings(config, split)
            _run_cell(config, settings, spec, folder, pool.loc[ids], split, frozen)
            ran.append(spec.key)
        except CuratuneError as exc:
            atomic_write_json(folder / FAILED, {"error": str(exc), "failed": _now()})
            failed[spec.key] = str(exc)
    done = sum(cell_status(s.path(run_dir)) == "done" for s in specs)
    summary = {"cells_total": len(specs), "cells_done": done, "ran": ran, "already_done": already,
               "failed": failed, "wall_seconds": time.perf_counter() - started, "notes": [],
               "embed_seconds": frozen.seconds if frozen else None}
    run_dir.stamp_stage_finished("train", cells_done=done, cells_failed=len(failed))
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: cell.json keys that decide what a cell learns and where it is scored (a change makes the cell stale).
RECORDED = ("settings", "head", "base_model_path", "test_digest", "train_examples")


def _recorded(cell: dict | None) -> dict:
    return {k: (cell or {}).get(k) for k in RECORDED}


def _settings(config: ExperimentConfig, spec: CellSpec, split: Split) -> dict[str, Any]:
    settings = config.classify
    return {"method": spec.method, "size": spec.size, "size_unit": "per_class", "seed": spec.seed, "task": TASK,
            "base_model": config.model.embedder, "base_model_path": resolve_embedder_path(config.model.embedder),
            "train_examples": spec.size * len(split.classes),
            "settings": settings.setfit.model_dump(mode="json") if spec.method == "setfit" else {},
            "head": settings.head.model_dump(mode="json"),
            # the test split's ids and labels: predictions of another split cannot be scored on this one
            "test_digest": hashlib.sha256("\n".join(split.test["id"] + "\t" + split.test["label"]).encode()).hexdigest()[:16]}


def _run_cell(config: ExperimentConfig, settings: ClassifyConfig, spec: CellSpec, folder: Path,
              train: pd.DataFrame, split: Split, frozen: FrozenEmbeddings | None) -> None:
    (folder / FAILED).unlink(missing_ok=True)
    record = {**_settings(config, spec, split), "started": _now()}
    atomic_write_json(folder / CELL, record)
    start = time.perf_counter()
    labels = train["label"].tolist()
    if spec.method == "logreg":
        outcome = train_logreg(frozen.of(train.index.tolist()), labels, frozen.test, settings.head, spec.seed)
    else:
        body = load_trainable_embedder(config.model.embedder, config.model.device)
        outcome = train_setfit(body, train["text"].tolist(), labels, split.test["text"].tolist(), settings.setfit,
                               settings.head, spec.seed, folder / "setfit_scratch")
    wall = time.perf_counter() - start
    atomic_write_parquet(folder / PREDICTIONS, pd.DataFrame({
        "example_id": split.test["id"].astype(str).to_numpy(), "prediction": outcome.predictions}))
    weights = _save_weights(folder, outcome) if spec.method == "setfit" and settings.setfit.save_weights else {}
    atomic_write_json(folder / DONE, {
        **{k: record[k] for k in ("method", "size", "size_unit", "seed", "task", "base_model", "base_model_path",
                                  "train_examples")},
        "classes": sorted(set(labels)),
        "wall_seconds": wall, "train_seconds": outcome.train_seconds, "predict_seconds": outcome.predict_seconds,
        **outcome.info, "weights": weights, "finished": _now(),
    })


def _save_weights(folder: Path, outcome: CellOutcome) -> dict[str, Any]:
    """final/: the tuned embedder (sentence-transformers folder, safetensors) and the head's
    coefficients (head.safetensors; the class order is in head.json): no pickle."""
    from safetensors.numpy import save_file  # only when weights are kept

    target = folder / FINAL
    outcome.body.save(str(target), safe_serialization=True)
    restore_default_modes(target)  # safetensors writes weights 0600
    head = outcome.head
    with atomic_path(target / "head.safetensors") as tmp:
        save_file({"coef": np.ascontiguousarray(head.coef_, dtype=np.float32),
                   "intercept": np.ascontiguousarray(head.intercept_, dtype=np.float32)}, str(tmp))
    atomic_write_json(target / "head.json", {"classes": [int(c) for c in head.classes_],
                                             "normalize_embeddings": True})
    return {"final": FINAL}


def read_plan_task(run_dir: RunDir) -> str | None:
    """The task of a planned run ("classification"), or None for a generation run or no plan."""
    plan = read_json_or_none(run_dir.plan)
    return plan.get("task") if isinstance(plan, dict) else None
