"""The app's data layer (curatune.app.data) and word diff, without Streamlit pages."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from app_fixture import build_run, make_running
from curatune.app import data
from curatune.app.data import RunData, discover_runs, expand_run_paths, paths_from_env
from curatune.app.diffview import conversation_text, tokens, word_diff_html
from curatune.rundir import atomic_write_json


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("data") / "run", name="exp")


def test_paths_from_env_json_and_pathsep():
    assert paths_from_env({data.RUNS_ENV: json.dumps(["/a", "/b c"])}) == [Path("/a"), Path("/b c")]
    assert paths_from_env({data.RUNS_ENV: f"/a{os.pathsep}/b"}) == [Path("/a"), Path("/b")]
    assert paths_from_env({}) == []


def test_discover_runs_expands_a_folder_of_runs_and_keeps_labels_unique(tmp_path):
    for name in ("b", "a"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        atomic_write_json(tmp_path / "runs" / name / "manifest.json", {"config": {"name": "same"}})
    (tmp_path / "runs" / "notes").mkdir()  # not a run: skipped inside a folder of runs
    foreign = tmp_path / "photos"
    foreign.mkdir()
    refs = discover_runs([tmp_path / "runs", foreign])
    assert [r.path.name for r in refs] == ["a", "b", "photos"]
    assert [r.label for r in refs] == ["same (a)", "same (b)", "photos"]
    assert expand_run_paths([tmp_path / "runs" / "a", tmp_path / "runs" / "a"]) == [(tmp_path / "runs" / "a").resolve()]


def test_cells_status_from_markers(run_root, tmp_path):
    import shutil

    root = tmp_path / "run"
    shutil.copytree(run_root, root)
    make_running(root, running=["lora-n50-s0"], pending=["lora-n100-s1"])
    (root / "train" / "full" / "n50" / "s0" / "done.json").write_text("{ broken")
    extra = root / "train" / "dora" / "n10" / "s0"  # on disk, not in the plan
    extra.mkdir(parents=True)
    cells = RunData(root).cells().set_index("cell")
    assert cells.loc["lora-n50-s0", "status"] == "running"
    assert cells.loc["lora-n50-s0", "steps"] == 6  # from the last line of the training log
    assert cells.loc["lora-n100-s1", "status"] == "pending"
    assert cells.loc["full-n400-s1", "status"] == "failed" and "out of memory" in cells.loc["full-n400-s1", "error"]
    assert cells.loc["lora-n200-s0", "status"] == "done" and cells.loc["lora-n200-s0", "wall_seconds"] == 10.0
    assert cells.loc["full-n50-s0", "status"] == "done" and "could not read" in cells.loc["full-n50-s0", "error"]
    # on disk but not in the plan (an earlier grid or sizes): not a cell of this run, named apart
    assert "dora-n10-s0" not in cells.index and RunData(root).not_planned() == ["dora-n10-s0"]
    assert len(cells) == 16


def test_cached_reads_follow_file_changes(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"v": 1})
    assert data.read_json(path) == {"v": 1}
    atomic_write_json(path, {"v": 22})
    assert data.read_json(path) == {"v": 22}
    path.unlink()
    assert data.read_json(path) is None
    path.write_text("[1, 2")
    with pytest.raises(data.RunFileError, match="x.json"):
        data.read_json(path)


def test_missing_parts_of_a_partial_run(tmp_path):
    atomic_write_json(tmp_path / "manifest.json", {"config": {"name": "n"}})
    run = RunData(tmp_path)
    missing = [m.what for m in run.missing()]
    assert missing == ["curation report", "sweep plan", "evaluation scores", "analysis"]
    assert not run.is_foreign() and run.cells().empty and run.sample_files().empty


def test_scores_without_required_columns_name_the_file(tmp_path):
    (tmp_path / "eval").mkdir()
    pd.DataFrame({"cell": ["base"], "value": [1.0]}).to_parquet(tmp_path / "eval" / "scores.parquet")
    with pytest.raises(data.RunFileError, match=r"scores.parquet: missing column\(s\) method"):
        RunData(tmp_path).scores()


def test_analysis_views(run_root):
    run = RunData(run_root)
    lf = data.learning_forgetting_frame(run.analysis())
    assert {"task_gain", "general_drop", "learning.task.chrf", "forgetting.piqa"} <= set(lf.columns)
    assert "forgetting_metric.piqa" not in data.prefixed_columns(lf, "forgetting")
    assert set(lf["stage"]) == {"early", "final"} and len(lf) == 30
    pareto = data.pareto_points(run.analysis())
    assert pareto["on_frontier"].any() and "base" in set(pareto["method"])
    sat = data.saturation_frame(run.analysis())
    assert {"lora", "full"} == set(sat["method"]) and "saturation_point" in sat
    assert data.analysis_suites(run.analysis())["task"] == ["task"]
    assert not data.early_vs_final_frame(run.analysis()).empty


def test_analysis_views_are_defensive():
    assert data.learning_forgetting_frame(None).empty
    assert data.learning_forgetting_frame({"learning_forgetting": [{"task_gain": 1}]}).empty  # no cell identity
    legacy = data.pareto_points({"pareto": ["lora-n50-s0", {"cell": "full-n50-s0", "stage": "final"}]})
    assert list(legacy["cell"]) == ["lora-n50-s0", "full-n50-s0"] and legacy["on_frontier"].all()
    sat = data.saturation_frame({"saturation": [{"method": "lora", "suite": "t", "metric": "m"}]})
    assert sat.loc[0, "saturation_point"] is None and sat.loc[0, "status"] is None
    assert data.analysis_warnings({"warnings": ["a"]}) == ["a"] and data.analysis_warnings(None) == []


def test_samples_table_joins_models_on_example_id():
    base = pd.DataFrame({"example_id": ["a", "b"], "prompt": ["pa", "pb"], "reference": ["ra", "rb"],
                         "output": ["oa", "ob"], "em": [0.0, 1.0]})
    tuned = pd.DataFrame({"example_id": ["b", "c"], "prompt": ["pb", "pc"], "reference": ["rb", "rc"],
                          "output": ["tb", "tc"], "em": [1.0, 0.0]})
    table = data.samples_table({"base": base, "n50": tuned}, ["em"]).set_index("example_id")
    assert list(table.index) == ["a", "b", "c"]
    assert table.loc["c", "prompt"] == "pc" and pd.isna(table.loc["c", "output[base]"])
    assert table.loc["b", "output[n50]"] == "tb" and table.loc["a", "em[base]"] == 0.0
    assert data.metric_columns(base) == ["em"]


def test_word_diff_marks_changes_and_escapes_html():
    left, right = word_diff_html("a red <b>mug</b> & cup", "a blue <b>mug</b> & cup")
    assert left == "a <del>red</del> &lt;b&gt;mug&lt;/b&gt; &amp; cup"
    assert right == "a <ins>blue</ins> &lt;b&gt;mug&lt;/b&gt; &amp; cup"
    same = word_diff_html("x y", "x y")
    assert same == ("x y", "x y")
    text = "Hello, world!\n  {\"k\": 1}"
    assert "".join(tokens(text)) == text
    assert conversation_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]) == \
        "[user]\nhi\n\n[assistant]\nyo"
