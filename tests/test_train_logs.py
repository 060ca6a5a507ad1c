"""What a sweep and an evaluation leave in a log file (stderr not a terminal), and what a saved
adapter says about its base model."""
from __future__ import annotations

import json
import os

import pytest

from curatune.config import validate_config
from curatune.rundir import list_cells
from curatune.train.sweep import run_sweep
from train_helpers import curated_run_dir, make_records


def test_no_progress_still_logs_one_line_per_cell(capfd):
    """--no-progress (progress=False) turns the bars off, not the log: a sweep of hours in a log
    file must still say which cells finished."""
    from curatune.train.cell import CellOutcome
    from curatune.train.sweep import SweepProgress

    for asked in (True, False):  # stderr is a pipe here: plain lines either way
        bars = SweepProgress(asked, total_cells=2, estimated_steps={"lora-n4-s0": 3})
        bars.cell_finished("lora-n4-s0", CellOutcome("lora-n4-s0", "done", wall_seconds=1.25))
        bars.close()
        assert capfd.readouterr().err == "sweep: 1/2 cells: lora-n4-s0 done (1.2 s)\n"


@pytest.mark.slow
def test_sweep_and_evaluate_logs_are_plain_lines_and_adapters_name_the_given_base(tmp_path, tiny_model_dir, capfd):
    from curatune.evaluate.runner import run_evaluate

    link = tmp_path / "my-base"  # the name the user gave; the weights live elsewhere
    os.symlink(tiny_model_dir, link)
    run_dir = curated_run_dir(tmp_path / "run", make_records(16))
    config = validate_config({
        "run_dir": str(run_dir.root),
        "model": {"base": str(link), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"sizes": [4], "methods": ["lora"], "epochs": 1, "per_device_batch_size": 2, "max_seq_length": 64,
                  "cpu_threads": 1},
        "evaluate": {"suites": [{"name": "task", "kind": "generation", "metrics": ["chrf"], "max_new_tokens": 4}],
                     "stages": ["base", "final"], "analysis": {"n_bootstrap": 0}, "cpu_threads": 1},
    })
    capfd.readouterr()
    run_sweep(config, run_dir, progress=True)  # progress asked for, but stderr is a pipe here
    run_evaluate(config, run_dir, progress=True)
    out, err = capfd.readouterr()
    log = out + err
    assert "\x1b[A" not in log and "\r" not in log, "progress-bar redraws in a log"
    assert "FutureWarning" not in log and "is deprecated" not in log
    assert "sweep: 1/1 cells: lora-n4-s0 done" in err
    assert "evaluate: 1/2 units: base task (" in err and "evaluate: 2/2 units: lora-n4-s0/final task (" in err

    (cell,) = list_cells(run_dir)
    for stage in ("early", "final"):
        folder = cell.path / stage
        adapter = json.loads((folder / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(link)  # not the resolved local path
        card = (folder / "README.md").read_text()
        assert "Model Card for Model ID" not in card  # peft's blank template
        assert f"base_model: {link}" in card and "library_name: peft" in card
        assert "| LoRA r / alpha / dropout | 16 / 32 / 0.05 |" in card
