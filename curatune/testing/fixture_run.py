"""A complete SYNTHETIC run directory for tests of the analysis, the report and the app.

Nothing here was trained or evaluated: every number comes from closed-form curves plus
seeded noise, chosen to look like a real sweep so code paths get exercised. Do not use
it as a result. The shape follows the run-directory contract in :mod:`curatune.rundir`:

* manifest.json (with ``"synthetic": true``), config.yaml
* curate/kept.parquet, curate/removed.parquet, curate/report.json (counts add up)
* train/plan.json, train/heldout.parquet, train/subsets.parquet (nested subsets), and one
  folder per cell with train_log.jsonl and done.json, or failed.json for the one failed
  cell; no weights (``done.json["weights"]`` is null)
* eval/scores.parquet: the base model, then an ``early`` and a ``final`` stage per done cell,
  on a generation task suite ``task`` (bleu, chrf, ter, comet_like), two multiple-choice
  suites ``arc_easy`` and ``piqa`` (acc, acc_norm) and ``retention`` (kl_divergence)
* eval/samples/<suite>/<cell>__<stage>.parquet with per-example metric columns whose mean
  is the suite score
* eval/analysis.json and eval/saturation_curves.parquet from :func:`analyze_run`

The planted behaviour (what tests can check): task quality rises and saturates with size
(a - b * n^-c per method); ``full`` is worse than the base model at the smallest size and
gains most; general accuracy drops and KL divergence rises with size, more for ``full``
than for ``lora`` (LoRA forgets less); early checkpoints rank cells like the final ones.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from curatune.config import ExperimentConfig
from curatune.evaluate.analysis import analyze_run
from curatune.evaluate.report import analysis_config_of
from curatune.records import LEDGER_COLUMNS, Record, records_to_frame
from curatune.rundir import (
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_json,
)

AUTO = "auto"


@dataclass(frozen=True)
class MethodCurve:
    """Task-quality gain over the base model: plateau - scale * n^-exponent, and forgetting
    per doubling of the data."""

    plateau: float
    gain_at_50: float
    exponent: float
    forgetting: float  # accuracy drop per doubling of the training set
    kl: float  # KL divergence to the base model per doubling

    def gain(self, size: float) -> float:
        scale = (self.plateau - self.gain_at_50) * 50**self.exponent
        return self.plateau - scale * size ** (-self.exponent)


CURVES = {
    "full": MethodCurve(plateau=0.34, gain_at_50=-0.04, exponent=0.9, forgetting=0.018, kl=0.06),
    "lora": MethodCurve(plateau=0.27, gain_at_50=0.04, exponent=0.8, forgetting=0.005, kl=0.015),
    "qlora": MethodCurve(plateau=0.24, gain_at_50=0.03, exponent=0.8, forgetting=0.006, kl=0.02),
}
BASE_QUALITY = 0.35
GENERAL_SUITES = {"arc_easy": (0.62, 0.58), "piqa": (0.66, 0.68)}  # base (acc, acc_norm)


def _task_metrics(quality: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example generation metrics from a latent quality in [0, 1]."""
    return {
        "bleu": 100 * 0.7 * quality**1.5,
        "chrf": 100 * (0.15 + 0.8 * quality),
        "ter": 100 * (1 - 0.75 * quality),
        "comet_like": 0.3 + 0.6 * quality,
    }


class _Generator:
    """Draws every synthetic number; one seeded generator per purpose so adding a cell does
    not change the numbers of the others."""

    def __init__(self, seed: int, n_items: int):
        self.seed = seed
        self.n_items = n_items
        rng = self.rng("items")
        self.difficulty = rng.normal(0, 0.12, n_items)  # shared by every model: paired items
        self.mc_threshold = {s: rng.uniform(0, 1, n_items) for s in GENERAL_SUITES}
        self.kl_weight = rng.gamma(4.0, 0.25, n_items)

    def rng(self, *parts: object) -> np.random.Generator:
        return np.random.default_rng([self.seed] + [zlib.crc32(str(p).encode()) for p in parts])

    def quality(self, gain: float, key: tuple) -> np.ndarray:
        rng = self.rng("quality", *key)
        shift = rng.normal(0, 0.01)  # seed-to-seed spread of one cell
        return np.clip(BASE_QUALITY + gain + shift + self.difficulty + rng.normal(0, 0.04, self.n_items), 0, 1)

    def multiple_choice(self, suite: str, accuracy: float, key: tuple) -> np.ndarray:
        # An item is right when its fixed threshold is under the model's accuracy, with a
        # little per-model jitter: accuracy moves smoothly and items stay paired.
        jitter = self.rng("mc", suite, *key).normal(0, 0.05, self.n_items)
        return (self.mc_threshold[suite] + jitter < accuracy).astype(float)


def build_fixture_run(
    root: str | Path,
    methods: Sequence[str] = ("lora", "full"),
    sizes: Sequence[int] = (50, 100, 200, 400),
    seeds: Sequence[int] = (0, 1),
    *,
    n_items: int = 40,
    failed_cell: tuple[str, int, int] | str | None = AUTO,
    early: bool = True,
    samples: bool = True,
    seed: int = 0,
    name: str = "fixture",
    analyze: bool = True,
    n_bootstrap: int = 50,
) -> RunDir:
    """Write a synthetic run directory under ``root`` and return it.

    ``failed_cell``: the cell whose training failed (failed.json, no scores); ``"auto"`` =
    the last method's largest size with the last seed, ``None`` = every cell done.
    ``n_bootstrap`` is kept small by default so the fixture builds in a few seconds.
    """
    run = RunDir(root)
    run.root.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in methods if m not in CURVES]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; the fixture knows {sorted(CURVES)}")
    if failed_cell == AUTO:
        failed_cell = (methods[-1], max(sizes), seeds[-1])
    gen = _Generator(seed, n_items)

    resolved = _resolved_config(ExperimentConfig, name, run.root, methods, sizes, seeds, n_bootstrap)
    run.write_manifest(resolved, "curate")

    kept_ids, heldout = _write_curate(run, gen, max(sizes), n_items)
    run.stamp_stage_finished("curate", kept=len(kept_ids) + n_items)
    run.write_manifest(resolved, "train")
    cells = _write_train(run, gen, methods, sizes, seeds, kept_ids, heldout, failed_cell)
    run.stamp_stage_finished("train", done=sum(c[3] for c in cells), failed=sum(not c[3] for c in cells))
    run.write_manifest(resolved, "evaluate")
    _write_eval(run, gen, [c[:3] for c in cells if c[3]], heldout, early=early, samples=samples)
    run.stamp_stage_finished("evaluate")
    manifest = read_json(run.manifest)
    manifest["synthetic"] = True
    manifest["note"] = "synthetic test fixture written by curatune.testing.fixture_run; no model was trained"
    atomic_write_json(run.manifest, manifest)
    if analyze:
        # The settings config.yaml records, so `curatune report` finds the analysis current.
        analyze_run(run, analysis_config_of(run))
    return run


def _resolved_config(config_cls, name, root, methods, sizes, seeds, n_bootstrap) -> dict:
    raw = {
        "name": name,
        "run_dir": str(root),
        "train": {"sizes": list(sizes), "seeds": list(seeds), "methods": list(methods)},
        "evaluate": {
            "suites": [
                {"name": "task", "kind": "generation", "metrics": ["bleu", "chrf", "ter", "comet_like"]},
                {"name": "arc_easy", "kind": "multiple_choice", "path": "synthetic/arc_easy.jsonl"},
                {"name": "piqa", "kind": "multiple_choice", "path": "synthetic/piqa.jsonl"},
                {"name": "retention", "kind": "retention"},
            ],
            "analysis": {"n_bootstrap": n_bootstrap},
        },
    }
    # Fall back section by section when a teammate's config section does not take a key
    # yet, so the fixture keeps working while the stages evolve.
    for attempt in range(4):
        try:
            return config_cls.model_validate(raw).resolved()
        except Exception as exc:  # pydantic.ValidationError
            keys = {str(e["loc"][0]) for e in getattr(exc, "errors", lambda: [])()}
            if not keys or attempt == 3:
                raise
            for key in keys:
                raw.pop(key, None)
    raise AssertionError("unreachable")


def _record(i: int, kind: str) -> Record:
    colors = ["red", "blue", "green", "black", "white"]
    item = ["mug", "lamp", "backpack", "chair", "kettle", "notebook"][i % 6]
    color = colors[i % len(colors)]
    prompt = f"Extract the attributes as JSON: A {color} {item}, model {kind}-{i}, weighs {100 + i} g."
    answer = json.dumps({"product": item, "color": color, "weight_g": 100 + i})
    return Record.make(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        category=item,
        source="synthetic",
    )


def _write_curate(run: RunDir, gen: _Generator, n_train: int, n_heldout: int) -> tuple[list[str], list[Record]]:
    kept = [_record(i, "train") for i in range(n_train + n_heldout)]
    heldout = kept[n_train:]
    reasons = {"exact_duplicate": 9, "near_duplicate": 6, "empty_response": 3, "wrong_language": 2}
    removed_rows = []
    for reason, count in reasons.items():
        for j in range(count):
            original = kept[(j * 7) % n_train]
            row = _record(10_000 + len(removed_rows), reason).to_row()
            row.update(step="dedup" if "duplicate" in reason else "filter", reason=reason, detail="synthetic",
                       duplicate_of=original.id if "duplicate" in reason else None, cluster_id=None)
            removed_rows.append(row)
    atomic_write_parquet(run.kept, records_to_frame(kept))
    removed = pd.DataFrame(removed_rows, columns=list(records_to_frame([]).columns) + LEDGER_COLUMNS)
    atomic_write_parquet(run.removed, removed)
    n_removed = len(removed_rows)
    categories = pd.Series([r.category for r in kept]).value_counts().sort_index()
    atomic_write_json(
        run.curate_report,
        {
            "input_records": len(kept) + n_removed,
            "kept": len(kept),
            "removed_by_reason": reasons,
            "steps": [
                {"name": "filter", "input": len(kept) + n_removed, "kept": len(kept) + 15, "removed": 5, "seconds": 0.1},
                {"name": "dedup", "input": len(kept) + 15, "kept": len(kept), "removed": 15, "seconds": 0.4},
            ],
            "categories_before": {k: int(v) + 3 for k, v in categories.items()},
            "categories_after": {k: int(v) for k, v in categories.items()},
            "synthetic": True,
        },
    )
    return [r.id for r in kept[:n_train]], heldout


def _write_train(run, gen, methods, sizes, seeds, kept_ids, heldout, failed_cell) -> list[tuple[str, int, int, bool]]:
    cells = [(m, int(n), int(s)) for m in methods for n in sizes for s in seeds]
    atomic_write_json(
        run.plan,
        {
            "cells": [{"method": m, "size": n, "seed": s, "path": str(run.cell(m, n, s).relative_to(run.root))}
                      for m, n, s in cells],
            "sizes": [int(n) for n in sizes],
            "seeds": [int(s) for s in seeds],
            "methods": list(methods),
        },
    )
    atomic_write_parquet(run.heldout, records_to_frame(heldout))
    subset_rows = []
    for s in seeds:
        order = gen.rng("subset", s).permutation(len(kept_ids))
        for n in sizes:  # nested: each size is a prefix of the same shuffled order
            subset_rows += [{"seed": int(s), "size": int(n), "id": kept_ids[i]} for i in order[:n]]
    atomic_write_parquet(run.subsets, pd.DataFrame(subset_rows))
    out = []
    for m, n, s in cells:
        folder = run.cell(m, n, s)
        steps = max(4, n // 8)
        losses = 2.2 * np.exp(-np.arange(1, steps + 1) / steps) + 0.4
        atomic_write_text(
            folder / "train_log.jsonl",
            "".join(json.dumps({"step": i + 1, "loss": round(float(v), 4)}) + "\n" for i, v in enumerate(losses)),
        )
        if (m, n, s) == (tuple(failed_cell) if failed_cell else None):
            atomic_write_json(
                folder / "failed.json",
                {
                    "error": "CUDA out of memory (synthetic failure planted by the test fixture)",
                    "traceback": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: synthetic",
                    "when": "2025-01-01T00:00:00+00:00",
                },
            )
            out.append((m, n, s, False))
            continue
        atomic_write_json(
            folder / "done.json",
            {
                "method": m, "size": n, "seed": s, "train_examples": n, "steps": steps, "epochs": 1,
                "wall_seconds": round(0.05 * n, 2), "tokens_per_second": 1500.0, "final_loss": round(float(losses[-1]), 4),
                "early_step": max(1, steps // 5), "weights": None, "synthetic": True,
            },
        )
        out.append((m, n, s, True))
    return out


def _write_eval(run, gen: _Generator, cells, heldout: list[Record], *, early: bool, samples: bool) -> None:
    n = gen.n_items
    ids = {"task": [r.id for r in heldout]}
    for suite in (*GENERAL_SUITES, "retention"):
        ids[suite] = [f"{suite}-{i:04d}" for i in range(n)]
    rows = []

    def emit(cell, method, size, seed, stage, per_suite: dict[str, dict[str, np.ndarray]]):
        for suite, metrics in per_suite.items():
            for metric, values in metrics.items():
                rows.append({"cell": cell, "method": method, "size": size, "seed": seed, "stage": stage,
                             "suite": suite, "metric": metric, "value": float(np.mean(values)), "n_items": n})
            if samples:
                frame = pd.DataFrame({
                    "example_id": ids[suite],
                    "prompt": [r.prompt for r in heldout] if suite == "task" else [f"{suite} question {i}" for i in range(n)],
                    "reference": [r.response for r in heldout] if suite == "task" else ["A"] * n,
                    "output": [f"synthetic output of {cell} ({stage})"] * n,
                    **{metric: values.astype(float) for metric, values in metrics.items()},
                })
                atomic_write_parquet(run.samples / suite / f"{cell}__{stage}.parquet", frame)

    def scores_for(gain: float, forgetting: float, kl: float, key: tuple) -> dict[str, dict[str, np.ndarray]]:
        out = {"task": _task_metrics(gen.quality(gain, key))}
        for suite, (acc, acc_norm) in GENERAL_SUITES.items():
            out[suite] = {
                "acc": gen.multiple_choice(suite, acc - forgetting, key + ("acc",)),
                "acc_norm": gen.multiple_choice(suite, acc_norm - forgetting, key + ("acc_norm",)),
            }
        out["retention"] = {"kl_divergence": kl * gen.kl_weight}
        return out

    emit("base", "base", 0, 0, "base", scores_for(0.0, 0.0, 0.0, ("base",)))
    for method, size, seed in cells:
        curve = CURVES[method]
        doublings = np.log2(size / 25)
        cell = f"{method}-n{size}-s{seed}"
        final_gain = curve.gain(size)
        stages = [("final", final_gain, 1.0)]
        if early:  # an early checkpoint has learned (and forgotten) part of it
            stages.insert(0, ("early", 0.6 * final_gain - 0.02, 0.5))
        for stage, gain, part in stages:
            emit(cell, method, size, seed, stage,
                 scores_for(gain, part * curve.forgetting * doublings, part * curve.kl * doublings,
                            (method, size, seed, stage)))
    atomic_write_parquet(run.scores, pd.DataFrame(rows))
