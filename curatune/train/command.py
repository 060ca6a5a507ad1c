"""`curatune sweep`: fine-tune every (method, size, seed) cell of the grid."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from curatune.classify.sweep import plan_classification, run_classification_sweep
from curatune.config import format_validation_error, load_config
from curatune.errors import ConfigError
from curatune.rundir import RunDir, list_cells
from curatune.train.merge import run_merges
from curatune.train.merge_config import MergeRecipe
from curatune.train.plan import plan_sweep
from curatune.train.sweep import run_sweep

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_command(
        config: Path = typer.Argument(..., help="Experiment YAML file (see `curatune config --defaults`)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory; overrides run_dir of the config."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value (repeatable), "
                                       "e.g. --set train.sizes=[50,100]."),
        executor: Optional[str] = typer.Option(None, "--executor", help="local (one cell after another, default) "
                                               "or ray (cells on a Ray cluster); overrides train.executor."),
        only: list[str] = typer.Option([], "--only", help="Run only this method (repeatable): full, lora, qlora. "
                                       "The plan still lists the whole grid."),
        plan_only: bool = typer.Option(False, "--plan", help="Write the held-out split, subsets and plan, "
                                       "print the grid, train nothing."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bars; one plain line per finished cell instead (as in a log)."),
    ) -> None:
        """Fine-tune the grid sizes x methods x seeds on nested subsets of the curated data (or the raw data with train.data=raw).

        Each cell goes to RUN_DIR/train/<method>/n<size>/s<seed>/ with train_log.jsonl, an early checkpoint (early/), the final weights (final/) and done.json, written last. Re-running skips finished cells and restarts (or, with train.checkpoint_steps, resumes) interrupted ones; a cell that fails is recorded in failed.json and the sweep goes on. Exit status: 0 all cells done, 1 some cells failed, 2 bad input.
        """
        overrides = list(set_)
        if run_dir is not None:
            overrides.append(f"run_dir={run_dir}")
        if executor is not None:
            if executor not in ("local", "ray"):
                raise ConfigError(f"--executor {executor!r}: expected local or ray")
            overrides.append(f"train.executor={executor}")
        cfg = load_config(config, overrides)
        rd = RunDir(cfg.run_dir)
        if cfg.task == "classification":
            _classification_sweep(cfg, rd, only, plan_only, no_progress)
            return
        if plan_only:
            plan = plan_sweep(cfg, rd)
            for note in plan.notes:
                console.print(f"[yellow]note:[/] {note}")
            console.print(f"{len(plan.specs)} cells; training pool {plan.pool_size} records, "
                          f"held-out {plan.heldout_size}; plan written to {rd.plan}")
            _print_cells(rd)
            return

        summary = run_sweep(cfg, rd, only=only or None, progress=not no_progress)
        merged = run_merges(cfg, rd, progress=not no_progress) if cfg.merge.recipes else {"failed": {}}
        for note in summary["notes"]:
            console.print(f"[yellow]note:[/] {note}")
        _print_cells(rd)
        console.print(
            f"{summary['cells_done']}/{summary['cells_total']} cells done "
            f"({len(summary['ran'])} trained now, {len(summary['already_done'])} already done), "
            f"{len(summary['failed'])} failed, in {summary['wall_seconds']:.0f} s"
        )
        failed = {**summary["failed"], **merged["failed"]}
        if failed:
            for key, error in failed.items():
                console.print(f"[red]failed[/] {key}: {error}", highlight=False)
            console.print("re-run the same command to retry failed cells")
            raise typer.Exit(1)

    @app.command("merge")
    def merge_command(
        run_dir: Path = typer.Argument(..., help="A run directory whose sweep has finished cells."),
        config: Optional[Path] = typer.Option(None, "--config", help="Experiment YAML whose merge: section to "
                                              "build; default RUN_DIR/config.yaml."),
        type_: Optional[str] = typer.Option(None, "--type", help="Build one merge instead of the config's: "
                                            "task_arithmetic, ties, dare_linear, dare_ties or scaled."),
        parents: Optional[str] = typer.Option(None, "--parents", help="With --type: comma-separated cell keys, "
                                              "e.g. lora-n128-s0,lora-n128-s1."),
        weights: Optional[str] = typer.Option(None, "--weights", help="With --type: comma-separated weights, one per parent."),
        density: Optional[float] = typer.Option(None, "--density", help="With --type: fraction kept by ties / dare."),
        scale: Optional[float] = typer.Option(None, "--scale", help="With --type scaled: the update's scale."),
        name: Optional[str] = typer.Option(None, "--name", help="With --type: the merged cell's method name."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress lines."),
    ) -> None:
        """Build merged cells from finished ones (task arithmetic, TIES, DARE, scaled LoRA), as the merge: section of the config says, or one given with --type.

        Each merged cell is a cell like a trained one, in RUN_DIR/train/<method>+<merge>/n<size>/s<seed>/ with early/, final/, done.json and recipe.json (parents, type, weights, density); `curatune evaluate` scores it and the report and the app show it beside its parents. Exit status: 0 all built, 1 some failed, 2 bad input.
        """
        cfg = load_config(config or RunDir(run_dir).config, [f"run_dir={run_dir}"])
        recipes = None
        if type_ is not None:
            recipes = [_recipe_from_flags(type_, parents, weights, density, scale, name)]
        elif parents or weights or density is not None or scale is not None or name:
            raise ConfigError("--parents, --weights, --density, --scale and --name describe a merge given with --type")
        if recipes is None and not cfg.merge.recipes:
            raise ConfigError(f"{config or RunDir(run_dir).config}: no merge.recipes; add some, or give one with --type")
        summary = run_merges(cfg, RunDir(run_dir), recipes, progress=not no_progress)
        _print_cells(RunDir(run_dir))
        console.print(f"{len(summary['done'])} merged cells built, {len(summary['skipped'])} already there, "
                      f"{len(summary['failed'])} failed")
        if summary["failed"]:
            for key, error in summary["failed"].items():
                console.print(f"[red]failed[/] {key}: {error}", highlight=False)
            raise typer.Exit(1)


def _recipe_from_flags(type_: str, parents: str | None, weights: str | None, density: float | None,
                       scale: float | None, name: str | None) -> MergeRecipe:
    raw: dict = {"type": type_, "parents": [p.strip() for p in (parents or "").split(",") if p.strip()]}
    if weights:
        try:
            raw["weights"] = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError(f"--weights {weights!r}: expected comma-separated numbers") from None
    for key, value in (("density", density), ("scale", scale), ("name", name)):
        if value is not None:
            raw[key] = value
    try:
        return MergeRecipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "curatune merge")) from None


def _classification_sweep(cfg, rd: RunDir, only: list[str], plan_only: bool, no_progress: bool) -> None:
    """task: classification: SetFit and frozen-embedder cells per size per class (curatune.classify)."""
    if plan_only:
        _, split, specs = plan_classification(cfg, rd)
        console.print(f"{len(specs)} cells; classes {split.classes}; pool {len(split.pool)} examples, "
                      f"test {len(split.test)}; plan written to {rd.plan}")
        _print_cells(rd)
        return
    report = None if no_progress else (lambda key: console.print(f"training {key}", highlight=False))
    summary = run_classification_sweep(cfg, rd, only=only or None, progress=report)
    _print_cells(rd)
    console.print(f"{summary['cells_done']}/{summary['cells_total']} cells done ({len(summary['ran'])} trained now, "
                  f"{len(summary['already_done'])} already done), {len(summary['failed'])} failed, "
                  f"in {summary['wall_seconds']:.0f} s")
    if summary["failed"]:
        for key, error in summary["failed"].items():
            console.print(f"[red]failed[/] {key}: {error}", highlight=False)
        raise typer.Exit(1)


def _print_cells(run_dir) -> None:
    table = Table("cell", "status", "examples", "steps", "final loss", "tokens/s", "wall s", "trainable", "weights MB")
    for cell in list_cells(run_dir):
        d = cell.done or {}
        loss = d.get("final_loss")
        table.add_row(
            cell.key, cell.status, str(d.get("train_examples", "")), str(d.get("steps", "")),
            f"{loss:.4f}" if isinstance(loss, (int, float)) else "",
            f"{d['tokens_per_second']:.0f}" if d.get("tokens_per_second") else "",
            f"{d['wall_seconds']:.1f}" if d.get("wall_seconds") else "",
            f"{d['trainable_parameters']:,}" if d.get("trainable_parameters") else "",
            f"{d['weights_bytes'] / 1e6:.2f}" if d.get("weights_bytes") else "",
        )
    console.print(table)
