"""Read a sweep back: which cells exist, their status, and their models (for evaluation and the app).

    from curatune.train.cells import list_cells, load_cell_model
    for cell in list_cells(run_dir):
        if cell.status == "done":
            model, tokenizer = load_cell_model(cell, "final")

Only reads files; safe to call while a sweep is running (a cell counts as done only once
its done.json, written last, exists).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curatune.errors import ModelError
from curatune.runcheck import cell_repair_hint, damaged_done_marker
from curatune.rundir import RunDir, read_json
from curatune.train.cell import CELL, DONE, FAILED, LOG, read_log


@dataclass
class CellInfo:
    method: str
    size: int
    seed: int
    path: Path
    status: str  # done | failed | running | pending
    done: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    cell: dict[str, Any] | None = field(default=None, repr=False)  # cell.json: settings of the attempt

    @property
    def key(self) -> str:
        return f"{self.method}-n{self.size}-s{self.seed}"

    @property
    def is_adapter(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    def log(self) -> list[dict]:
        return read_log(self.log_path)

    def weights_dir(self, stage: str) -> Path | None:
        """early/ or final/ of a done cell, or None when the cell kept no weights for it."""
        if stage not in ("early", "final"):
            raise ValueError(f"stage must be 'early' or 'final', got {stage!r}")
        if self.done is None:
            return None
        name = (self.done.get("weights") or {}).get(stage)
        return self.path / name if name else None

    @property
    def base_model(self) -> str | None:
        for source in (self.done, self.cell):
            if source and source.get("base_model"):
                return source["base_model"]
        return None

    @property
    def base_model_path(self) -> str | None:
        for source in (self.done, self.cell):
            if source and source.get("base_model_path"):
                return source["base_model_path"]
        return None

    @classmethod
    def from_dir(cls, run_dir: RunDir | str | Path, method: str, size: int, seed: int) -> "CellInfo":
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        path = run_dir.cell(method, size, seed)
        done = _read(path / DONE)
        failed = _read(path / FAILED) if done is None else None
        damage = damaged_done_marker(path)
        if damage:  # a done.json that does not parse is not done: show it as failed, with the repair
            done, failed = None, {"error": f"{damage}; {cell_repair_hint(path)}"}
        cell = _read(path / CELL)
        if done is not None:
            status = "done"
        elif failed is not None:
            status = "failed"
        elif cell is not None:
            status = "running"  # started, not finished: in progress now, or killed
        else:
            status = "pending"
        return cls(method, size, seed, path, status, done, failed, cell)


def _read(path: Path) -> dict | None:
    try:
        return read_json(path)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def list_cells(run_dir: RunDir | str | Path) -> list[CellInfo]:
    """Every cell of train/plan.json with its status (empty before the sweep planned)."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run_dir.plan.exists():
        return []
    plan = read_json(run_dir.plan)
    return [CellInfo.from_dir(run_dir, c["method"], int(c["size"]), int(c["seed"])) for c in plan["cells"]]


def load_cell_model(cell: CellInfo, stage: str = "final", base_model_name: str | None = None,
                    dtype: str = "auto", device: str = "auto"):
    """(model, tokenizer) of a done cell at ``stage``, in eval mode, LoRA merged into the base.

    A LoRA/QLoRA cell loads its base model (``base_model_name``, else the local path
    recorded in done.json, else the recorded name) unquantized and merges the adapter.
    The tokenizer comes from the cell folder: it carries the chat template used in training.
    """
    if cell.status != "done":
        raise ModelError(f"cell {cell.key} is {cell.status}, not done: no weights to load")
    weights = cell.weights_dir(stage)
    if weights is not None and not weights.is_dir():
        raise ModelError(
            f"cell {cell.key}: done.json lists {stage} weights at {weights}, but that folder is missing; "
            f"{cell_repair_hint(cell.path)}"
        )
    if weights is None:
        raise ModelError(
            f"cell {cell.key} kept no {stage} weights (train.keep_weights = none); it was evaluated "
            "during the sweep"
        )
    base = _base_location(cell, base_model_name) if cell.is_adapter else None
    return load_weights_dir(weights, base, dtype=dtype, device=device)


def load_weights_dir(weights: Path, adapter_base: str | None, dtype: str = "auto", device: str = "auto"):
    """(model, tokenizer) from an early/ or final/ folder; ``adapter_base`` for a LoRA adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    # safetensors only, for base, adapter and full weights: pickled .bin weights can run code when loaded
    if adapter_base is not None:
        from peft import PeftModel

        if not (Path(weights) / "adapter_model.safetensors").is_file():
            raise ModelError(f"{weights}: no adapter_model.safetensors (curatune loads safetensors weights only)")
        model = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch_dtype, use_safetensors=True)
        model = PeftModel.from_pretrained(model, weights).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_dtype, use_safetensors=True)
    model.config.use_cache = True
    model.to(device)
    model.eval()
    return model, tokenizer


def _base_location(cell: CellInfo, base_model_name: str | None) -> str:
    from curatune.train.cell import resolve_base_path

    if base_model_name:
        return str(resolve_base_path(base_model_name))
    recorded = cell.base_model_path
    if recorded and Path(recorded).is_dir():
        return recorded
    if cell.base_model:
        return str(resolve_base_path(cell.base_model))
    raise ModelError(f"cell {cell.key}: no base model recorded; pass base_model_name")


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
