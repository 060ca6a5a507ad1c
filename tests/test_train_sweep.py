"""The sweep end to end on the tiny model: outputs, skip, restart, resume, failures, hooks."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

from curatune.errors import ConfigError, ModelError
from curatune.rundir import read_json
from curatune.train import cell as cell_module
from curatune.rundir import CellSpec
from curatune.train.cell import run_cell
from curatune.models import load_cell_model
from curatune.rundir import list_cells, read_jsonl
from curatune.train.plan import plan_sweep
from curatune.train.sweep import run_sweep
from train_helpers import curated_run_dir, make_records, tiny_config

DONE_KEYS = {"method", "size", "seed", "key", "train_examples", "steps", "epochs", "wall_seconds",
             "tokens_per_second", "train_tokens", "final_loss", "early_step", "early_fraction", "weights",
             "base_model"}
LOG_KEYS = {"step", "loss", "learning_rate", "tokens_per_second", "elapsed"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir):
    """One small sweep shared by the read-only tests: lora + full, sizes 4 and 8."""
    run_dir = curated_run_dir(tmp_path_factory.mktemp("sweep") / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4, 8, 100])
    summary = run_sweep(config, run_dir, progress=False)
    return config, run_dir, summary


def test_sweep_writes_every_cell_with_done_marker_log_and_weights(swept):
    config, run_dir, summary = swept
    assert summary["cells_total"] == 4 and summary["cells_done"] == 4 and not summary["failed"]
    assert summary["oversized"] == [100]
    for cell in list_cells(run_dir):
        assert cell.status == "done"
        done = read_json(cell.path / "done.json")
        assert DONE_KEYS <= set(done)
        assert done["train_examples"] == cell.size
        # epochs = 1, batch 2 -> size/2 optimizer steps; early checkpoint at 20% of them
        assert done["steps"] == cell.size // 2
        assert done["early_step"] == max(1, round(0.2 * done["steps"]))
        assert done["weights"] == {"early": "early", "final": "final"}
        assert done["tokens_per_second"] > 0 and done["train_tokens"] > 0
        log = cell.log()
        assert [line["step"] for line in log] == list(range(1, done["steps"] + 1))
        assert all(LOG_KEYS <= set(line) for line in log)
        assert done["final_loss"] == log[-1]["loss"]
        if cell.method == "lora":
            for stage in ("early", "final"):
                assert (cell.path / stage / "adapter_config.json").exists()
                assert (cell.path / stage / "adapter_model.safetensors").exists()
        else:
            for stage in ("early", "final"):
                assert (cell.path / stage / "model.safetensors").exists()
        assert not list(cell.path.rglob("*.bin")) and not list(cell.path.rglob("*.pt"))
        assert not (cell.path / "checkpoints").exists()
    manifest = read_json(run_dir.manifest)
    assert manifest["stages"]["train"]["cells_done"] == 4


def test_cells_load_for_evaluation_and_training_changed_the_weights(swept, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    config, run_dir, _ = swept
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_weight = base.model.layers[0].self_attn.q_proj.weight
    for cell in list_cells(run_dir):
        early, _ = load_cell_model(cell, "early")
        final, tokenizer = load_cell_model(cell, "final")
        assert tokenizer.chat_template  # carried with the weights
        w_early = early.model.layers[0].self_attn.q_proj.weight
        w_final = final.model.layers[0].self_attn.q_proj.weight
        assert not torch.equal(w_final, base_weight), cell.key
        assert not torch.equal(w_final, w_early), cell.key
        assert not final.training
        ids = tokenizer("hello", return_tensors="pt")
        assert final.generate(**ids, max_new_tokens=2, do_sample=False).shape[1] >= ids["input_ids"].shape[1]


def test_rerun_skips_done_cells_without_touching_them(swept):
    config, run_dir, _ = swept
    stamps = {p: os.stat(p).st_mtime_ns for p in run_dir.train.rglob("*") if p.is_file() and "/n" in str(p)}
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["ran"] == [] and len(summary["already_done"]) == 4
    assert stamps == {p: os.stat(p).st_mtime_ns for p in stamps}


def test_changed_settings_refuse_to_mix_with_finished_cells(swept):
    config, run_dir, _ = swept
    changed = config.model_copy(deep=True)
    changed.train.full.learning_rate = 1e-3
    with pytest.raises(ConfigError, match=r"full-n4-s0: full.learning_rate: 2e-05 -> 0.001"):
        run_sweep(changed, run_dir, progress=False)


def test_killed_cell_restarts_cleanly(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=["full"], sizes=[8])
    plan_sweep(config, run_dir)
    spec = CellSpec("full", 8, 0)

    def kill_at_step_3(step, info):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(config, run_dir, spec, on_step=kill_at_step_3)
    cell_dir = spec.path(run_dir)
    assert (cell_dir / "early").is_dir() and not (cell_dir / "done.json").exists()
    assert [c.status for c in list_cells(run_dir)] == ["running"]
    (cell_dir / ".final.tmp").mkdir()  # as if killed while saving

    outcome = run_cell(config, run_dir, spec)
    assert outcome.status == "done"
    assert not (cell_dir / ".final.tmp").exists()
    log = [line["step"] for line in read_jsonl(cell_dir / "train_log.jsonl")]
    assert log == [1, 2, 3, 4]  # the new attempt's log only
    assert read_json(cell_dir / "done.json")["resumed_from"] is None


def test_killed_cell_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(30))
    config = tiny_config(run_dir, tiny_model_dir, methods=["lora"], sizes=[16], checkpoint_steps=3)
    plan_sweep(config, run_dir)
    reference_dir = curated_run_dir(tmp_path / "ref", make_records(30))
    reference = config.model_copy(update={"run_dir": str(reference_dir.root)})
    plan_sweep(reference, reference_dir)
    spec = CellSpec("lora", 16, 0)
    assert run_cell(reference, reference_dir, spec).status == "done"

    def kill_at_step_5(step, info):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(config, run_dir, spec, on_step=kill_at_step_5)
    cell_dir = spec.path(run_dir)
    assert (cell_dir / "checkpoints" / "checkpoint-3").is_dir()

    outcome = run_cell(config, run_dir, spec)
    assert outcome.status == "done"
    done = read_json(cell_dir / "done.json")
    assert done["resumed_from"] == "checkpoint-3"
    log = read_jsonl(cell_dir / "train_log.jsonl")
    assert [line["step"] for line in log] == list(range(1, 9))
    # seeded adapter init + restored optimizer, scheduler, RNG and data order: the same losses as
    # one uninterrupted run of the same cell
    expected = [line["loss"] for line in read_jsonl(spec.path(reference_dir) / "train_log.jsonl")]
    assert [line["loss"] for line in log] == pytest.approx(expected, rel=1e-4)
    assert not (cell_dir / "checkpoints").exists()


def test_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=["full"], sizes=[4, 8])
    real_loader = cell_module.load_base_for_training
    calls = []

    def out_of_memory_for_size_4(cfg, method, path):
        calls.append(method)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loader(cfg, method, path)

    monkeypatch.setattr(cell_module, "load_base_for_training", out_of_memory_for_size_4)
    summary = run_sweep(config, run_dir, progress=False)
    assert list(summary["failed"]) == ["full-n4-s0"]
    assert "out of memory" in summary["failed"]["full-n4-s0"]
    assert summary["ran"] == ["full-n8-s0"]
    failed = read_json(run_dir.cell("full", 4, 0) / "failed.json")
    assert failed["error"].startswith("OutOfMemoryError") and "Traceback" in failed["traceback"] and failed["when"]
    assert {c.key: c.status for c in list_cells(run_dir)} == {"full-n4-s0": "failed", "full-n8-s0": "done"}
    assert read_json(run_dir.manifest)["stages"]["train"]["cells_failed"] == 1

    summary = run_sweep(config, run_dir, progress=False)  # the retry trains only the failed cell
    assert summary["ran"] == ["full-n4-s0"] and summary["already_done"] == ["full-n8-s0"]
    assert not (run_dir.cell("full", 4, 0) / "failed.json").exists()


def test_keep_weights_none_evaluates_full_cells_through_the_hook(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=["full", "lora"], sizes=[4], keep_weights="none")
    with pytest.raises(ConfigError, match="evaluate_hook"):
        run_sweep(config, run_dir, progress=False)

    seen = []

    def hook(cell, stage, model, tokenizer, cfg, rd):
        ids = tokenizer("hello", return_tensors="pt")
        with torch.no_grad():
            loss = model(**ids, labels=ids["input_ids"]).loss.item()
        seen.append((cell.key, stage, type(model).__name__, loss))

    summary = run_sweep(config, run_dir, hook=hook, progress=False)
    assert summary["cells_done"] == 2
    assert [(k, s) for k, s, _, _ in seen] == [
        ("full-n4-s0", "final"), ("full-n4-s0", "early"), ("lora-n4-s0", "final"), ("lora-n4-s0", "early")]
    full = run_dir.cell("full", 4, 0)
    assert not (full / "early").exists() and not (full / "final").exists()
    assert read_json(full / "done.json")["weights"] == {"early": None, "final": None}
    assert read_json(full / "done.json")["evaluated_in_sweep"] is True
    assert (run_dir.cell("lora", 4, 0) / "final" / "adapter_model.safetensors").exists()
    with pytest.raises(ModelError, match="kept no final weights"):
        load_cell_model([c for c in list_cells(run_dir) if c.method == "full"][0], "final")


def test_qlora_without_cuda_says_so(tmp_path, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=["qlora", "lora"])
    with pytest.raises(ModelError, match="qlora needs a CUDA GPU"):
        run_sweep(config, run_dir, progress=False)


def test_fixed_steps_give_every_size_the_same_steps(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(30))
    config = tiny_config(run_dir, tiny_model_dir, methods=["lora"], sizes=[2, 16], length="steps", steps=3,
                         early_fraction=0.5, gradient_accumulation_steps=2, lr_scheduler="linear")
    run_sweep(config, run_dir, progress=False)
    for size in (2, 16):
        done = read_json(run_dir.cell("lora", size, 0) / "done.json")
        assert done["steps"] == 3 and done["early_step"] == 2
        assert done["epochs"] == pytest.approx(3 * 2 * 2 / size)
        log = read_jsonl(run_dir.cell("lora", size, 0) / "train_log.jsonl")
        assert log[-1]["learning_rate"] < log[1]["learning_rate"]  # linear decay after warmup


def test_subset_records_follow_the_plan(swept):
    config, run_dir, _ = swept
    subsets = pd.read_parquet(run_dir.subsets)
    records = cell_module.subset_records(run_dir, CellSpec("lora", 8, 0))
    expected = list(subsets[(subsets["size"] == 8)].sort_values("order")["id"])
    assert [r.id for r in records] == expected
    assert not set(expected) & set(pd.read_parquet(run_dir.heldout)["id"])
    cell_json = read_json(run_dir.cell("lora", 8, 0) / "cell.json")
    assert cell_json["fingerprint"]["subset_sha1"]
    assert json.dumps(cell_json)  # plain JSON


@pytest.mark.slow
def test_cli_sweep_plans_trains_and_reports(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    import yaml

    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": "run", "model": {"base": str(tiny_model_dir)}, "data": {"heldout_size": 6},
        "train": {"sizes": [4, 50], "methods": ["lora", "full"], "epochs": 1, "per_device_batch_size": 2,
                  "max_seq_length": 64},
    }))

    def curatune(*args):
        return subprocess.run([sys.executable, "-m", "curatune.cli", *args], capture_output=True, text=True,
                              timeout=300)

    help_text = curatune("sweep", "--help").stdout
    for option in ("--run-dir", "--set", "--executor", "--only", "--plan", "--no-progress"):
        assert option in help_text
    planned = curatune("sweep", str(config), "--plan")
    assert planned.returncode == 0, planned.stderr
    assert "sizes [50] exceed the training pool of 14 records" in planned.stderr
    assert run_dir.plan.exists() and not run_dir.cell("lora", 4, 0).exists()

    trained = curatune("sweep", str(config), "--only", "lora", "--no-progress", "--set", "train.seeds=[0]")
    assert trained.returncode == 0, trained.stderr
    assert "1/1 cells done (1 trained now, 0 already done), 0 failed" in " ".join(trained.stderr.split())
    assert (run_dir.cell("lora", 4, 0) / "done.json").exists()
    assert not run_dir.cell("full", 4, 0).exists()

    bad = curatune("sweep", str(config), "--executor", "slurm")
    assert bad.returncode == 2 and "--executor 'slurm'" in bad.stderr and "Traceback" not in bad.stderr
    bad = curatune("sweep", str(config), "--set", "train.methods=[lora,adapterfusion]")
    assert bad.returncode == 2 and "train.methods.1" in bad.stderr


@pytest.mark.slow
def test_peft_methods_beyond_lora_train_save_and_load(tmp_path, tiny_model_dir):
    """dora, ia3, loha and lokr cells train like lora, save a standard peft adapter that
    PeftModel.from_pretrained loads, and evaluate merged into the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    methods = ["dora", "ia3", "loha", "lokr"]
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=methods, sizes=[8])
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["cells_done"] == 4 and not summary["failed"]
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
    sizes = {}
    for cell in list_cells(run_dir):
        done = read_json(cell.path / "done.json")
        assert done["learning_rate"] == config.train.learning_rate(cell.method)
        assert 0 < done["trainable_parameters"] < sum(p.numel() for p in base.parameters())
        sizes[cell.method] = done["weights_bytes"]
        assert (cell.path / "final" / "adapter_model.safetensors").exists()
        adapter = json.loads((cell.path / "final" / "adapter_config.json").read_text())
        assert adapter["peft_type"] == {"dora": "LORA", "ia3": "IA3", "loha": "LOHA", "lokr": "LOKR"}[cell.method]
        assert adapter.get("use_dora", False) == (cell.method == "dora")
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cell.path / "final")
        merged, _ = load_cell_model(cell, "final", dtype="float32", device="cpu")
        with torch.no_grad():
            assert torch.allclose(loaded(ids).logits, merged(ids).logits, atol=1e-4)
            assert not torch.allclose(merged(ids).logits, base_logits, atol=1e-6)  # training changed the model
    assert len(set(sizes.values())) == 4  # four different adapter sizes, all recorded
