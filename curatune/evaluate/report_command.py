"""`curatune report RUN_DIR`: the run's results in the terminal (or as JSON)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from curatune.evaluate.report import build_report, render_report, report_json


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    run_dir: Path = typer.Argument(..., help="A run directory (the run_dir of an experiment config)."),
    suite: Optional[str] = typer.Option(None, "--suite", help="Show only this suite's metrics, fits and agreement."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Show only this metric."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Summarize a run: curation counts, sweep cells, scores, learning vs forgetting (with the
    Pareto frontier), saturation points and early-vs-final agreement.

    Reads the run directory only; when eval/analysis.json is missing or older than
    eval/scores.parquet the analysis is (re)computed and saved first.
    """

    result = build_report(run_dir, suite=suite, metric=metric, progress=not as_json)
    if as_json:
        typer.echo(report_json(result))
        return
    render_report(result, Console())
