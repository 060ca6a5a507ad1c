"""`curatune demo-data OUT_DIR`: write the generated demo dataset with its flaw labels."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from curatune.data.demo import generate_demo_dataset


def demo_data(
    out_dir: Path = typer.Argument(..., help="Folder to write train.jsonl, heldout.jsonl, labels.jsonl, summary.json."),
    n_train: int = typer.Option(1200, "--n-train", min=1, help="Training rows, planted flaws included."),
    n_heldout: int = typer.Option(100, "--n-heldout", min=0, help="Clean held-out rows (no overlap with train)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
) -> None:
    """Generate the demo product-attribute extraction dataset (alpaca JSONL) with planted flaws."""

    paths = generate_demo_dataset(out_dir, n_train=n_train, n_heldout=n_heldout, seed=seed)
    summary = json.loads(paths.summary.read_text(encoding="utf-8"))
    flaws = ", ".join(f"{k} {v}" for k, v in sorted(summary["flaws"].items()))
    cats = ", ".join(f"{k} {v}" for k, v in summary["categories_train"].items())
    typer.echo(f"train    {paths.train}  ({summary['n_train']} rows; clean {summary['clean_train_rows']})")
    typer.echo(f"heldout  {paths.heldout}  ({summary['n_heldout']} rows, clean)")
    typer.echo(f"labels   {paths.labels}  ({flaws})")
    typer.echo(f"categories (train): {cats}")


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
