"""Smaller hostile cases: pickled weights, a missing base model, bad app ports and hosts,
NaN in passthrough fields."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hostile import assert_clean_error, run_cli
from train_helpers import curated_run_dir, make_records, tiny_config

from curatune.data.loaders import load_path
from curatune.records import Record, records_to_frame


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def pickled_model_dir(tmp_path, tiny_model_dir) -> Path:
    """The tiny model with its weights as a pickle (pytorch_model.bin) and no safetensors."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, out)
    for weights in out.glob("*.safetensors"):
        torch.save(load_file(weights), out / "pytorch_model.bin")
        weights.unlink()
    return out


def test_pickled_weights_are_never_loaded(pickled_model_dir, tmp_path):
    from curatune.models import load_weights_dir
    from curatune.train.cell import load_base_for_training

    with pytest.raises(OSError, match="safetensors"):
        load_weights_dir(pickled_model_dir, None, dtype="float32", device="cpu")
    adapter = tmp_path / "adapter"  # a LoRA cell's folder: tokenizer and adapter; the base is pickled
    shutil.copytree(pickled_model_dir, adapter, ignore=shutil.ignore_patterns("*.bin", "config.json"))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(OSError, match="safetensors"):
        load_weights_dir(adapter, str(pickled_model_dir), dtype="float32", device="cpu")
    config = tiny_config(curated_run_dir(tmp_path / "run", make_records(4)), pickled_model_dir)
    with pytest.raises(OSError, match="safetensors"):
        load_base_for_training(config, "full", pickled_model_dir)


def test_missing_base_model_is_one_error_not_a_failed_grid(tmp_path, capsys):
    run = curated_run_dir(tmp_path / "run", make_records(12)).root
    config = tmp_path / "exp.yaml"
    missing = tmp_path / "no-such-model"
    config.write_text(yaml.safe_dump({
        "run_dir": str(run), "model": {"base": str(missing)}, "data": {"heldout_size": 4},
        "train": {"sizes": [4, 8], "methods": ["lora", "full"], "epochs": 1},
    }))
    message = assert_clean_error(run_cli(["sweep", config, "--no-progress"], capsys), str(missing))
    assert "not found" in message
    assert not list((run / "train").rglob("failed.json"))


@pytest.mark.parametrize("args,expected", [
    (["--port", "99999"], "--port 99999: a port is a number from 1 to 65535"),
    (["--port", "0"], "a port is a number from 1 to 65535"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not a known host"),
    (["--host", "203.0.113.7"], "--host 203.0.113.7: cannot listen there"),
])
def test_app_port_and_host_errors(tmp_path, capsys, args, expected):
    assert expected in assert_clean_error(run_cli(["app", tmp_path, *args], capsys))


def test_nan_in_passthrough_fields_is_written_as_null(tmp_path):
    record = Record.make([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                         meta={"score": float("nan"), "nested": [float("inf"), 1.5], "ok": "x"})
    assert _strict_json(record.to_row()["meta"]) == {"score": None, "nested": [None, 1.5], "ok": "x"}
    # through the loader: a Parquet source with missing values in an extra column
    source = tmp_path / "data.parquet"
    pd.DataFrame({"prompt": ["p1", "p2"], "completion": ["c1", "c2"], "rating": [4.0, math.nan]}).to_parquet(source)
    frame = records_to_frame(load_path(source).records)
    assert [_strict_json(m) for m in frame["meta"]] == [{"rating": 4.0}, {"rating": None}]
    # JSON Lines with a NaN literal, rejected rows included
    lines = tmp_path / "nan.jsonl"
    lines.write_text('{"prompt": "p", "completion": "c", "x": NaN}\n{"prompt": "", "completion": "", "x": NaN}\n')
    result = load_path(lines)
    for meta in list(records_to_frame(result.records)["meta"]) + list(result.rejected["meta"]):
        _strict_json(meta)
