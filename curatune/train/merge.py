"""Merged cells: new cells built from finished ones (task arithmetic, TIES, DARE, scaled LoRA).

A merged cell is a cell like any other (``train/<parent method>+<merge>/n<size>/s<seed>/``
with early/, final/ and done.json, written last) plus ``recipe.json``; the evaluation, the
analysis, the report and the app pick it up through ``rundir.list_cells``, so its point lands
on the learning-vs-forgetting plot beside its parents. Early and final weights are merged
from the parents' early and final weights.

* LoRA parents (lora, qlora) are merged by peft's ``add_weighted_adapter`` and saved as one
  LoRA adapter. task_arithmetic and scaled use its ``cat`` combination: the parents' factors
  side by side, which is exactly sum_i w_i * (B_i A_i scaling_i) (peft's ``linear`` mixes
  the A and the B factors separately, which is not the weighted sum of the updates: two equal
  halves of one adapter give twice its update). ties and dare use the ``*_svd`` combinations:
  TIES/DARE on the full update of each layer, as the papers define them, brought back to
  rank ``lora_rank`` by SVD (the factor-wise variants would trim A and B separately).
* Full fine-tunes are merged tensor by tensor on their updates from the base
  (``final - base``) with peft's ``merge_utils`` (task_arithmetic, ties, dare_linear,
  dare_ties), and saved as a full model.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curatune.config import ExperimentConfig
from curatune.errors import ConfigError, CuratuneError, ModelError
from curatune.models import resolve_model_path
from curatune.rundir import (
    DONE,
    EARLY,
    FAILED,
    FINAL,
    MERGE_SEPARATOR,
    RECIPE,
    CellInfo,
    CellSpec,
    RunDir,
    atomic_write_json,
    parse_cell_key,
    read_json_or_none,
)
from curatune.runlock import holds_stage_lock
from curatune.train.cell import now_iso, quiet_transformers, save_weights_dir
from curatune.train.merge_config import MERGEABLE_METHODS, MergeRecipe

#: peft add_weighted_adapter combination type of each merge type, for LoRA parents.
LORA_COMBINATION = {"task_arithmetic": "cat", "scaled": "cat", "ties": "ties_svd",
                    "dare_linear": "dare_linear_svd", "dare_ties": "dare_ties_svd"}
#: peft.utils.merge_utils function of each merge type, for full fine-tunes.
FULL_FUNCTION = {"task_arithmetic": "task_arithmetic", "scaled": "task_arithmetic", "ties": "ties",
                 "dare_linear": "dare_linear", "dare_ties": "dare_ties"}
_USES_DENSITY = ("ties", "dare_linear", "dare_ties")


@dataclass
class MergeOutcome:
    key: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str | None = None


def merged_method_name(recipe: MergeRecipe, parent_method: str) -> str:
    if recipe.name:
        return recipe.name if MERGE_SEPARATOR in recipe.name else f"{parent_method}{MERGE_SEPARATOR}{recipe.name}"
    suffix = f"scaled{recipe.scale:g}" if recipe.type == "scaled" else recipe.type
    return f"{parent_method}{MERGE_SEPARATOR}{suffix}"


def recipe_record(recipe: MergeRecipe) -> dict[str, Any]:
    """What recipe.json holds: everything that decides the merged weights."""
    record = {"type": recipe.type, "parents": recipe.parent_keys(), "weights": recipe.parent_weights()}
    if recipe.type in _USES_DENSITY:
        record["density"] = recipe.density
    if recipe.type.startswith("dare"):
        record["seed"] = recipe.seed
    if recipe.type == "scaled":
        record["scale"] = recipe.scale
    if recipe.lora_rank is not None:
        record["lora_rank"] = recipe.lora_rank
    return record


class MergePlan:
    """A recipe resolved against a run: its parents (CellInfo) and the merged cell's spec."""

    def __init__(self, run_dir: RunDir, recipe: MergeRecipe):
        self.recipe = recipe
        parsed = []
        for key in recipe.parent_keys():
            found = parse_cell_key(key)
            if found is None:
                raise ConfigError(f"merge recipe {recipe.type}: parent {key!r} is not a cell key (<method>-n<size>-s<seed>)")
            parsed.append(found)
        methods = {p.method for p in parsed}
        if len(methods) != 1:
            raise ConfigError(f"merge recipe {recipe.type}: parents {recipe.parent_keys()} mix methods {sorted(methods)}; "
                              "merge cells of one method")
        self.parent_method = methods.pop()
        if self.parent_method not in MERGEABLE_METHODS:
            raise ConfigError(f"merge recipe {recipe.type}: {self.parent_method} cells cannot be merged "
                              f"(mergeable: {', '.join(MERGEABLE_METHODS)})")
        self.parents = [CellInfo.from_dir(run_dir, *p) for p in parsed]
        self.spec = CellSpec(merged_method_name(recipe, self.parent_method),
                             max(p.size for p in parsed), min(p.seed for p in parsed))
        self.record = recipe_record(recipe)

    def parents_problem(self) -> str | None:
        """Why the merge cannot run yet (a parent not done, or without final weights), or None."""
        for parent in self.parents:
            if parent.status != "done":
                return f"parent {parent.key} is {parent.status}, not done"
            final = parent.weights_dir(FINAL)
            if final is None or not final.is_dir():
                return f"parent {parent.key} kept no final weights (train.keep_weights = none)"
        return None


@holds_stage_lock("train")  # merged cells live in train/: never beside a running sweep
def run_merges(config: ExperimentConfig, run_dir: RunDir | str | None = None, recipes: list[MergeRecipe] | None = None,
               *, progress: bool = True) -> dict[str, Any]:
    """Build every merged cell of ``recipes`` (default: config.merge.recipes) not built yet.

    A merged cell whose done.json exists is skipped; one built from another recipe is a
    ConfigError (results are never overwritten). A merge that fails (a parent not done, a
    load error) is recorded in the merged cell's failed.json and the others go on."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir if run_dir is not None else config.run_dir)
    recipes = config.merge.recipes if recipes is None else recipes
    plans = [MergePlan(run_dir, r) for r in recipes]
    keys = [p.spec.key for p in plans]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise ConfigError(f"merge recipes build the same cell twice: {clash}; give one of them a name")
    for plan in plans:
        done = read_json_or_none(plan.spec.path(run_dir) / DONE)
        if done is not None and done.get("recipe") != plan.record:
            raise ConfigError(f"merged cell {plan.spec.key} was built from another recipe ({done.get('recipe')}); "
                              "finished cells are never overwritten: give this recipe a name, or delete the folder")
    outcomes = []
    for plan in plans:
        outcome = _run_one(config, run_dir, plan)
        outcomes.append(outcome)
        if progress:
            detail = f": {outcome.error}" if outcome.error else f" ({outcome.seconds:.1f} s)"
            print(f"merge {outcome.key}: {outcome.status}{detail}", flush=True)
    return {"done": [o.key for o in outcomes if o.status == "done"],
            "skipped": [o.key for o in outcomes if o.status == "skipped"],
            "failed": {o.key: o.error for o in outcomes if o.status == "failed"}}


def _run_one(config: ExperimentConfig, run_dir: RunDir, plan: MergePlan) -> MergeOutcome:
    cell_dir = plan.spec.path(run_dir)
    if (cell_dir / DONE).exists():
        return MergeOutcome(plan.spec.key, "skipped")
    started = time.perf_counter()
    try:
        problem = plan.parents_problem()
        if problem:
            raise ModelError(f"cannot merge {plan.spec.key}: {problem}")
        with quiet_transformers():
            build_merged_cell(config, run_dir, plan)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed merge is recorded, the others go on
        error = str(exc) if isinstance(exc, CuratuneError) else f"{type(exc).__name__}: {exc}"
        cell_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cell_dir / FAILED, {"method": plan.spec.method, "size": plan.spec.size,
                                              "seed": plan.spec.seed, "key": plan.spec.key, "error": error,
                                              "recipe": plan.record, "when": now_iso()})
        return MergeOutcome(plan.spec.key, "failed", time.perf_counter() - started, error)
    return MergeOutcome(plan.spec.key, "done", time.perf_counter() - started)


def build_merged_cell(config: ExperimentConfig, run_dir: RunDir, plan: MergePlan) -> dict[str, Any]:
    """Merge the parents' early and final weights into the merged cell's folder; done.json last."""
    started = time.perf_counter()
    cell_dir = plan.spec.path(run_dir)
    for leftover in (FAILED, EARLY, FINAL):  # an earlier attempt's; done.json is absent here
        path = cell_dir / leftover
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    first = plan.parents[0]
    base_path = str(resolve_model_path(first.base_model_path or first.base_model or config.model.base))
    atomic_write_json(cell_dir / RECIPE, {**plan.record, "method": plan.spec.method, "key": plan.spec.key,
                                          "parent_method": plan.parent_method, "base_model_path": base_path})
    weights: dict[str, str | None] = {}
    for stage in (EARLY, FINAL):
        folders = [p.weights_dir(stage) for p in plan.parents]
        if any(f is None or not f.is_dir() for f in folders):
            weights[stage] = None  # a parent kept no weights for this stage
            continue
        save_weights_dir(cell_dir / stage, lambda tmp, folders=folders: _merge_stage(plan, folders, base_path, tmp))
        weights[stage] = stage
    final = cell_dir / FINAL
    done = {
        "method": plan.spec.method, "size": plan.spec.size, "seed": plan.spec.seed, "key": plan.spec.key,
        "merged": True, "recipe": plan.record, "parent_method": plan.parent_method,
        "weights": weights, "base_model": first.base_model, "base_model_path": base_path,
        "train_examples": None, "steps": 0, "learning_rate": None,
        "trainable_parameters": _weights_parameters(final),
        "weights_bytes": sum(f.stat().st_size for f in final.rglob("*.safetensors")),
        "train_seconds": 0.0, "merge_seconds": round(time.perf_counter() - started, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "finished": now_iso(),
    }
    atomic_write_json(cell_dir / DONE, done)  # the marker: written last
    return done


def _merge_stage(plan: MergePlan, folders: list[Path], base_path: str, out: Path) -> None:
    import torch

    torch.manual_seed(plan.recipe.seed)  # DARE's random drop: same recipe, same weights
    if plan.parent_method == "full":
        merge_full(folders, plan.recipe, base_path, out)
    else:
        merge_lora(folders, plan.recipe, base_path, out)


def merge_lora(adapters: list[Path], recipe: MergeRecipe, base_path: str, out: Path) -> None:
    """One LoRA adapter in ``out`` from peft's add_weighted_adapter over the parents' adapters."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
    names = [f"parent{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(base, adapters[0], adapter_name=names[0])
    for name, folder in zip(names[1:], adapters[1:]):
        model.load_adapter(folder, adapter_name=name)
    combination = LORA_COMBINATION[recipe.type]
    kwargs: dict[str, Any] = {}
    if combination.endswith("_svd"):
        kwargs["svd_rank"] = recipe.lora_rank or sum(model.peft_config[n].r for n in names)
        kwargs["svd_full_matrices"] = False  # the reduced SVD holds every singular vector we keep
    if recipe.type in _USES_DENSITY:
        kwargs["density"] = recipe.density
    model.add_weighted_adapter(names, recipe.parent_weights(), "default", combination_type=combination, **kwargs)
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapters[0]).save_pretrained(out)


def merge_full(folders: list[Path], recipe: MergeRecipe, base_path: str, out: Path) -> None:
    """base + merge(parent - base) for every parameter tensor, saved as a full model in ``out``."""
    import torch
    from peft.utils import merge_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merge = getattr(merge_utils, FULL_FUNCTION[recipe.type])
    extra = {"density": recipe.density} if recipe.type in _USES_DENSITY else {}
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, use_safetensors=True)
    parents = [AutoModelForCausalLM.from_pretrained(f, dtype=torch.float32, use_safetensors=True).state_dict()
               for f in folders]
    weights = torch.tensor(recipe.parent_weights(), dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights appear once
            deltas = [parent[name].float() - param for parent in parents]
            param.add_(merge(deltas, weights, **extra).to(param.dtype))
    del parents
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(folders[0]).save_pretrained(out)


def _weights_parameters(folder: Path) -> int | None:
    """Parameters stored in a weights folder (a merged adapter's, or a full model's)."""
    from safetensors import safe_open

    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total if files else None
