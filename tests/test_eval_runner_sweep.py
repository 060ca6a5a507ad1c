"""Evaluate a real (tiny) sweep: LoRA and full cells, the sweep's evaluate hook, then resume."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from curatune.config import validate_config
from curatune.evaluate.runner import run_evaluate
from curatune.rundir import read_json

pytest.importorskip("curatune.train.sweep")
from train_helpers import curated_run_dir, make_records  # noqa: E402


@pytest.mark.slow
def test_sweep_with_hook_then_evaluate(tmp_path, tiny_model_dir):
    from curatune.train.sweep import run_sweep

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = curated_run_dir(tmp_path / "run", make_records(16))
        config = validate_config({
            "run_dir": str(run_dir.root),
            "model": {"base": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
            "data": {"heldout_size": 4},
            "train": {"sizes": [4], "methods": ["lora", "full"], "epochs": 1, "per_device_batch_size": 2,
                      "max_seq_length": 64, "cpu_threads": 1, "keep_weights": "none",
                      "evaluate_hook": "curatune.evaluate.runner:evaluate_hook"},
            "evaluate": {
                "suites": [{"name": "task", "kind": "generation", "max_new_tokens": 8}],
                "analysis": {"n_bootstrap": 0},
            },
        })
        run_sweep(config, run_dir, progress=False)
        full_done = read_json(run_dir.cell("full", 4, 0) / "done.json")
        assert full_done["weights"]["final"] is None  # deleted after the hook scored them

        summary = run_evaluate(config, run_dir, progress=False)
        # base now; lora early/final and full early/final came from the sweep's hook
        assert summary["scored"] == 1 and summary["reused"] == 4 and summary["unavailable"] == {}
        scores = pd.read_parquet(run_dir.scores)
        assert set(zip(scores.cell, scores.stage)) == {
            ("base", "base"), ("lora-n4-s0", "early"), ("lora-n4-s0", "final"),
            ("full-n4-s0", "early"), ("full-n4-s0", "final"),
        }
        # automatic metrics for JSON references
        assert set(scores.metric) == {"exact_match", "field_f1", "json_valid", "chrf", "comet_like"}
        assert set(scores.n_items) == {4}

        # the LoRA adapter is still on disk: dropping its parts rescoring it through load_cell_model
        for part in (run_dir.eval / "parts" / "task").glob("lora-*"):
            part.unlink()
        again = run_evaluate(config, run_dir, progress=False)
        assert again["scored"] == 2 and again["reused"] == 3
        rescored = pd.read_parquet(run_dir.scores)
        pd.testing.assert_frame_equal(rescored, scores)  # same model, same greedy answers, same numbers
    finally:
        torch.set_num_threads(before)
