"""`curatune evaluate CONFIG`: score the base model and every trained cell."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from curatune.config import load_config


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        config: Path = typer.Argument(..., help="Experiment YAML file (see `curatune config --defaults`)."),
        run_dir: Optional[Path] = typer.Option(
            None, "--run-dir", help="Run directory to evaluate (default: run_dir from the config)."
        ),
        set_: list[str] = typer.Option(
            [], "--set", help="Override a config key: key.path=value (repeatable), e.g. --set evaluate.limit_heldout=50."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bars; one plain line per scored unit instead (as in a log)."),
        merge_only: bool = typer.Option(
            False, "--merge-only",
            help="Score nothing: rebuild scores.parquet and the analysis from the units already scored "
            "(e.g. after several evaluate processes shared the run, or to look at a partial run).",
        ),
    ) -> None:
        """Score the base model and every trained cell (early and final) on the evaluation suites.

        Suites come from evaluate.suites (default: the target task on the held-out split, plus the data-free retention probe).

        Writes RUN_DIR/eval/scores.parquet (long form: cell, method, size, seed, stage, suite, metric, value, n_items), per-example outputs in RUN_DIR/eval/samples/<suite>/<cell>__<stage>.parquet, metric signatures in RUN_DIR/eval/signatures.json, then the analysis (eval/analysis.json).

        Re-running resumes: finished (model, stage, suite) units are reused; only missing or changed ones are scored.
        """

        overrides = list(set_) + ([f"run_dir={run_dir}"] if run_dir else [])
        cfg = load_config(config, overrides)
        if cfg.task == "classification":
            _evaluate_classification(cfg, no_progress)
            return
        # Imported here: the evaluation stage loads torch and transformers (seconds), which
        # `curatune --help` and every other command should not pay for.
        from curatune.evaluate.runner import run_evaluate

        summary = run_evaluate(cfg, cfg.run_dir, progress=not no_progress, score=not merge_only)
        out = Console(stderr=True)
        for label, error in summary["failed_models"].items():
            out.print(f"[red]not scored: {label}: {error}[/red]")
        out.print(
            f"[green]evaluate: {summary['scored']} units scored, {summary['reused']} reused, "
            f"{summary['score_rows']} score rows in {summary['scores']} ({summary['seconds']} s); "
            f"analysis {summary['analysis']}[/green]"
        )
        if summary["not_scored"]:
            out.print(f"[yellow]{summary['not_scored']} units not scored yet (--merge-only)[/yellow]")
        if summary["failed_models"]:  # scores are incomplete: a script must not take this for success
            out.print("some models could not be scored (see above); repair them and re-run the same command")
            raise typer.Exit(1)


def _evaluate_classification(cfg, no_progress: bool) -> None:
    """task: classification: zero-shot baseline + every cell's predictions -> scores, analysis, paired tests."""
    # Imported here, like the runner above: it loads the analysis and the embedder stack.
    from curatune.classify.evaluate import evaluate_classification

    out = Console(stderr=True)
    summary = evaluate_classification(cfg, cfg.run_dir, progress=None if no_progress else (lambda m: out.print(m)))
    for note in summary["warnings"]:
        out.print(f"[yellow]note:[/yellow] {note}")
    if summary["skipped"]:
        out.print(f"[yellow]not scored (not done): {', '.join(summary['skipped'])}[/yellow]")
    out.print(f"[green]evaluate: {summary['scored']} systems scored, {summary['score_rows']} score rows in "
              f"{summary['scores']}; analysis {summary['analysis']}; paired tests {summary['comparisons']} "
              f"({summary['seconds']} s)[/green]")
