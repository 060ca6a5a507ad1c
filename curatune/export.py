"""Take a run's answer somewhere: a cell's weights as a standard folder, the curated data as a dataset.

* :func:`export_cell` writes a transformers folder (full fine-tune, or LoRA merged into its base)
  or a peft adapter folder whose ``adapter_config.json`` names the base model by its hub id (or
  the path the user gave), with a model card filled from the run (:mod:`curatune.model_card`).
* :func:`export_data` writes ``curate/kept.parquet`` as JSONL or a ``datasets`` folder
  (``datasets.load_from_disk``), with a dataset card carrying the curation report.
* :func:`push_folder` uploads either to the Hugging Face hub (``create_repo`` + ``upload_folder``).

Both writers build the folder beside the target and rename it into place, so a killed export
never leaves a half-written folder that looks finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import pandas as pd

from curatune.errors import CuratuneError, ModelError, disk_errors_named
from curatune.model_card import (
    ADAPTER_CONFIG,
    RunFacts,
    base_model_id,
    dataset_card,
    describe_weights_folder,
)
from curatune.models import load_cell_model
from curatune.records import frame_to_records
from curatune.rundir import (
    EARLY,
    FINAL,
    CellInfo,
    RunDir,
    atomic_write_text,
    cell_key,
    parse_cell_key,
)
from curatune.runlock import restore_default_modes
from curatune.terminal import quiet_model_loading
from curatune.virtual_tokens import PROMPT_LEARNING

#: What a weights folder may carry into an export: weights, configs, tokenizer, chat template.
#: The trainer's pickled arguments and optimizer state never leave the run.
_EXPORTED_SUFFIXES = (".safetensors", ".json", ".jinja", ".txt", ".model")
DATA_FORMATS = ("jsonl", "datasets")


@dataclass
class ExportResult:
    folder: Path
    kind: str  # "adapter", "merged", "full" or "dataset"
    base_model: str | None = None
    records: int | None = None
    pushed_to: str | None = None
    cell: str | None = None  # the exported cell's key (a grid run's rate-less key resolved)


@contextlib.contextmanager
def _staged_folder(out: Path, force: bool) -> Iterator[Path]:
    """A fresh temporary folder beside ``out``, renamed to ``out`` when the block succeeds."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise CuratuneError(f"{out}: already exists and is not empty; choose another --out or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with disk_errors_named(out):  # safetensors names a full disk in its own error type
            yield tmp
            restore_default_modes(tmp)  # safetensors writes weights 0600
            if out.exists():
                old = out.with_name(f".{out.name}.export-old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_cell(run_dir: RunDir, key: str) -> CellInfo:
    """The done cell ``key`` names. In a learning-rate grid run a key without a rate
    (lora-n400-s0) names the selected rate's cell, as in `curatune compare`."""
    parsed = parse_cell_key(key)
    if parsed is None:
        raise CuratuneError(f"{key!r}: not a cell key (expected <method>-n<size>-s<seed>, e.g. lora-n400-s0)")
    cell = CellInfo.from_dir(run_dir, *parsed)
    if parsed.lr is None and cell.status == "pending":
        # imported here: the selection loads the whole analysis package (scipy)
        from curatune.evaluate.analysis.lr_selection import run_selection
        from curatune.evaluate.report import analysis_config_of

        selection = run_selection(run_dir, analysis_config_of(run_dir))
        lr = selection.selected_rate(parsed.method, parsed.size) if selection.active else None
        if lr is not None:
            cell = CellInfo.from_dir(run_dir, parsed.method, parsed.size, parsed.seed, lr)
    if cell.status != "done":
        known = sorted(cell_key(*cell) for cell, _ in run_dir.cell_folders())
        hint = f"; cells in this run: {', '.join(known)}" if known else ""
        raise CuratuneError(f"{run_dir.root}: cell {key} is {cell.status}, not done{hint}")
    return cell


def export_cell(run_dir: RunDir | str | Path, key: str, out: str | Path, *, stage: str = FINAL, merge: bool = False,
                base_model: str | None = None, force: bool = False) -> ExportResult:
    """Write one done cell's weights as a standard folder with a model card.

    A LoRA/QLoRA cell is exported as a peft adapter, or with ``merge`` as full weights (the adapter
    merged into its base, loaded unquantized). ``base_model`` overrides the name recorded for the
    base (e.g. the hub id of a local copy)."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run_dir.root.is_dir():
        raise CuratuneError(f"{run_dir.root}: no such run directory")
    if stage not in (EARLY, FINAL):
        raise CuratuneError(f"--stage {stage!r}: use early or final")
    cell = find_cell(run_dir, key)
    weights = cell.weights_dir(stage)
    if weights is None or not weights.is_dir():
        raise CuratuneError(f"cell {key} kept no {stage} weights (train.keep_weights); nothing to export")
    if merge and not cell.is_adapter:
        raise CuratuneError(f"--merge applies to LoRA cells; {key} already holds full weights")
    if merge and cell.method in PROMPT_LEARNING:
        raise CuratuneError(f"--merge: {key} is a {cell.method} cell, whose virtual tokens are a prefix of every "
                            "input, not a weight update; export it without --merge (a peft adapter)")
    base_id = base_model or base_model_id(cell.base_model, cell.base_model_path)
    facts = RunFacts.read(run_dir)
    adapter = cell.is_adapter and not merge
    with _staged_folder(Path(out), force) as tmp:
        if merge:
            _write_merged(cell, stage, tmp)
        else:
            for file in sorted(weights.iterdir()):
                if file.is_file() and file.suffix in _EXPORTED_SUFFIXES:
                    shutil.copy2(file, tmp / file.name)
            if adapter and not (tmp / ADAPTER_CONFIG).exists():
                raise CuratuneError(f"{weights}: no {ADAPTER_CONFIG}; not a peft adapter folder")
        if not adapter:
            _record_base_in_config(tmp, base_id)
        describe_weights_folder(tmp, facts, cell, stage, base_model=base_id, adapter=adapter, merged=merge)
    kind = "adapter" if adapter else ("merged" if merge else "full")
    return ExportResult(Path(out), kind, base_id, cell=cell.key)


def _write_merged(cell: CellInfo, stage: str, folder: Path) -> None:
    try:
        with quiet_model_loading():
            model, tokenizer = load_cell_model(cell, stage, device="cpu")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cell {cell.key}: cannot load its {stage} weights to merge: {exc}") from None
    with quiet_model_loading():  # no per-shard bar from save_pretrained
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _record_base_in_config(folder: Path, base_id: str | None) -> None:
    """config.json's _name_or_path is where the weights were loaded from (a temp or cache path);
    a shared folder should name the base model instead, as the hub's own uploads do."""
    path = folder / "config.json"
    if base_id and path.exists():
        config = json.loads(path.read_text(encoding="utf-8"))
        config["_name_or_path"] = base_id
        atomic_write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def export_data(run_dir: RunDir | str | Path, out: str | Path, *, fmt: Literal["jsonl", "datasets"] = "jsonl",
                force: bool = False) -> ExportResult:
    """Write the curated records (curate/kept.parquet) with a dataset card.

    ``jsonl``: ``train.jsonl`` (one record per line: id, messages, category, source, meta), which
    curatune and the hub's dataset viewer both read. ``datasets``: a ``save_to_disk`` folder."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if fmt not in DATA_FORMATS:
        raise CuratuneError(f"--format {fmt!r}: use {' or '.join(DATA_FORMATS)}")
    if not run_dir.kept.exists():
        raise CuratuneError(f"{run_dir.kept}: not found; run `curatune curate` first")
    records = frame_to_records(pd.read_parquet(run_dir.kept))
    rows = [r.to_row() for r in records]
    facts = RunFacts.read(run_dir)
    with _staged_folder(Path(out), force) as tmp:
        if fmt == "jsonl":
            with open(tmp / "train.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            files = "`train.jsonl` (one record per line)"
        else:
            # datasets is imported here: it takes seconds to import and only this export needs it.
            import datasets

            datasets.Dataset.from_list(rows).save_to_disk(str(tmp))
            files = "a `datasets` folder (load it with `datasets.load_from_disk`)"
        atomic_write_text(tmp / "README.md", dataset_card(facts, len(rows), files))
    return ExportResult(Path(out), "dataset", records=len(rows))


def push_folder(folder: str | Path, repo_id: str, *, repo_type: Literal["model", "dataset"] = "model",
                private: bool = False, token: str | None = None) -> str:
    """Upload a folder to the hub: create the repository if needed, then one commit of every file.
    Returns the repository's URL. The token comes from ``token``, HF_TOKEN or `hf auth login`."""
    from huggingface_hub import HfApi  # only pushing needs it

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                          commit_message="Upload from curatune export")
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types (auth, network, name); say which
        raise CuratuneError(f"push to the hub as {repo_id} ({repo_type}) failed: {type(exc).__name__}: {exc}. "
                            f"The exported folder is complete in {folder}; push it later with "
                            "`hf upload` or re-run with --push-to-hub") from None
    return str(url)
