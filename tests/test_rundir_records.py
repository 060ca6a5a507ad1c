from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from curatune.records import Record, content_id, frame_to_records, records_to_frame
from curatune.rundir import RunDir, atomic_write_json, atomic_write_parquet, atomic_write_text, read_json


def test_content_id_is_stable_and_content_based():
    a = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert content_id(a) == content_id([dict(m) for m in a])
    assert content_id(a) != content_id([a[0], {"role": "assistant", "content": "hello!"}])
    assert content_id(a) == "c92885e070dbf3a4"  # pinned: ids must not change between versions


def test_record_views_and_parquet_round_trip(tmp_path):
    rec = Record.make(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        category="math",
        source="f.jsonl:3",
        meta={"difficulty": 1},
    )
    assert rec.response == "4"
    assert rec.prompt == "be brief\n2+2?"
    frame = records_to_frame([rec, Record.make([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])])
    path = tmp_path / "r.parquet"
    atomic_write_parquet(path, frame)
    back = frame_to_records(pd.read_parquet(path))
    assert back[0] == rec
    assert back[1].category is None and back[1].meta == {}


def test_record_without_assistant_turn_raises():
    rec = Record.make([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="no assistant turn"):
        rec.response


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_json(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": Boom()})
    assert read_json(target) == {"a": 1}  # the old content survives a failed write
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temp files left


def test_manifest_records_config_versions_and_stages(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_manifest({"name": "x"}, "curate")
    run.stamp_stage_finished("curate", kept=3)
    manifest = json.loads(run.manifest.read_text())
    assert manifest["config"] == {"name": "x"}
    assert "torch" in manifest["packages"] and "pandas" in manifest["packages"]
    assert manifest["stages"]["curate"]["kept"] == 3 and "finished" in manifest["stages"]["curate"]
    assert run.is_run_dir()
    assert run.cell("lora", 100, 0) == run.root / "train" / "lora" / "n100" / "s0"
    atomic_write_text(run.config, "name: x\n")
    assert os.path.exists(run.config)
