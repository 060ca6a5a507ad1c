"""How much disk a sweep's weights take, before anything trains (`curatune plan`, sweep start).

Each cell keeps two weights folders, early/ and final/: a full fine-tune the whole model, an
adapter method its trainable parameters, each beside a copy of the tokenizer and configs. The
parameter counts come from the real code path, not a formula per method: the base model is built
from its config on the meta device (no memory, no weights read) and wrapped by the same peft
configs the cells train with, so every method counts what it will save. A resumable trainer
checkpoint (train.checkpoint_steps) adds, while one cell trains, its weights plus AdamW's two
float32 moments per trainable parameter. Merged cells (`curatune merge`) and evaluation files
are not counted.

Checked against real runs: the Multi30k grid's full cells (1,083,169,462 bytes estimated for
early/ + final/, 1,083,233,841 written on average over 36) and LoRA cells (46.1 MB estimated, 45.6 MB
written over 38: the tokenizer copy is estimated from the base folder's files), the demo's LoRA, DoRA, IA3 and prompt-tuning adapters (within 0.3%, the file
headers), and in tests/test_train_disk.py against a tiny model's sweep, where a resumable
checkpoint came out 3% (full) and 56 KB (LoRA: trainer state, scheduler, rng) above the estimate.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curatune.config import ExperimentConfig
from curatune.models import model_config_source
from curatune.rundir import DONE, RunDir
from curatune.train.cell import master_dtype, peft_config, wrap_lora
from curatune.train.plan import grid_specs

#: Weights folders every cell keeps (train.keep_weights = none drops a full fine-tune's, see below).
STAGES_KEPT = ("early", "final")
#: Files of the base model folder that a cell does not copy (its own weights replace them).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".msgpack", ".h5")
ADAM_BYTES_PER_PARAM = 8  # exp_avg and exp_avg_sq in float32


@dataclass
class MethodBytes:
    method: str
    weights: int  # one stage's weights file(s)
    trainable_params: int
    other_files: int  # tokenizer and configs saved beside the weights, per stage

    def stage_bytes(self) -> int:
        return self.weights + self.other_files


@dataclass
class DiskEstimate:
    """Bytes the grid's cells keep, and the extra a training cell needs at its peak."""

    methods: dict[str, MethodBytes]
    cells: dict[str, int]  # method -> its cells to train (methods with none left are left out)
    kept: dict[str, int]  # method -> bytes its cells keep after training
    checkpoint_peak: int  # the most a training cell holds beyond what it keeps (a resumable checkpoint)
    free: int | None  # free bytes where the run directory is (or would be)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.kept.values()) + self.checkpoint_peak

    @property
    def fits(self) -> bool:
        return self.free is None or self.total <= self.free

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total, "free_bytes": self.free, "checkpoint_peak_bytes": self.checkpoint_peak,
                "methods": {m: {"cells": self.cells[m], "kept_bytes": self.kept[m],
                                "stage_bytes": b.stage_bytes(), "trainable_params": b.trainable_params}
                            for m, b in self.methods.items()},
                "notes": self.notes}


def grid_disk_estimate(config: ExperimentConfig, cells: dict[str, int] | None = None,
                       model_path: Path | str | None = None,
                       run_dir: Path | str | None = None) -> tuple[DiskEstimate | None, str | None]:
    """The estimate for ``cells`` (default: the grid's cells not done yet in config.run_dir, whose
    weights already take their space), or None and why not."""
    if cells is None:
        folder = RunDir(run_dir or config.run_dir)
        cells = dict.fromkeys(config.train.methods, 0)
        for spec in grid_specs(config, config.train.sizes):
            if not (spec.path(folder) / DONE).exists():
                cells[spec.method] += 1
    source = model_path or model_config_source(config.model.base)
    if source is None:
        return None, (f"model.base {config.model.base!r} is not on this machine yet, so its size is unknown "
                      "(`curatune models fetch` for the default)")
    try:
        return estimate_disk(config, source, cells, run_dir or config.run_dir), None
    except Exception as exc:  # noqa: BLE001 - an estimate is advice: say why it is missing, never stop the run
        return None, f"cannot count {source}'s parameters: {type(exc).__name__}: {exc}"


def describe(estimate: DiskEstimate, run_dir: Path | str) -> str:
    """One line: what the cells keep, per method, and the free space beside it."""
    parts = [f"{m}: {n} cells x {human_bytes(estimate.kept[m] // n)}" for m, n in estimate.cells.items()]
    if not parts:
        return f"no cell left to train in {run_dir}; free there: {human_bytes(estimate.free)}"
    peak = (f", plus {human_bytes(estimate.checkpoint_peak)} while a cell trains"
            if estimate.checkpoint_peak else "")
    if estimate.notes:
        peak += "; " + "; ".join(estimate.notes)
    return (f"the cells to train keep about {human_bytes(estimate.total)} of weights in {run_dir} ({'; '.join(parts)}{peak}); "
            f"free there: {human_bytes(estimate.free)}")


def estimate_disk(config: ExperimentConfig, model_path: Path | str, cells: dict[str, int],
                  run_dir: Path | str) -> DiskEstimate:
    """The weights ``cells`` (method -> number of cells) keep in ``run_dir``, for the base model at
    ``model_path`` (a local folder, or a hub id whose config.json can be fetched)."""
    cells = {method: n for method, n in cells.items() if n}
    per_method = {method: method_bytes(config, model_path, method) for method in cells}
    kept, peak, notes = {}, 0, []
    for method, b in per_method.items():
        deleted = method == "full" and config.train.keep_weights == "none"
        kept[method] = 0 if deleted else cells[method] * len(STAGES_KEPT) * b.stage_bytes()
        during = b.weights if deleted else 0  # its early/ lives until the evaluate hook has scored it
        if config.train.checkpoint_steps:
            during += b.stage_bytes() + ADAM_BYTES_PER_PARAM * b.trainable_params  # plus trainer state, rng: KB
        peak = max(peak, during)
        if deleted:
            notes.append("train.keep_weights = none: full fine-tunes' weights are deleted once scored")
    return DiskEstimate(per_method, cells, kept, peak, free_bytes(run_dir), notes)


def method_bytes(config: ExperimentConfig, model_path: Path | str, method: str) -> MethodBytes:
    """One stage's weights of a ``method`` cell, counted on a meta-device model (see the module doc)."""
    model = _trainable_on_meta(config, model_path, method)
    # a full fine-tune saves every parameter (tied ones once, as safetensors stores them), an adapter its own
    params = [p for p in model.parameters() if method == "full" or p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() for p in params)
    return MethodBytes(method, weights, trainable, _other_files_bytes(model_path))


def _trainable_on_meta(config: ExperimentConfig, model_path: Path | str, method: str):
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    trust = config.model.trust_remote_code
    model_config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=master_dtype(config), trust_remote_code=trust)
    if method == "full":
        return model
    if method in ("lora", "qlora"):  # QLoRA's adapter is LoRA's; only the frozen base is 4-bit
        return wrap_lora(config, model, quantized=False)
    method_config = peft_config(config, method, model_path)
    if method == "prompt_tuning":  # text init reads embedding values, which a meta model has none of
        method_config.prompt_tuning_init = "RANDOM"
    return get_peft_model(model, method_config)


def _other_files_bytes(model_path: Path | str) -> int:
    """Tokenizer and config files of a local base folder (a cell saves its own copy per stage)."""
    folder = Path(model_path)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.is_file() and not p.name.endswith(_WEIGHT_SUFFIXES) and not p.name.startswith("."))


def free_bytes(run_dir: Path | str) -> int | None:
    """Free bytes on the disk that holds ``run_dir`` (its nearest existing parent)."""
    folder = Path(run_dir).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
