"""Write failures end in one message naming the path and the cause (exit 2), in every command,
and finished results stay intact.

Simulated where the tests cannot cause them for real: a read-only file system (``mkstemp``
raising EROFS; the tests run as root, where ``chmod`` does not stop writes) and a full disk
(``os.fsync`` raising ENOSPC, which is where a full disk shows for an atomic write). A run
directory that is a file is real.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hostile import (
    FAST_CURATE,
    assert_accounting,
    assert_clean_error,
    file_size_limit,
    good_rows,
    run_cli,
    write_jsonl,
)
from train_helpers import curated_run_dir, make_records


def _fail(exc_errno: int, message: str):
    def fail(*args, **kwargs):
        raise OSError(exc_errno, message)
    return fail


@pytest.fixture
def data_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", good_rows(6, "w"))


def _config(tmp_path: Path, run_dir: Path, model_dir: Path | str = "default") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(run_dir),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"sizes": [4], "methods": ["lora"], "epochs": 1, "per_device_batch_size": 2,
                  "max_seq_length": 64, "cpu_threads": 1},
        "evaluate": {"suites": [{"name": "task", "kind": "generation", "max_new_tokens": 4}],
                     "analysis": {"n_bootstrap": 0}},
    }))
    return path


# ----------------------------------------------------------------------------- a run_dir that is a file


def test_run_dir_that_is_a_file(tmp_path, data_file, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    config = _config(tmp_path, blocker)
    commands = {
        "curate": ["curate", "--input", data_file, "--out", blocker, *FAST_CURATE],
        "sweep": ["sweep", config, "--no-progress"],
        "evaluate": ["evaluate", config, "--no-progress"],
        "config -o": ["config", "--defaults", "-o", blocker / "exp.yaml"],
        "demo-data": ["demo-data", blocker / "demo", "--n-train", "20", "--n-heldout", "2"],
    }
    for name, args in commands.items():
        message = assert_clean_error(run_cli(args, capsys), str(blocker))
        assert "in the way" in message, (name, message)
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------- read-only and full disks


@pytest.mark.parametrize("fault,expected", [
    ("read_only", "read-only"),
    ("full_disk", "disk is full"),
])
def test_curate_and_small_writers_on_a_failing_disk(tmp_path, data_file, capsys, monkeypatch, fault, expected):
    run = tmp_path / "run"
    assert run_cli(["curate", "--input", data_file, "--out", run, *FAST_CURATE], capsys).code == 0
    finished = {p.name: p.read_bytes() for p in (run / "curate").iterdir()}
    if fault == "read_only":
        monkeypatch.setattr(tempfile, "mkstemp", _fail(errno.EROFS, "Read-only file system"))
    else:
        monkeypatch.setattr(os, "fsync", _fail(errno.ENOSPC, "No space left on device"))
    commands = [
        ["curate", "--input", data_file, "--out", run, "--force", *FAST_CURATE],
        ["config", "--defaults", "-o", tmp_path / "defaults.yaml"],
        ["demo-data", tmp_path / "demo", "--n-train", "20", "--n-heldout", "2"],
    ]
    for args in commands:
        message = assert_clean_error(run_cli(args, capsys), "cannot write")
        assert expected in message, message
    # finished results are untouched, and no temp files are left behind
    assert {p.name: p.read_bytes() for p in (run / "curate").iterdir()} == finished
    assert not list(run.rglob("*.tmp"))
    assert_accounting(run)


@pytest.fixture
def sweep_config(tmp_path, tiny_model_dir) -> Path:
    run_dir = curated_run_dir(tmp_path / "run", make_records(12))
    return _config(tmp_path, run_dir.root, tiny_model_dir)


def test_sweep_on_a_full_disk_stops_with_the_cause(sweep_config, tmp_path, capsys, monkeypatch):
    import curatune.train.cell as cell

    def disk_full(target, save):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(cell, "save_weights_dir", disk_full)
    message = assert_clean_error(run_cli(["sweep", sweep_config, "--no-progress"], capsys), "No space left on device")
    assert "disk is full" in message and "lora/n4/s0" in message
    assert not (tmp_path / "run" / "train" / "lora" / "n4" / "s0" / "failed.json").exists()


def test_sweep_stops_when_safetensors_cannot_write_the_weights(sweep_config, tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own error type ("... (os error 28)"), not an OSError.
    Caused for real here with a file-size limit while the cell's weights are written (EFBIG, the
    same family): the sweep stops with one message instead of failing every cell in turn."""
    import curatune.train.cell as cell

    real_save_weights_dir = cell.save_weights_dir
    raised = []

    def save_under_a_size_limit(target, save):
        def limited(folder):
            try:
                with file_size_limit(8_000):  # the JSON files fit, the weights do not
                    save(folder)
            except Exception as exc:
                raised.append(type(exc).__name__)
                raise
        real_save_weights_dir(target, limited)

    monkeypatch.setattr(cell, "save_weights_dir", save_under_a_size_limit)
    message = assert_clean_error(run_cli(["sweep", sweep_config, "--no-progress"], capsys), "File too large")
    assert raised == ["SafetensorError"], "the failure came from inside safetensors"
    assert "lora/n4/s0" in message and "write to another disk" in message
    cell_dir = tmp_path / "run" / "train" / "lora" / "n4" / "s0"
    assert not (cell_dir / "failed.json").exists()
    assert not list(cell_dir.glob(".*.tmp")), "the half-written weights folder is removed"


def test_failed_cell_that_cannot_be_recorded_keeps_its_cause(sweep_config, tmp_path, capsys, monkeypatch):
    import curatune.train.cell as cell

    def broken(target, save):
        monkeypatch.setattr(os, "fsync", _fail(errno.ENOSPC, "No space left on device"))  # now the disk fills
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(cell, "save_weights_dir", broken)
    message = assert_clean_error(run_cli(["sweep", sweep_config, "--no-progress"], capsys),
                                 "CUDA out of memory (simulated)", "failed.json")
    assert "recording that failed too" in message and "disk is full" in message


def test_a_file_written_through_atomic_path_is_named_when_safetensors_cannot_write_it(tmp_path):
    """Retention references and classifier heads are safetensors files written through atomic_path:
    a full disk there is one message naming the file, and no temporary file is left."""
    import torch
    from safetensors.torch import save_file

    from curatune.errors import WriteError
    from curatune.rundir import atomic_path

    target = tmp_path / "eval" / "retention" / "base.safetensors"
    with pytest.raises(WriteError) as err, file_size_limit(8_000):
        with atomic_path(target) as tmp:
            save_file({"topk_logprobs": torch.zeros(10_000)}, str(tmp))
    assert str(target) in str(err.value) and "File too large" in str(err.value)
    assert list(target.parent.iterdir()) == []


def test_a_write_error_inside_a_weights_folder_is_reported_once(tmp_path):
    """The model card beside the weights is written through atomic_path, which already names its
    file: the weights folder's own handler passes that message on instead of wrapping it again."""
    from curatune.errors import WriteError, environment_error
    from curatune.train.cell import save_weights_dir

    def card_on_a_full_disk(folder):
        folder.mkdir()
        cause = OSError(errno.ENOSPC, "No space left on device")
        raise environment_error(cause, folder / "README.md") from cause

    with pytest.raises(WriteError) as err:
        save_weights_dir(tmp_path / "final", card_on_a_full_disk)
    assert str(err.value).count("cannot write") == 1 and "README.md" in str(err.value)
    assert list(tmp_path.iterdir()) == [], "the half-written folder is removed"
