"""Issue 17's first-hour traps, each as a user meets it: the written config re-runs, config check
checks what can be checked before compute, paths resolve against the config's folder, one cache
variable, curate --input takes --format/--mapping, logs stay clean, adapters name their base."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from curatune import models
from curatune.cli import app
from curatune.config import load_config, validate_config
from curatune.curate.base import default_cache_dir
from curatune.errors import ConfigError
from curatune.rundir import RunDir

QA = [{"question": f"What is {i} plus {i}?", "answer": f"{i} plus {i} is {2 * i}."} for i in range(12)]


def _write_qa(path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in QA + QA[:1]), encoding="utf-8")
    return path


def test_config_written_by_curate_input_reruns_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qa.jsonl").write_text("".join(
        json.dumps({"instruction": row["question"], "output": row["answer"]}) + "\n" for row in QA))
    runner = CliRunner()
    first = runner.invoke(app, ["curate", "--input", "qa.jsonl", "--out", "runs/x",
                                "--set", "curate.steps=[{name: exact}]", "-q"])
    assert first.exit_code == 0, first.output
    written = yaml.safe_load((tmp_path / "runs/x/config.yaml").read_text())
    assert written["data"]["sources"][0]["path"] == str(tmp_path / "qa.jsonl")
    # Re-run the written file from another folder: it must find the same run, not runs/x/runs/x.
    monkeypatch.chdir(tmp_path / "runs")
    cfg = load_config("x/config.yaml")
    assert Path(cfg.run_dir) == tmp_path / "runs/x"
    again = runner.invoke(app, ["curate", "x/config.yaml", "-q"])
    assert again.exit_code == 0, again.output
    assert "finished earlier; unchanged" in again.output
    assert not (tmp_path / "runs/x/runs").exists()
    check = runner.invoke(app, ["config", "check", "x/config.yaml"])
    assert check.exit_code == 0, check.output


def test_curate_input_format_and_mapping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_qa(tmp_path / "qa.jsonl")
    result = CliRunner().invoke(app, ["curate", "-i", "qa.jsonl", "-o", "run", "-m", "instruction=question, output=answer",
                                      "--set", "curate.steps=[{name: exact}]", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run/curate/report.json").read_text())
    assert report["input_records"] == 13 and report["kept"] == 12 and report["removed"] == 1
    import pandas as pd

    kept = pd.read_parquet(tmp_path / "run/curate/kept.parquet")
    assert list(kept["messages"].iloc[0]) == [{"role": "user", "content": "What is 0 plus 0?"},
                                              {"role": "assistant", "content": "0 plus 0 is 0."}]
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Say hi.", "input": "", "output": "Hi there, friend."}) + "\n")
    result = CliRunner().invoke(app, ["curate", "-i", str(alpaca), "-o", "run2", "--format", "alpaca",
                                      "--set", "curate.steps=[{name: exact}]", "-q"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run2/config.yaml").read_text())["data"]["sources"][0]["format"] == "alpaca"


def test_mapping_option_errors_are_clear():
    from curatune.curate.command import parse_mapping  # here, so the other tests run on code without it

    assert parse_mapping("instruction=question,output=answer,") == {"instruction": "question", "output": "answer"}
    with pytest.raises(ConfigError, match="expected ours=theirs pairs"):
        parse_mapping("instruction:question")
    result = CliRunner().invoke(app, ["curate", "-i", "x.jsonl", "-o", "r", "--format", "yaml"])
    assert result.exit_code != 0 and "data.sources.0.format" in str(result.exception)


def test_config_check_finds_missing_files_models_and_empty_sources(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text(yaml.safe_dump({
        "model": {"base": "./models/nope", "embedder": "not a model id"},
        "data": {"sources": [{"path": "data/missing.jsonl"}], "labels": "labels.jsonl"},
        "evaluate": {"suites": [{"name": "arc", "kind": "multiple_choice", "path": "bench/arc.jsonl"}]},
    }))
    result = CliRunner().invoke(app, ["config", "check", str(bad)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert f"data.sources.0.path: {tmp_path / 'data/missing.jsonl'}: no such file or folder" in message
    assert f"evaluate.suites.0.path = {tmp_path / 'bench/arc.jsonl'}: no such file" in message
    assert f"model.base: {tmp_path / 'models/nope'}: model directory not found" in message
    assert "model.embedder: 'not a model id': not 'default'" in message
    assert "data.labels" in message


def test_the_printed_defaults_fail_config_check_instead_of_curate(tmp_path):
    runner = CliRunner()
    defaults = tmp_path / "experiment.yaml"
    defaults.write_text(runner.invoke(app, ["config", "--defaults"]).stdout)
    result = runner.invoke(app, ["config", "check", str(defaults)])
    assert result.exit_code != 0
    assert "data.sources is empty: curate has nothing to read" in str(result.exception)
    # ...unless the run already holds curated data (a config used for sweep/evaluate only).
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    with_source = runner.invoke(app, ["config", "check", str(defaults), "--set", f"data.sources=[{{path: {data}}}]"])
    assert with_source.exit_code == 0, with_source.output


def test_hub_ids_and_default_pass_config_check_without_network(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  base: HuggingFaceTB/SmolLM2-360M-Instruct\n  embedder: default\n"
                   "data:\n  sources: [{path: d.jsonl}]\n")
    result = CliRunner().invoke(app, ["config", "check", str(cfg)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("wrong, suggestion", [
    ("train:\n  lora:\n    rank: 8\n", "train.lora.rank: unknown key (did you mean 'r'?"),
    ("train:\n  lora:\n    alpah: 8\n", "train.lora.alpah: unknown key (did you mean 'alpha'?"),
    ("train:\n  epoch: 2\n", "train.epoch: unknown key (did you mean 'epochs'?"),
    ("evaluate:\n  suites:\n    - {name: t, kind: generation, metric: [bleu]}\n", "did you mean 'metrics'?"),
])
def test_misspelt_keys_get_the_likely_key(tmp_path, wrong, suggestion):
    path = tmp_path / "c.yaml"
    path.write_text(wrong)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert suggestion in str(exc.value)


def test_model_paths_and_cache_dir_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    (folder / "models" / "mine").mkdir(parents=True)
    (folder / "models" / "mine" / "config.json").write_text("{}")
    (folder / "org").mkdir()
    (folder / "org" / "local").mkdir()
    cfg_file = folder / "c.yaml"
    cfg_file.write_text("model:\n  base: models/mine\n  embedder: ./emb\ncurate:\n  cache_dir: cache\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: the config must not depend on the working directory
    cfg = load_config(cfg_file)
    assert cfg.model.base == str(folder / "models" / "mine")
    assert cfg.model.embedder == str(folder / "emb")
    assert cfg.curate.cache_dir == str(folder / "cache")
    # hub ids and "default" stay as they are, unless a folder of that name sits beside the config
    cfg_file.write_text("model:\n  base: Qwen/Qwen2.5-0.5B\n  embedder: default\n")
    cfg = load_config(cfg_file)
    assert (cfg.model.base, cfg.model.embedder) == ("Qwen/Qwen2.5-0.5B", "default")
    cfg_file.write_text("model:\n  base: org/local\n")
    assert load_config(cfg_file).model.base == str(folder / "org" / "local")
    # a --set value is a command-line value: used as given
    assert load_config(cfg_file, ["model.base=gpt2"]).model.base == "gpt2"


def test_one_cache_variable_for_models_and_embeddings(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CURATUNE_CACHE_DIR", raising=False)
    monkeypatch.setenv("CURATUNE_CACHE", str(tmp_path / "c"))
    assert models.cache_root() == tmp_path / "c"
    assert models.default_model_cache_dir().is_relative_to(tmp_path / "c")
    assert default_cache_dir() == tmp_path / "c"
    # the old embedding-cache name still works, with a deprecation note, and loses to the new one
    monkeypatch.delenv("CURATUNE_CACHE")
    monkeypatch.setenv("CURATUNE_CACHE_DIR", str(tmp_path / "old"))
    monkeypatch.setattr(models, "_deprecation_said", False)
    assert default_cache_dir() == tmp_path / "old" and models.cache_root() == tmp_path / "old"
    assert "CURATUNE_CACHE_DIR is deprecated" in capsys.readouterr().err
    monkeypatch.setenv("CURATUNE_CACHE", str(tmp_path / "new"))
    assert default_cache_dir() == tmp_path / "new"


def test_manifest_keeps_the_absolute_run_dir_while_config_yaml_says_dot(tmp_path):
    run = RunDir(tmp_path / "r")
    cfg = validate_config({"run_dir": str(run.root)})
    run.write_manifest(cfg.resolved(), "curate")
    assert json.loads(run.manifest.read_text())["config"]["run_dir"] == str(run.root)
    assert yaml.safe_load(run.config.read_text())["run_dir"] == "."
    assert load_config(run.config).run_dir == str(run.root)
