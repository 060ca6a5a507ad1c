"""Run directories under concurrent and killed processes: stage locks, leftover temp files, modes."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hostile import FAST_CURATE, assert_clean_error, good_rows, run_cli, write_jsonl

from curatune.rundir import RunDir, atomic_path, atomic_write_json, atomic_write_parquet
from curatune.runlock import (
    RunLockedError,
    host_name,
    lock_path,
    remove_stale_temp_files,
    stage_lock,
)

REPO = Path(__file__).resolve().parents[1]


class LockHolder:
    """A second process that takes a stage lock and sleeps until killed."""

    def __init__(self, root: Path, stage: str):
        code = textwrap.dedent(f"""
            import sys, time
            from curatune.runlock import stage_lock
            with stage_lock({str(root)!r}, {stage!r}):
                print("locked", flush=True)
                time.sleep(600)
        """)
        env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "locked"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder_factory():
    holders = []

    def make(root: Path, stage: str) -> LockHolder:
        holders.append(LockHolder(root, stage))
        return holders[-1]

    yield make
    for holder in holders:
        holder.kill()


def test_second_curate_on_a_locked_run_says_who_holds_it(tmp_path, capsys, holder_factory):
    data = write_jsonl(tmp_path / "data.jsonl", good_rows(5, "lock"))
    run = tmp_path / "run"
    holder = holder_factory(run, "curate")
    result = run_cli(["curate", "--input", data, "--out", run, *FAST_CURATE], capsys)
    message = assert_clean_error(result, str(run), f"process {holder.proc.pid}", "another curatune curate")
    assert "since" in message and "host" in message
    assert not (run / "curate").exists()  # nothing was written by the refused process
    holder.kill()  # the lock dies with its process: no stale lock to clear
    assert run_cli(["curate", "--input", data, "--out", run, *FAST_CURATE], capsys).code == 0


def test_sweep_and_evaluate_refuse_a_locked_run(tmp_path, capsys, holder_factory):
    run = tmp_path / "run"
    config = tmp_path / "exp.yaml"
    config.write_text(f"run_dir: {run}\n")
    holder_factory(run, "train")
    holder_factory(run, "eval")
    for command, stage in (("sweep", "train"), ("evaluate", "eval")):
        result = run_cli([command, config, "--no-progress"], capsys)
        assert_clean_error(result, f"another curatune {stage}")


def test_stage_lock_nests_in_one_process_and_other_stages_are_free(tmp_path):
    with stage_lock(tmp_path, "train"):
        with stage_lock(tmp_path, "train"):  # curatune run -> run_sweep inside a locked block
            pass
        with stage_lock(tmp_path, "eval"):
            pass
        assert lock_path(tmp_path, "train").exists()
    with stage_lock(tmp_path, "train"):  # released
        pass


def test_lock_is_refused_across_processes_directly(tmp_path, holder_factory):
    holder = holder_factory(tmp_path, "eval")
    with pytest.raises(RunLockedError, match=f"process {holder.proc.pid}"):
        with stage_lock(tmp_path, "eval"):
            pass


# ----------------------------------------------------------------------------- temp files of killed writers


def _leftover(folder: Path, name: str, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{pid}@{host or host_name()}.abc123_x.tmp"
    path.write_bytes(b"half written")
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temp_file_is_removed_by_the_next_run_of_the_stage(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", good_rows(5, "tmp"))
    run = tmp_path / "run"
    dead = _dead_pid()
    stale = _leftover(run / "curate", "kept.parquet", dead)
    live = _leftover(run / "curate", "removed.parquet", os.getppid())  # a live process: kept
    other_host = _leftover(run / "train", "plan.json", dead, host="elsewhere")  # cannot tell: kept
    not_ours = run / "curate" / ".notes.tmp"
    not_ours.write_text("the user's")
    assert run_cli(["curate", "--input", data, "--out", run, *FAST_CURATE], capsys).code == 0
    assert not stale.exists()
    assert live.exists() and other_host.exists() and not_ours.exists()


def test_temp_files_follow_the_pattern_the_cleanup_knows(tmp_path):
    target = tmp_path / "x.json"
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f".x.json.{os.getpid()}@{host_name()}.")
        assert remove_stale_temp_files(tmp_path) == []  # our own, alive
        tmp.write_text("{}")
    assert target.read_text() == "{}"


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_mode_a_plain_open_would(tmp_path, umask):
    import pandas as pd

    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_json(tmp_path / "a.json", {"a": 1})
        atomic_write_parquet(tmp_path / "b.parquet", pd.DataFrame({"a": [1]}))
        with stage_lock(tmp_path, "curate"):
            pass
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.json", "b.parquet", ".lock-curate"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_safetensors_files_get_the_mode_a_plain_open_would(tmp_path, umask):
    """safetensors 0.8 renames its own 0600 temp file over the target (safetensors#782): weights
    saved through atomic_path, or into a folder given restore_default_modes, must not stay 0600."""
    import numpy as np
    from safetensors.numpy import save_file

    from curatune.runlock import restore_default_modes

    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        with atomic_path(tmp_path / "ref.safetensors") as tmp:
            save_file({"a": np.zeros(2, dtype=np.float32)}, str(tmp))
        folder = tmp_path / "weights" / "sub"
        folder.mkdir(parents=True)
        save_file({"a": np.zeros(2, dtype=np.float32)}, str(folder / "model.safetensors"))
        restore_default_modes(tmp_path / "weights")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "ref.safetensors").stat().st_mode) == expected
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == expected
    assert stat.S_IMODE(folder.stat().st_mode) & 0o700 == 0o700  # folders keep their own mode


def test_curated_run_files_are_readable_by_the_group(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", good_rows(5, "mode"))
    old = os.umask(0o022)
    try:
        assert run_cli(["curate", "--input", data, "--out", tmp_path / "run", *FAST_CURATE], capsys).code == 0
    finally:
        os.umask(old)
    run = RunDir(tmp_path / "run")
    for path in (run.kept, run.removed, run.curate_report, run.manifest, run.config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
