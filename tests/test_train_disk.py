"""The disk estimate of a sweep's weights (curatune/train/disk.py) against what a real sweep writes,
and where users see it: `curatune plan` and a note at sweep start when the disk is too small."""
from __future__ import annotations

import json

import pytest
import yaml
from hostile import run_cli
from train_helpers import curated_run_dir, make_records, tiny_config

from curatune.rundir import list_cells
from curatune.train import disk
from curatune.train.sweep import run_sweep

METHODS = ["full", "lora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


def _folder_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_the_estimate_matches_what_each_method_writes(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(16))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4], methods=METHODS)
    estimate, why_not = disk.grid_disk_estimate(config)
    assert why_not is None and estimate.cells == {m: 1 for m in METHODS}

    run_sweep(config, run_dir, progress=False)
    for cell in list_cells(run_dir):
        written = sum(_folder_bytes(cell.path / stage) for stage in disk.STAGES_KEPT)
        weights = sum(p.stat().st_size for p in cell.path.rglob("*.safetensors"))
        expected = estimate.methods[cell.method]
        # the weights to within safetensors' header (names and shapes as JSON), for every method
        assert 2 * expected.weights <= weights <= 2 * expected.weights + 2 * 16_384, (cell.method, weights)
        # everything each cell keeps (tokenizer and configs beside the weights) to within 10%
        assert abs(written - estimate.kept[cell.method]) <= 0.10 * written, (cell.method, written)

    again, _ = disk.grid_disk_estimate(config)
    assert again.total == 0 and sum(again.cells.values()) == 0, "done cells already take their space"


def test_plan_prints_the_estimate_and_warns_when_the_disk_is_too_small(tmp_path, tiny_model_dir, capsys,
                                                                       monkeypatch):
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "run"), "model": {"base": str(tiny_model_dir)},
        "train": {"sizes": [4, 8], "seeds": [0, 1], "methods": ["full", "lora"]},
    }))
    result = run_cli(["plan", config_path, "--json"], capsys)
    assert result.code == 0, result.err
    shown = json.loads(result.out)["disk"]
    assert shown["methods"]["full"]["cells"] == 4 and shown["methods"]["lora"]["cells"] == 4
    full = shown["methods"]["full"]
    assert full["kept_bytes"] == 4 * 2 * full["stage_bytes"]  # 4 cells x (early + final)
    assert shown["total_bytes"] == full["kept_bytes"] + shown["methods"]["lora"]["kept_bytes"]

    result = run_cli(["plan", config_path], capsys)
    text = " ".join(result.out.split())
    assert f"full: 4 cells x {disk.human_bytes(2 * full['stage_bytes'])}" in text
    assert "not enough free space" not in text

    monkeypatch.setattr(disk, "free_bytes", lambda run_dir: 1000)
    text = " ".join(run_cli(["plan", config_path], capsys).out.split())
    assert "free there: 1.0 KB" in text and "not enough free space" in text


def test_plan_says_why_when_the_model_is_not_here(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CURATUNE_CACHE", str(tmp_path / "cache"))  # no converted default model
    config_path = tmp_path / "exp.yaml"
    config_path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run")}))
    result = run_cli(["plan", config_path, "--json"], capsys)
    assert result.code == 0, result.err
    assert "not on this machine yet" in json.loads(result.out)["disk"]["unknown"]


def test_sweep_warns_at_start_when_the_cells_will_not_fit(tmp_path, tiny_model_dir, monkeypatch):
    run_dir = curated_run_dir(tmp_path / "run", make_records(12))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4], methods=["lora"])
    monkeypatch.setattr(disk, "free_bytes", lambda run_dir: 1000)
    summary = run_sweep(config, run_dir, progress=False)
    notes = " ".join(summary["notes"])
    assert "not enough free space for every cell's weights" in notes and "lora: 1 cells" in notes


def test_deleted_full_weights_and_resumable_checkpoints_are_counted_as_the_sweep_handles_them(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(12))
    plain = disk.estimate_disk(tiny_config(run_dir, tiny_model_dir), tiny_model_dir, {"full": 3, "lora": 3}, run_dir.root)
    full, lora = plain.methods["full"], plain.methods["lora"]
    assert plain.kept == {"full": 3 * 2 * full.stage_bytes(), "lora": 3 * 2 * lora.stage_bytes()}
    assert plain.checkpoint_peak == 0

    # keep_weights = none: a full cell's early/ lives until the hook has scored it, then goes
    none = disk.estimate_disk(tiny_config(run_dir, tiny_model_dir, keep_weights="none"), tiny_model_dir,
                              {"full": 3, "lora": 3}, run_dir.root)
    assert none.kept["full"] == 0 and none.kept["lora"] == plain.kept["lora"]
    assert none.checkpoint_peak == full.weights and "deleted once scored" in disk.describe(none, run_dir.root)

    # a resumable trainer checkpoint: the weights and AdamW's two float32 moments per trainable parameter
    resumable = disk.estimate_disk(tiny_config(run_dir, tiny_model_dir, checkpoint_steps=10), tiny_model_dir,
                                   {"full": 3, "lora": 3}, run_dir.root)
    assert resumable.checkpoint_peak == full.stage_bytes() + 8 * full.trainable_params
    assert lora.trainable_params < full.trainable_params / 2


@pytest.mark.slow
def test_a_resumable_checkpoint_is_about_the_size_estimated(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(16))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[8], methods=["full"], checkpoint_steps=1)
    sizes = []

    def measure_checkpoints(cell, stage, model, tokenizer, config, run_dir):  # runs before they are removed
        sizes.extend(_folder_bytes(c) for c in (tmp_path / "run").rglob("checkpoint-*"))

    run_sweep(config, run_dir, progress=False, hook=measure_checkpoints)
    estimate = disk.estimate_disk(config, tiny_model_dir, {"full": 1}, run_dir.root)
    assert sizes and estimate.checkpoint_peak <= max(sizes) <= estimate.checkpoint_peak * 1.05 + 65_536
