"""`curatune compare RUN_DIR CELL_A CELL_B`: two cells (or a cell and the base model) on every
suite, with paired tests on the same items (see docs/analysis.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curatune.errors import CuratuneError
from curatune.evaluate.analysis import MetricTable, compare_cells, load_scores
from curatune.evaluate.analysis.inputs import ScoreIndex, SuiteRoles
from curatune.evaluate.analysis.lr_selection import LrSelection, run_selection
from curatune.evaluate.analysis.significance import (
    CANNOT_TELL,
    NOT_TESTED,
    SIGNIFICANT_GAIN,
    SIGNIFICANT_LOSS,
)
from curatune.evaluate.report import analysis_config_of, open_run
from curatune.rundir import cell_key, parse_cell_key

LABEL_STYLE = {SIGNIFICANT_GAIN: "green", SIGNIFICANT_LOSS: "red", CANNOT_TELL: "yellow", NOT_TESTED: "dim"}
#: One-character markers of the labels, for tables too narrow for words.
LABEL_MARK = {SIGNIFICANT_GAIN: "▲", SIGNIFICANT_LOSS: "▼", CANNOT_TELL: "?", NOT_TESTED: "–"}


def compare_run_cells(run_dir: str | Path, cell_a: str, cell_b: str, stage: str = "final") -> dict[str, Any]:
    """Cell b against cell a (``base`` for the base model) at ``stage`` on every suite."""
    run = open_run(run_dir)
    config = analysis_config_of(run)
    scores = load_scores(run.scores)
    table = MetricTable(config.metric_directions)
    roles = SuiteRoles.resolve(scores, config, table)
    index = ScoreIndex(scores)
    known = {c["cell"] for c in index.cells} | {index.base_cell()}
    selection = run_selection(run)
    notes = []
    cell_a, cell_b = (resolve_grid_cell(cell, known, selection, notes) for cell in (cell_a, cell_b))
    for cell in (cell_a, cell_b):
        if cell not in known:
            raise CuratuneError(f"{run.scores}: no scores for cell {cell!r}; cells there: "
                                f"{', '.join(sorted(known))}")
    if cell_a == cell_b:
        raise CuratuneError("CELL_A and CELL_B are the same cell; name two different cells")
    entries = compare_cells(run, index, roles, table, cell_a, cell_b, config.significance, stage=stage)
    if not entries:
        raise CuratuneError(f"cells {cell_a} and {cell_b} have no suite scored at stage {stage!r} in common")
    return {
        "run_dir": str(run.root), "cell_a": cell_a, "cell_b": cell_b, "stage": stage,
        "alpha": config.significance.alpha, "fdr": config.significance.fdr, "suites": entries, "notes": notes,
    }


def resolve_grid_cell(cell: str, known: set[str], selection: LrSelection, notes: list[str]) -> str:
    """In a learning-rate grid run, a key without a rate (lora-n400-s0) names the cell of the selected
    rate (lora-lr2e-4-n400-s0); naming a rate that was not selected is allowed, and said."""
    parsed = parse_cell_key(cell)
    if parsed is None or not selection.active:
        return cell
    if parsed.lr is None and cell not in known:
        lr = selection.selected_rate(parsed.method, parsed.size)
        if lr is not None:
            resolved = cell_key(parsed.method, parsed.size, parsed.seed, lr)
            notes.append(f"{cell} is {resolved}: the selected learning rate of {parsed.method} at n={parsed.size}")
            return resolved
    elif cell in selection.unselected_cells:
        notes.append(f"{cell} is not the selected learning rate of {parsed.method} at n={parsed.size} "
                     "(the analysis leaves it out of comparisons)")
    return cell


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def interval_text(entry: dict[str, Any]) -> str:
    if entry.get("ci_low") is None:
        return "—"
    return f"{entry['difference']:+.3g} [{entry['ci_low']:+.3g}, {entry['ci_high']:+.3g}]"


def render_comparison(result: dict[str, Any], console: Console) -> None:
    a, b = result["cell_a"], result["cell_b"]
    table = Table(title=f"{b} vs {a} ({result['stage']}): difference = {b} - {a}", title_justify="left")
    for name in ("suite", "metric", a, b, "difference [95% CI]", "test", "p", "p adj.", "verdict for " + b):
        table.add_column(name, justify="right" if name in (a, b, "p", "p adj.") else "left")
    for entry in result["suites"]:
        label = entry["label"]
        table.add_row(
            Text(entry["suite"] + (" (task)" if entry["role"] == "task" else "")),
            Text(f"{entry['metric']} {'↑' if entry['direction'] == 'higher' else '↓'}"),
            fmt(entry["value_a"]), fmt(entry["value_b"]), interval_text(entry), entry["test"] or "",
            fmt(entry["p_value"], 3), fmt(entry["p_adjusted"], 3),
            Text(label, style=LABEL_STYLE.get(label, "")),
        )
    console.print(table)
    console.print(f"[dim]p-values adjusted over the {sum(e['p_adjusted'] is not None for e in result['suites'])} "
                  f"tested suites ({result['fdr']}); significant = adjusted p < {result['alpha']:g}.[/dim]")
    for note in result.get("notes") or []:
        console.print(f"[dim]{escape(note)}[/dim]", highlight=False)
    for entry in result["suites"]:
        if entry.get("reason"):
            console.print(f"[yellow]{escape(entry['suite'])}:[/yellow] {escape(entry['reason'])}", highlight=False)
