"""Merged cells on the tiny model: every merge type gives a loadable cell, merges are exact where
they should be, and evaluation, analysis and the report take merged cells like trained ones."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from train_helpers import curated_run_dir, make_records

from curatune.config import validate_config
from curatune.errors import ConfigError
from curatune.evaluate.report import build_report
from curatune.evaluate.runner import run_evaluate
from curatune.models import load_cell_model
from curatune.rundir import CellInfo, list_cells, read_json
from curatune.train.merge import run_merges
from curatune.train.merge_config import MergeRecipe
from curatune.train.sweep import run_sweep

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])


def _config(run_dir, model_dir, recipes=(), **evaluate):
    return validate_config({
        "run_dir": str(run_dir.root),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"heldout_size": 4},
        "train": {"sizes": [4, 8], "seeds": [0, 1], "methods": ["lora", "full"], "epochs": 1,
                  "per_device_batch_size": 2, "max_seq_length": 64, "cpu_threads": 1,
                  "lora": {"r": 4, "alpha": 8, "learning_rate": 5e-3}, "full": {"learning_rate": 1e-3}},
        "merge": {"recipes": list(recipes)},
        "evaluate": evaluate or {"suites": [{"name": "task", "kind": "generation", "max_new_tokens": 4}],
                                 "analysis": {"n_bootstrap": 0}},
    })


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir):
    """lora and full cells at sizes 4 and 8, seeds 0 and 1 (8 cells)."""
    run_dir = curated_run_dir(tmp_path_factory.mktemp("merge") / "run", make_records(24))
    config = _config(run_dir, tiny_model_dir)
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["cells_done"] == 8
    return config, run_dir


def _logits(cell: CellInfo, stage: str = "final"):
    model, _ = load_cell_model(cell, stage, dtype="float32", device="cpu")
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _weight(cell_or_dir, tiny_model_dir=None):
    """layers.0.self_attn.q_proj.weight of a cell's final model (LoRA merged in), or of the base."""
    if isinstance(cell_or_dir, CellInfo):
        model, _ = load_cell_model(cell_or_dir, "final", dtype="float32", device="cpu")
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cell_or_dir, dtype=torch.float32)
    return model.model.layers[0].self_attn.q_proj.weight.detach().clone()


@pytest.mark.slow
def test_every_merge_type_builds_a_loadable_cell(swept, tiny_model_dir):
    config, run_dir = swept
    recipes = [MergeRecipe(type=t, method=m, sizes=[4], seeds=[0, 1])
               for m in ("lora", "full") for t in ("task_arithmetic", "ties", "dare_linear", "dare_ties")]
    recipes += [MergeRecipe(type="scaled", parents=[f"{m}-n8-s0"], scale=0.5) for m in ("lora", "full")]
    summary = run_merges(config, run_dir, recipes, progress=False)
    assert not summary["failed"] and len(summary["done"]) == 10
    with torch.no_grad():
        from transformers import AutoModelForCausalLM

        base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=IDS).logits
    merged = [c for c in list_cells(run_dir) if c.is_merged]
    assert sorted(c.key for c in merged) == sorted(
        [f"{m}+{t}-n4-s0" for m in ("lora", "full") for t in ("task_arithmetic", "ties", "dare_linear", "dare_ties")]
        + ["lora+scaled0.5-n8-s0", "full+scaled0.5-n8-s0"])
    for cell in merged:
        assert cell.status == "done" and cell.is_adapter == cell.method.startswith("lora")
        recipe = cell.recipe()
        assert recipe["parents"] and recipe["type"] == read_json(cell.path / "done.json")["recipe"]["type"]
        if recipe["type"] in ("ties", "dare_linear", "dare_ties"):
            assert recipe["density"] == 0.5
        folder = cell.path / "final"
        assert (folder / ("adapter_model.safetensors" if cell.is_adapter else "model.safetensors")).exists()
        assert cell.done["weights"] == {"early": "early", "final": "final"} and cell.done["trainable_parameters"] > 0
        logits = _logits(cell)
        assert torch.isfinite(logits).all() and not torch.allclose(logits, base_logits, atol=1e-6), cell.key
        assert not torch.allclose(_logits(cell, "early"), logits, atol=1e-6)  # early merged from early parents
    # re-running skips what is built; a changed recipe under the same name is refused
    again = run_merges(config, run_dir, recipes, progress=False)
    assert len(again["skipped"]) == 10 and not again["done"]
    changed = [MergeRecipe(type="ties", method="lora", sizes=[4], seeds=[0, 1], density=0.2)]
    with pytest.raises(ConfigError, match=r"lora\+ties-n4-s0 was built from another recipe"):
        run_merges(config, run_dir, changed, progress=False)


@pytest.mark.slow
def test_task_arithmetic_is_exact(swept, tiny_model_dir):
    """A LoRA merged with itself at weight 1 gives the parent's outputs; two LoRAs merge to exactly
    w1 * update1 + w2 * update2; a scaled LoRA is base + scale * update; the same for full cells."""
    config, run_dir = swept
    recipes = [MergeRecipe(type="task_arithmetic", parents=[f"{m}-n8-s1"], weights=[1.0], name=f"{m}_self")
               for m in ("lora", "full")]
    recipes += [MergeRecipe(type="task_arithmetic", parents=[f"{m}-n8-s0", f"{m}-n8-s1"], weights=[0.7, 0.3],
                            name=f"{m}_pair") for m in ("lora", "full")]
    recipes += [MergeRecipe(type="scaled", parents=[f"{m}-n8-s1"], scale=0.25, name=f"{m}_quarter")
                for m in ("lora", "full")]
    recipes += [MergeRecipe(type="dare_linear", parents=["full-n8-s0", "full-n8-s1"], weights=[0.7, 0.3],
                            density=1.0, name="full_dare_keep_all")]
    summary = run_merges(config, run_dir, recipes, progress=False)
    assert not summary["failed"], summary["failed"]
    base = _weight(tiny_model_dir)
    for m in ("lora", "full"):
        parent0 = CellInfo.from_dir(run_dir, m, 8, 0)
        parent1 = CellInfo.from_dir(run_dir, m, 8, 1)
        self_merge = CellInfo.from_dir(run_dir, f"{m}+{m}_self", 8, 1)
        assert torch.allclose(_logits(self_merge), _logits(parent1), atol=1e-5)
        d0, d1 = _weight(parent0) - base, _weight(parent1) - base
        assert d0.abs().max() > 1e-4 and d1.abs().max() > 1e-4  # training moved q_proj
        pair = _weight(CellInfo.from_dir(run_dir, f"{m}+{m}_pair", 8, 0))
        assert torch.allclose(pair, base + 0.7 * d0 + 0.3 * d1, atol=1e-6)
        quarter = _weight(CellInfo.from_dir(run_dir, f"{m}+{m}_quarter", 8, 1))
        assert torch.allclose(quarter, base + 0.25 * d1, atol=1e-6)
    keep_all = _weight(CellInfo.from_dir(run_dir, "full+full_dare_keep_all", 8, 0))
    full0, full1 = (_weight(CellInfo.from_dir(run_dir, "full", 8, s)) - base for s in (0, 1))
    assert torch.allclose(keep_all, base + 0.7 * full0 + 0.3 * full1, atol=1e-6)  # density 1 drops nothing


@pytest.mark.slow
def test_merged_cells_are_evaluated_analysed_and_reported(swept, tmp_path):
    config, run_dir = swept
    texts = tmp_path / "general.txt"
    texts.write_text("The quick brown fox jumps over the lazy dog.\n" * 3 + "def add(a, b):\n    return a + b\n")
    config = _config(run_dir, config.model.base, [
        {"type": "ties", "method": "lora", "sizes": [8], "seeds": [0, 1]},
        {"type": "scaled", "parents": ["lora-n8-s0"], "scale": 0.5},
        {"type": "ties", "parents": ["lora-n4-s9", "lora-n8-s0"], "name": "missing_parent"},
    ], suites=[{"name": "task", "kind": "generation", "max_new_tokens": 4},
               {"name": "general", "kind": "perplexity", "path": str(texts), "max_length": 32}],
        analysis={"n_bootstrap": 0})
    summary = run_merges(config, run_dir, progress=False)
    assert "lora+ties-n8-s0" in summary["done"] + summary["skipped"]
    assert summary["failed"] == {"lora+missing_parent-n8-s0": "cannot merge lora+missing_parent-n8-s0: "
                                 "parent lora-n4-s9 is pending, not done"}
    run_evaluate(config, run_dir, progress=False)
    scores = pd.read_parquet(run_dir.scores)
    for key in ("lora+ties-n8-s0", "lora+scaled0.5-n8-s0"):
        assert set(scores[scores.cell == key].stage) == {"early", "final"}
        assert set(scores[scores.cell == key].suite) == {"task", "general"}
    analysis = read_json(run_dir.analysis)
    plotted = {(row["cell"], row["stage"]) for row in analysis["learning_forgetting"]}
    assert {("lora+ties-n8-s0", "final"), ("lora+scaled0.5-n8-s0", "final"), ("lora-n8-s0", "final")} <= plotted
    report = build_report(run_dir.root)
    methods = report["run"]["sweep"]["methods"]
    ties_cells = [c for c in list_cells(run_dir) if c.method == "lora+ties" and c.status == "done"]
    assert methods["lora+ties"]["cells"] == len(ties_cells) >= 1 and methods["lora"]["trainable_parameters"] > 0
    assert {f["cell"] for f in report["run"]["sweep"]["failed"]} == {"lora+missing_parent-n8-s0"}


@pytest.mark.slow
def test_cli_merge_one_recipe_and_bad_input(swept):
    config, run_dir = swept

    def curatune(*args):
        return subprocess.run([sys.executable, "-m", "curatune.cli", *args], capture_output=True, text=True,
                              timeout=300)

    run_dir.write_manifest(config.resolved(), "train")  # config.yaml, as a sweep leaves it
    built = curatune("merge", str(run_dir.root), "--type", "scaled", "--parents", "lora-n4-s1", "--scale", "0.3",
                     "--no-progress")
    assert built.returncode == 0, built.stderr
    assert CellInfo.from_dir(run_dir, "lora+scaled0.3", 4, 1).status == "done"
    bad = curatune("merge", str(run_dir.root), "--type", "ties", "--parents", "lora-n4-s0")
    assert bad.returncode == 2 and "type ties merges at least two parents" in bad.stderr
    assert "Traceback" not in bad.stderr
    mixed = curatune("merge", str(run_dir.root), "--type", "ties", "--parents", "lora-n4-s0,full-n4-s0")
    assert mixed.returncode == 2 and "mix methods" in mixed.stderr
    ia3 = curatune("merge", str(run_dir.root), "--type", "ties", "--parents", "ia3-n4-s0,ia3-n4-s1")
    assert ia3.returncode == 2 and "ia3 cells cannot be merged" in ia3.stderr
    json.loads((run_dir.cell("lora+scaled0.3", 4, 1) / "recipe.json").read_text())
