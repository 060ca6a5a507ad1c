"""train.report_to: the Trainer logs a cell to tensorboard in RUN_DIR/tensorboard/<cell>/, and
`curatune evaluate` adds the scores to the same folder. Skips when no tensorboard writer is installed."""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pandas as pd
import pytest

from curatune.config import validate_config
from curatune.errors import ConfigError
from curatune.preflight import config_problems
from curatune.rundir import list_cells
from curatune.tracking import tracker_problems, trainer_report_to
from curatune.train.sweep import run_sweep
from train_helpers import curated_run_dir, make_records


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``folder``: tag -> [(step, value)] (TFRecord framing:
    length, crc, Event protobuf, crc)."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_report_to_names_missing_trackers_before_any_compute(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb",) else real_find_spec(name, *a))
    assert tracker_problems(["wandb"]) == ["train.report_to: wandb is not installed (pip install wandb)"]
    config = validate_config({"train": {"report_to": ["wandb"]}})
    assert "train.report_to: wandb is not installed" in "\n".join(config_problems(config))
    with pytest.raises(ConfigError, match="wandb is not installed"):
        run_sweep(config, config.run_dir, progress=False)
    assert trainer_report_to(["tensorboard", "wandb"]) == ["wandb"]  # tensorboard gets curatune's own writer
    assert trainer_report_to([]) == "none"
    with pytest.raises(ConfigError, match="train.report_to.0"):
        validate_config({"train": {"report_to": ["neptune"]}})


@pytest.mark.slow
def test_tensorboard_gets_training_logs_and_evaluation_scores(tmp_path, tiny_model_dir):
    if tracker_problems(["tensorboard"]):
        pytest.skip("neither tensorboard nor tensorboardX is installed")
    pytest.importorskip("tensorboardX")  # the event reader above uses its protobuf definitions
    from curatune.evaluate.runner import run_evaluate

    run_dir = curated_run_dir(tmp_path / "run", make_records(16))
    config = validate_config({
        "name": "tb",
        "run_dir": str(run_dir.root),
        "model": {"base": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"sizes": [8], "methods": ["lora"], "epochs": 1, "per_device_batch_size": 2, "max_seq_length": 64,
                  "cpu_threads": 1, "report_to": ["tensorboard"]},
        "evaluate": {"suites": [{"name": "task", "kind": "generation", "metrics": ["chrf"], "max_new_tokens": 4}],
                     "analysis": {"n_bootstrap": 0}, "cpu_threads": 1},
    })
    run_sweep(config, run_dir, progress=False)
    (cell,) = list_cells(run_dir)
    folder = run_dir.tensorboard_dir("lora-n8-s0")
    log = cell.log()
    train = read_scalars(folder)
    assert [step for step, _ in train["train/loss"]] == [line["step"] for line in log]
    assert [round(v, 4) for _, v in train["train/loss"]] == [round(line["loss"], 4) for line in log]
    assert not (cell.path / "checkpoints").exists()  # the events are not inside the deleted checkpoints

    run_evaluate(config, run_dir, progress=False)
    scores = pd.read_parquet(run_dir.scores).set_index(["cell", "stage", "metric"])["value"]
    evaluated = read_scalars(folder)["eval/task/chrf"]
    assert sorted(evaluated) == sorted([
        (cell.done["early_step"], pytest.approx(scores[("lora-n8-s0", "early", "chrf")], abs=1e-4)),
        (cell.done["steps"], pytest.approx(scores[("lora-n8-s0", "final", "chrf")], abs=1e-4)),
    ])
    base = read_scalars(run_dir.tensorboard_dir("base"))["eval/task/chrf"]
    assert base == [(0, pytest.approx(scores[("base", "base", "chrf")], abs=1e-4))]
    # a second evaluate scores nothing new and writes nothing new
    run_evaluate(config, run_dir, progress=False)
    assert len(read_scalars(folder)["eval/task/chrf"]) == 2
