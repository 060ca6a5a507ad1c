"""Damaged run files are detected and named with their repair; evaluate never exits 0 after
skipping a model it should have scored; a damaged done.json never counts as done."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hostile import assert_clean_error, run_cli
from train_helpers import curated_run_dir, make_records

from curatune.config import load_config
from curatune.rundir import list_cells, read_json

CELL = Path("train") / "lora" / "n4" / "s0"


def _write_config(path: Path, run: Path, model_dir: Path, sizes=(4,)) -> Path:
    path.write_text(yaml.safe_dump({
        "run_dir": str(run),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"sizes": list(sizes), "methods": ["lora"], "epochs": 1, "per_device_batch_size": 2,
                  "max_seq_length": 64, "cpu_threads": 1},
        "evaluate": {"stages": ["final"], "suites": [{"name": "task", "kind": "generation", "max_new_tokens": 4}],
                     "analysis": {"n_bootstrap": 0}},
    }))
    return path


@pytest.fixture(scope="module")
def swept_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A run with curated data and one finished LoRA cell (not evaluated)."""
    from curatune.train.sweep import run_sweep

    root = tmp_path_factory.mktemp("swept")
    curated_run_dir(root / "run", make_records(12))
    config = _write_config(root / "exp.yaml", root / "run", tiny_model_dir)
    run_sweep(load_config(config), progress=False)
    assert (root / "run" / CELL / "done.json").exists()
    return root / "run"


@pytest.fixture
def run_copy(swept_run, tmp_path, tiny_model_dir):
    """(run dir, config) of a private copy of the swept run, to damage."""
    run = tmp_path / "run"
    shutil.copytree(swept_run, run)
    return run, _write_config(tmp_path / "exp.yaml", run, tiny_model_dir)


def test_garbage_manifest_is_named_with_its_repair(run_copy, capsys):
    run, config = run_copy
    (run / "manifest.json").write_bytes(b"\x00garbage{")
    for command in ("sweep", "evaluate"):
        message = assert_clean_error(run_cli([command, config, "--no-progress"], capsys), str(run / "manifest.json"))
        assert "damaged" in message and "delete it" in message


def test_truncated_kept_parquet_stops_the_sweep(tmp_path, capsys, tiny_model_dir):
    run = curated_run_dir(tmp_path / "run", make_records(12)).root
    data = (run / "curate" / "kept.parquet").read_bytes()
    (run / "curate" / "kept.parquet").write_bytes(data[: len(data) // 2])
    config = _write_config(tmp_path / "exp.yaml", run, tiny_model_dir)
    message = assert_clean_error(run_cli(["sweep", config, "--no-progress"], capsys), "kept.parquet")
    assert "truncated" in message and "curatune curate" in message


def test_truncated_heldout_parquet_stops_evaluate(run_copy, capsys):
    run, config = run_copy
    data = (run / "train" / "heldout.parquet").read_bytes()
    (run / "train" / "heldout.parquet").write_bytes(data[:100])
    message = assert_clean_error(run_cli(["evaluate", config, "--no-progress"], capsys), "heldout.parquet")
    assert "truncated" in message


def test_garbage_done_json_is_not_done_and_the_sweep_retrains_it(run_copy, capsys):
    run, config = run_copy
    (run / CELL / "done.json").write_text('{"method": "lora", "si')
    cell = {c.key: c for c in list_cells(run)}["lora-n4-s0"]
    assert cell.status == "failed"
    assert "done.json is damaged" in cell.failed["error"] and "delete the cell folder" in cell.failed["error"]
    result = run_cli(["sweep", config, "--no-progress"], capsys)
    assert result.code == 0, result.err
    assert "training cell lora-n4-s0 again" in " ".join(result.err.split())
    assert read_json(run / CELL / "done.json")["method"] == "lora"


def test_deleted_final_weights_are_damage_not_keep_weights_none(run_copy, capsys):
    run, config = run_copy
    shutil.rmtree(run / CELL / "final")
    result = run_cli(["evaluate", config, "--no-progress"], capsys)
    assert result.code == 1, result.err
    err = " ".join(result.err.split())
    assert "final/" in err or "final weights" in err
    assert "folder is missing" in err and "keep_weights = none" not in err
    assert "delete the cell folder" in err


def test_bad_weights_make_evaluate_fail_not_exit_0(run_copy, capsys):
    run, config = run_copy
    for weights in (run / CELL / "final").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors at all")
    result = run_cli(["evaluate", config, "--no-progress"], capsys)
    assert result.code == 1, result.err
    err = " ".join(result.err.split())
    assert "lora-n4-s0" in err and "cannot load the model" in err and "Traceback" not in err
    assert "delete the cell folder" in err


def test_sizes_larger_than_the_pool_are_an_error(tmp_path, capsys, tiny_model_dir):
    run = curated_run_dir(tmp_path / "run", make_records(12)).root
    config = _write_config(tmp_path / "exp.yaml", run, tiny_model_dir, sizes=(50, 100))
    message = assert_clean_error(run_cli(["sweep", config, "--no-progress"], capsys), "train.sizes [50, 100]")
    assert "at most 8" in message
