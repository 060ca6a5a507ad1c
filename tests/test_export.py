"""`curatune export` / `export-data` on a real finished run (curate -> sweep -> evaluate on the tiny model):
the folders load with transformers, peft and datasets, and the cards carry the run's numbers."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from curatune.cli import app
from curatune.config import validate_config
from curatune.curate.stage import run_curate
from curatune.errors import CuratuneError
from curatune.export import export_cell, export_data, push_folder
from curatune.model_card import base_model_id
from curatune.models import DEFAULT_HUB_ID
from curatune.rundir import RunDir, read_json
from curatune.train.sweep import run_sweep
from train_helpers import make_records

MC_ITEMS = [
    {"query": "Question: Which object is a magnet attracted to? Answer:", "choices": ["iron nail", "glass", "wood"], "gold": 0},
    {"query": "Question: What colour is the sky on a clear day? Answer:", "choices": ["green", "blue"], "gold": 1},
    {"query": "Question: What do cows drink? Answer:", "choices": ["water", "milk", "oil", "sand"], "gold": 0},
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """A run as `curatune run` leaves it: curated (2 exact duplicates removed), 2 cells, evaluated."""
    from curatune.evaluate.runner import run_evaluate

    root = tmp_path_factory.mktemp("export")
    records = make_records(24)
    lines = [json.dumps({"messages": r.messages, "category": r.category}) for r in records]
    (root / "train.jsonl").write_text("\n".join(lines + lines[:2]) + "\n", encoding="utf-8")
    (root / "mc.jsonl").write_text("".join(json.dumps(i) + "\n" for i in MC_ITEMS), encoding="utf-8")
    config = validate_config({
        "name": "export-test",
        "run_dir": str(root / "run"),
        "model": {"base": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"sources": [{"path": str(root / "train.jsonl")}], "heldout_size": 6},
        "curate": {"steps": [{"name": "exact"}], "progress": False},
        "train": {"sizes": [4], "methods": ["lora", "full"], "epochs": 1, "per_device_batch_size": 2,
                  "max_seq_length": 64, "cpu_threads": 1},
        "evaluate": {"suites": [
            {"name": "task", "kind": "generation", "metrics": ["chrf", "bleu", "exact_match"], "max_new_tokens": 8},
            {"name": "mc", "kind": "multiple_choice", "path": str(root / "mc.jsonl"), "batch_size": 4},
        ], "analysis": {"n_bootstrap": 0}, "cpu_threads": 1},
    })
    run_dir = RunDir(config.run_dir)
    run_curate(config, run_dir, progress=False)
    run_sweep(config, run_dir, progress=False)
    run_evaluate(config, run_dir, progress=False)
    return run_dir, config


def _scores(run_dir: RunDir, cell: str) -> pd.DataFrame:
    scores = pd.read_parquet(run_dir.scores)
    return scores[(scores["cell"] == cell) & (scores["stage"] == "final")]


@pytest.mark.slow
def test_lora_adapter_export_loads_with_peft_and_names_its_base(finished_run, tiny_model_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    run_dir, _ = finished_run
    result = export_cell(run_dir, "lora-n4-s0", tmp_path / "adapter")
    assert result.kind == "adapter"
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)  # the path the user gave
    assert not list((tmp_path / "adapter").glob("*.bin"))
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 2, 3]])
    exported = model.merge_and_unload()(ids).logits
    from curatune.models import load_cell_model
    from curatune.rundir import CellInfo

    reference, _ = load_cell_model(CellInfo.from_dir(run_dir, "lora", 4, 0), "final", device="cpu")
    assert torch.allclose(exported, reference(ids).logits, atol=1e-5)


@pytest.mark.slow
def test_merged_and_full_exports_load_with_transformers(finished_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = finished_run
    for key, merge in (("lora-n4-s0", True), ("full-n4-s0", False)):
        out = tmp_path / key
        result = export_cell(run_dir, key, out, merge=merge)
        assert result.kind == ("merged" if merge else "full")
        assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        assert tokenizer.chat_template
        assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size
        card = (out / "README.md").read_text()
        assert "library_name: transformers" in card
        assert ("merged-lora" in card) == merge


@pytest.mark.slow
def test_weights_in_the_run_and_in_exports_are_readable_like_any_other_file(finished_run, tmp_path):
    """Trained cells and exports hold safetensors, which safetensors 0.8 writes 0600 (its #782):
    a teammate or a serving account must be able to read them like the JSON beside them."""
    run_dir, _ = finished_run
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    weights = sorted((run_dir.root / "train").rglob("*.safetensors"))
    assert weights  # both cells' early and final weights
    export_cell(run_dir, "full-n4-s0", tmp_path / "full")
    export_cell(run_dir, "lora-n4-s0", tmp_path / "adapter")
    weights += sorted(tmp_path.rglob("*.safetensors"))
    for path in weights:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


@pytest.mark.slow
def test_an_export_that_cannot_be_written_is_one_message_and_leaves_nothing(finished_run, tmp_path, capsys):
    from hostile import assert_clean_error, file_size_limit, run_cli

    run_dir, _ = finished_run
    out = tmp_path / "full"
    with file_size_limit(8_000):  # the weights file cannot be written, as on a full disk
        result = run_cli(["export", run_dir.root, "full-n4-s0", "--out", out], capsys)
    message = assert_clean_error(result, str(out), "File too large")
    assert "write to another disk" in message
    assert list(tmp_path.iterdir()) == [], "neither the export nor its temporary folder is left"


@pytest.mark.slow
def test_model_card_carries_the_runs_numbers(finished_run, tmp_path):
    run_dir, _ = finished_run
    export_cell(run_dir, "lora-n4-s0", tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    report = read_json(run_dir.curate_report)
    assert report["input_records"] == 26 and report["removed"] == 2
    assert "26 records in, 24 kept, 2 removed" in card
    assert "| exact | 26 | 24 | 2 | exact_duplicate 2 |" in card
    assert "4 training records" in card and "| LoRA r / alpha / dropout | 16 / 32 / 0.05 |" in card
    signatures = read_json(run_dir.signatures)
    # sacrebleu signature beside the score (its | escaped, as a markdown table cell needs)
    assert "`" + signatures["task"]["chrf"].replace("|", "\\|") + "`" in card
    for row in _scores(run_dir, "lora-n4-s0").itertuples():
        assert f"| {row.suite} | {row.metric} |" in card
    chrf = _scores(run_dir, "lora-n4-s0").set_index("metric").loc["chrf", "value"]
    assert f"{chrf:.4g}" in card
    analysis = read_json(run_dir.analysis)
    row = next(r for r in analysis["learning_forgetting"] if r["cell"] == "lora-n4-s0" and r["stage"] == "final")
    assert "mc" in row["forgetting"]
    entry = (row.get("significance") or {}).get("mc") or {}
    expected = "no interval" if entry.get("ci_low") is None else f"[{float(entry['ci_low']) + 0.0:.4g}, "
    metric = row["forgetting_metric"]["mc"]
    assert f"| mc | {metric} | {float(row['forgetting']['mc']) + 0.0:.4g} | {expected}" in card


def test_forgetting_interval_comes_from_the_significance_rows_when_present(tmp_path):
    """analysis.json rows may carry significance[suite] with ci_low/ci_high (the paired tests);
    the card shows that interval, and says "no interval" where a row has none."""
    from curatune.model_card import RunFacts, evaluation_section

    scores = pd.DataFrame([
        {"cell": "base", "stage": "base", "suite": "arc", "metric": "acc", "value": 0.50, "n_items": 400},
        {"cell": "lora-n8-s0", "stage": "final", "suite": "arc", "metric": "acc", "value": 0.46, "n_items": 400},
        {"cell": "lora-n8-s0", "stage": "final", "suite": "piqa", "metric": "acc", "value": 0.6, "n_items": 400},
    ])
    row = {"cell": "lora-n8-s0", "stage": "final", "forgetting": {"arc": 0.04, "piqa": 0.01},
           "forgetting_metric": {"arc": "acc", "piqa": "acc"},
           "significance": {"arc": {"metric": "acc", "test": "mcnemar_exact", "difference": -0.04, "ci_low": -0.071,
                                    "ci_high": -0.009, "ci_level": 0.95, "label": "worse"}}}
    facts = RunFacts(RunDir(tmp_path), scores=scores, analysis={"suites": {"general": ["arc", "piqa"]},
                                                              "learning_forgetting": [row]})
    text = "\n".join(evaluation_section(facts, "lora-n8-s0", "final"))
    assert "| arc | acc | 0.04 | [-0.071, -0.009] (95% mcnemar_exact, worse) |" in text
    assert "| piqa | acc | 0.01 | no interval |" in text
    assert "| arc | acc | 0.5 | 0.46 | 400 | - |" in text


@pytest.mark.slow
def test_export_data_jsonl_and_datasets_with_card(finished_run, tmp_path):
    import datasets

    run_dir, _ = finished_run
    kept = pd.read_parquet(run_dir.kept)
    export_data(run_dir, tmp_path / "jsonl")
    rows = [json.loads(line) for line in (tmp_path / "jsonl" / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(kept["id"]) and rows[0]["messages"][0]["role"] == "user"
    card = (tmp_path / "jsonl" / "README.md").read_text()
    assert "26 records in, 24 kept, 2 removed" in card and "exact_duplicate 2" in card
    export_data(run_dir, tmp_path / "ds", fmt="datasets")
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(loaded) == len(kept) == 24
    assert loaded[0]["messages"] == rows[0]["messages"]
    assert "size_categories" in (tmp_path / "ds" / "README.md").read_text()


@pytest.mark.slow
def test_cli_export_and_push_to_a_local_hub(finished_run, tmp_path, monkeypatch):
    """The push goes through huggingface_hub's HfApi; only its two network calls are replaced, by a
    local folder that plays the hub."""
    from huggingface_hub import HfApi

    hub = tmp_path / "hub"
    calls = []

    def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False, **kwargs):
        calls.append(("create", repo_id, repo_type, private))
        (hub / (repo_type or "model") / repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://hub.local/{repo_id}"

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, **kwargs):
        calls.append(("upload", repo_id, repo_type))
        shutil.copytree(folder_path, hub / (repo_type or "model") / repo_id, dirs_exist_ok=True)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    run_dir, _ = finished_run
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run_dir.root), "lora-n4-s0", "--out", str(tmp_path / "m"),
                                 "--push-to-hub", "me/tiny-lora", "--private"])
    assert result.exit_code == 0, result.output
    assert (hub / "model" / "me/tiny-lora" / "adapter_model.safetensors").exists()
    assert (hub / "model" / "me/tiny-lora" / "README.md").read_text() == (tmp_path / "m" / "README.md").read_text()
    result = runner.invoke(app, ["export-data", str(run_dir.root), "--out", str(tmp_path / "d"), "--push-to-hub", "me/data"])
    assert result.exit_code == 0, result.output
    assert (hub / "dataset" / "me/data" / "train.jsonl").exists()
    assert calls[0] == ("create", "me/tiny-lora", "model", True) and ("upload", "me/data", "dataset") in calls


def test_push_failure_is_one_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    def refuse(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    (tmp_path / "f").mkdir()
    with pytest.raises(CuratuneError, match="push to the hub as me/x .* no route to host.*complete in"):
        push_folder(tmp_path / "f", "me/x")


@pytest.mark.slow
def test_export_refuses_what_it_cannot_do(finished_run, tmp_path):
    run_dir, _ = finished_run
    with pytest.raises(CuratuneError, match="not a cell key"):
        export_cell(run_dir, "lora", tmp_path / "x")
    with pytest.raises(CuratuneError, match="lora-n8-s0 is pending, not done; cells in this run: full-n4-s0, lora-n4-s0"):
        export_cell(run_dir, "lora-n8-s0", tmp_path / "x")
    with pytest.raises(CuratuneError, match="--merge applies to LoRA cells"):
        export_cell(run_dir, "full-n4-s0", tmp_path / "x", merge=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(CuratuneError, match="not empty"):
        export_cell(run_dir, "full-n4-s0", tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_base_model_id_is_the_hub_id_or_the_given_path():
    assert base_model_id("default", "/home/u/.cache/curatune/models/SmolLM2-135M-Instruct") == DEFAULT_HUB_ID
    snapshot = "/home/u/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/abc123"
    assert base_model_id("Qwen/Qwen2.5-0.5B-Instruct", snapshot) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_id(snapshot, snapshot) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_id("/models/mine", "/models/mine") == "/models/mine"
    assert base_model_id(None) is None


@pytest.mark.slow
def test_app_runs_page_exports_the_selected_cell_and_the_data(finished_run, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from curatune.app.data import RUNS_ENV

    run_dir, _ = finished_run
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(run_dir.root)]))
    main = str(Path(__file__).resolve().parents[1] / "curatune" / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=120).run()
    at.switch_page("views/runs.py").run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    cell_box = next(s for s in at.selectbox if s.label == "Cell")
    assert cell_box.options == ["full-n4-s0", "lora-n4-s0"]
    cell_box.set_value("lora-n4-s0").run()
    card_preview = [t.value for t in at.text if "LoRA r / alpha / dropout" in t.value]
    assert card_preview and "library_name: peft" in card_preview[0]
    at.text_input(key="export_model_out").set_value(str(tmp_path / "from-app")).run()
    at.button(key="export_model_go").click().run()
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == ["Wrote adapter weights of lora-n4-s0 to the folder below."]
    assert (tmp_path / "from-app" / "adapter_model.safetensors").exists()
    # a second click on the same folder is refused, plainly
    at.button(key="export_model_go").click().run()
    assert any("not empty" in w.value for w in at.warning)
    at.text_input(key="export_data_out").set_value(str(tmp_path / "data-from-app")).run()
    at.button(key="export_data_go").click().run()
    assert (tmp_path / "data-from-app" / "train.jsonl").exists()
