"""A planned and evaluated learning-rate grid run with synthetic scores (tests of the selection,
the analysis, the report and the app)."""
from __future__ import annotations

import pandas as pd

from curatune.config import validate_config
from curatune.rundir import CellSpec, RunDir, atomic_write_json, atomic_write_parquet


def tiny_grid_config(run_dir: RunDir, model_dir, *, train: dict, evaluate: dict):
    """A tiny-model grid experiment on CPU in float32: 4 held-out and 6 validation records, one thread,
    LoRA and full, stages base and final, full evaluation for the selected rates only. ``train`` and
    ``evaluate`` add to (or override) these settings."""
    return validate_config({
        "run_dir": str(run_dir.root),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"methods": ["lora", "full"], "per_device_batch_size": 2, "max_seq_length": 64, "cpu_threads": 1,
                  "validation_size": 6, **train},
        "evaluate": {"stages": ["base", "final"], "lr_grid_cells": "selected", **evaluate},
    })


def grid_run(root) -> RunDir:
    """A planned and evaluated grid run (synthetic scores): lora at two rates, seeds 0-1, sizes 4 and 8.

    Validation losses select 1e-4 at n=4 and 1e-3 at n=8. The rate not selected at n=4 has by far the
    largest task gain, so any comparison that used it would show it."""
    run = RunDir(root)
    losses = {(4, 1e-4): 1.0, (4, 1e-3): 1.2, (8, 1e-4): 0.9, (8, 1e-3): 0.7}
    task = {(4, 1e-4): 0.40, (4, 1e-3): 0.90, (8, 1e-4): 0.45, (8, 1e-3): 0.55}
    cells, rows = [], [dict(cell="base", method="base", size=0, seed=0, stage="base", suite=s, metric="acc",
                            value=v, n_items=100) for s, v in (("task", 0.3), ("arc", 0.6))]
    for (size, lr), loss in losses.items():
        for seed in (0, 1):
            spec = CellSpec("lora", size, seed, lr)
            cells.append({"method": "lora", "size": size, "seed": seed, "lr": lr, "key": spec.key})
            atomic_write_json(spec.path(run) / "done.json", {"key": spec.key, "validation_loss": loss + 0.01 * seed})
            for suite, value in (("task", task[(size, lr)] + 0.01 * seed), ("arc", 0.58)):
                rows.append(dict(cell=spec.key, method="lora", size=size, seed=seed, stage="final", suite=suite,
                                 metric="acc", value=value, n_items=100))
    atomic_write_json(run.plan, {"cells": cells})
    atomic_write_json(run.manifest, {"config": {}})
    atomic_write_parquet(run.scores, pd.DataFrame(rows))
    return run
