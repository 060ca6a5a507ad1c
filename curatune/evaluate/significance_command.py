"""`curatune compare RUN_DIR CELL_A CELL_B`, `curatune compare-runs RUN_A RUN_B` and `curatune plan
CONFIG`: paired tests between two cells of a run or the same cells of two runs, and the power of
each evaluation suite before a run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from curatune.config import load_config
from curatune.evaluate.analysis.significance import DEFAULT_DISCORDANCE
from curatune.evaluate.compare import (
    compare_run_cells,
    compare_runs,
    render_comparison,
    render_run_comparison,
)
from curatune.rundir import RunDir


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("compare-runs")(compare_runs_command)
    app.command("plan")(plan)


def compare(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    cell_a: str = typer.Argument(..., help="Reference cell key, e.g. full-n400-s0, or 'base'."),
    cell_b: str = typer.Argument(..., help="Cell compared with it, e.g. lora-n400-s0."),
    stage: str = typer.Option("final", "--stage", help="Checkpoint of both cells: final or early."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Paired comparison of two cells on every suite: the difference (B - A) of each suite's
    headline metric with its interval, p-value (adjusted over the suites) and a label.

    Items are paired by example id from eval/samples; accuracy-type metrics use McNemar's exact
    test, corpus BLEU/chrF++/TER sacrebleu's paired bootstrap, other metrics a paired bootstrap.
    """
    if stage not in ("final", "early"):
        raise typer.BadParameter("--stage must be final or early")
    result = compare_run_cells(run_dir, cell_a, cell_b, stage)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    render_comparison(result, Console())


def compare_runs_command(
    run_a: Path = typer.Argument(..., help="Reference run directory, e.g. the curated run of an ablation."),
    run_b: Path = typer.Argument(..., help="Run compared with it, e.g. the raw run (train.data: raw)."),
    stage: str = typer.Option("final", "--stage", help="Checkpoint of the cells: final or early."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Paired comparison of two runs (e.g. curated vs raw): for every method and size both
    trained, run B's cells against run A's on every suite, seeds pooled, items paired by id.

    Shows each seed's own difference and, for a paired draw (train.draw: paired), how many
    training records the two subsets of a size differ in. p-values are adjusted over all entries.
    """
    if stage not in ("final", "early"):
        raise typer.BadParameter("--stage must be final or early")
    result = compare_runs(run_a, run_b, stage)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    render_run_comparison(result, Console())


def plan(
    config: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=value (repeatable)."),
    drop: float = typer.Option(0.02, "--drop", help="A change to detect, in the headline metric's units "
                               "(0.02 = two accuracy points); the table shows the items it needs."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of one test."),
    power: float = typer.Option(0.8, "--power", help="Chance of detecting a change of the MDE."),
    discordance: Optional[float] = typer.Option(
        None, "--discordance", help="Share of items a fine-tuned model answers differently from the base model, "
        f"when the run has none to estimate it from (default {DEFAULT_DISCORDANCE})."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Before spending the compute: per evaluation suite, the smallest change a paired test can
    detect at its item count (MDE), and the items a change of --drop needs; with the sweep's cell
    count. Uses the run directory's per-item results when the run was already evaluated."""
    # Imported here: reading the suites' items goes through the log-likelihood scorers, which load
    # torch (seconds) at import; `curatune --help` and the other commands should not pay for it.
    from curatune.evaluate.power import power_table, sweep_size
    from curatune.train.disk import describe, grid_disk_estimate

    cfg = load_config(config, set_)
    run = RunDir(cfg.run_dir)
    rows = power_table(cfg, run if run.scores.exists() else None, drop=drop, alpha=alpha, power=power,
                       discordance=discordance)
    size = sweep_size(cfg)
    disk, no_disk = grid_disk_estimate(cfg)
    if as_json:
        typer.echo(json.dumps({"sweep": size, "alpha": alpha, "power": power,
                               "suites": [r.to_dict() for r in rows],
                               "disk": disk.to_dict() if disk else {"unknown": no_disk}}, indent=2))
        return
    console = Console()
    table = Table(title=f"Power per suite (paired test, alpha {alpha:g}, power {power:g})", title_justify="left")
    for name in ("suite", "metric", "items", "test", "discordance / sd", "MDE", f"items for a change of {drop:g}", "note"):
        table.add_column(name, justify="right" if name in ("items", "MDE", "discordance / sd") or name.startswith("items for") else "left")
    for row in rows:
        spread = "—" if row.spread is None else f"{row.spread:.3g} ({row.spread_source})"
        table.add_row(row.suite, row.metric or "—", "—" if row.n_items is None else str(row.n_items), row.test,
                      spread, "—" if row.mde is None else f"{row.mde:.3g}",
                      "—" if row.items_for_drop is None else f"{row.items_for_drop:,}", row.note)
    console.print(table)
    grid = "".join(f", {m}: {n} learning rates" for m, n in size["learning_rates"].items())
    console.print(f"sweep: {size['cells']} cells ({len(cfg.train.methods)} methods x {len(cfg.train.sizes)} sizes x "
                  f"{len(cfg.train.seeds)} seeds{grid}), {size['evaluation_units']} evaluation units "
                  f"(model x stage x suite, over {size['suites']} suites)")
    if disk is None:
        console.print(f"disk: {no_disk}")
    else:
        console.print(f"disk: {describe(disk, cfg.run_dir)}")
        if not disk.fits:
            console.print("[yellow]not enough free space for every cell's weights: free space, choose a run_dir on a "
                          "larger disk, or train fewer cells (--only, fewer sizes or seeds)[/yellow]")
    console.print("[dim]MDE: the smallest difference from the base model (metric units; 0.04 = 4 accuracy points) "
                  "a single paired test detects with the given power. With the false-discovery adjustment over "
                  "all cells x suites the detectable change is somewhat larger.[/dim]")
