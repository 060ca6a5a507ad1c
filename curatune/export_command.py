"""`curatune export` (a cell's weights) and `curatune export-data` (the curated set)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from curatune.errors import CuratuneError
from curatune.export import DATA_FORMATS, export_cell, export_data, push_folder
from curatune.rundir import FINAL

console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        run_dir: Path = typer.Argument(..., help="Run directory."),
        cell: str = typer.Argument(..., help="Cell key, e.g. lora-n400-s0 (see `curatune report RUN_DIR`)."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must not exist or be empty, unless --force)."),
        merge: bool = typer.Option(False, "--merge", help="LoRA cells: merge the adapter into the base and write full weights."),
        stage: str = typer.Option(FINAL, "--stage", help="final (default) or early weights."),
        base_model: Optional[str] = typer.Option(None, "--base-model", help="Name to record for the base model (default: the hub id or path the run used)."),
        push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Also upload the folder to this hub repository (org/name)."),
        private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repository private."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
    ) -> None:
        """Write a cell's weights as a standard transformers or peft folder with a model card from the run."""
        result = export_cell(run_dir, cell, out, stage=stage, merge=merge, base_model=base_model, force=force)
        what = {"adapter": "peft adapter", "merged": "LoRA merged into full weights", "full": "full weights"}[result.kind]
        if result.cell != cell:
            console.print(f"{cell} is {result.cell}: the selected learning rate of its method and size")
        console.print(f"wrote {result.folder}: {what} of {result.cell} ({stage}), base model {result.base_model}, "
                      "model card README.md")
        if push_to_hub:
            url = push_folder(result.folder, push_to_hub, repo_type="model", private=private)
            console.print(f"pushed to {url}")

    @app.command("export-data")
    def export_data_command(
        run_dir: Path = typer.Argument(..., help="Run directory (curate/kept.parquet is exported)."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must not exist or be empty, unless --force)."),
        fmt: str = typer.Option("jsonl", "--format", "-f", help=f"{' or '.join(DATA_FORMATS)} (a datasets.load_from_disk folder)."),
        push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Also upload the folder to this hub dataset repository (org/name)."),
        private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repository private."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty --out folder."),
    ) -> None:
        """Write the curated records as JSONL or a datasets folder, with a dataset card carrying the curation report."""
        if fmt not in DATA_FORMATS:
            raise CuratuneError(f"--format {fmt!r}: use {' or '.join(DATA_FORMATS)}")
        result = export_data(run_dir, out, fmt=fmt, force=force)  # type: ignore[arg-type]
        console.print(f"wrote {result.folder}: {result.records} curated records ({fmt}) and README.md")
        if push_to_hub:
            url = push_folder(result.folder, push_to_hub, repo_type="dataset", private=private)
            console.print(f"pushed to {url}")
