"""`curatune compare RUN_DIR CELL_A CELL_B`: two cells (or a cell and the base model) on every
suite, with paired tests on the same items; `curatune compare-runs RUN_A RUN_B`: the same cells
of two runs (a curated-vs-raw ablation), seeds pooled (see docs/analysis.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curatune.errors import CuratuneError
from curatune.evaluate.analysis import MetricTable, compare_cells, load_scores
from curatune.evaluate.analysis.comparisons import (
    SampleItems,
    cells_by_method_size,
    label_family,
    paired_entry,
)
from curatune.evaluate.analysis.inputs import ScoreIndex, SuiteRoles
from curatune.evaluate.analysis.lr_selection import LrSelection, reported_scores, run_selection
from curatune.evaluate.analysis.significance import (
    CANNOT_TELL,
    NOT_TESTED,
    SIGNIFICANT_GAIN,
    SIGNIFICANT_LOSS,
)
from curatune.evaluate.report import analysis_config_of, open_run, paired_draw_summary
from curatune.rundir import RunDir, cell_key, parse_cell_key

LABEL_STYLE = {SIGNIFICANT_GAIN: "green", SIGNIFICANT_LOSS: "red", CANNOT_TELL: "yellow", NOT_TESTED: "dim"}
#: One-character markers of the labels, for tables too narrow for words.
LABEL_MARK = {SIGNIFICANT_GAIN: "▲", SIGNIFICANT_LOSS: "▼", CANNOT_TELL: "?", NOT_TESTED: "–"}


def compare_run_cells(run_dir: str | Path, cell_a: str, cell_b: str, stage: str = "final") -> dict[str, Any]:
    """Cell b against cell a (``base`` for the base model) at ``stage`` on every suite."""
    run = open_run(run_dir)
    config = analysis_config_of(run)
    scores = load_scores(run.scores)
    selection = run_selection(run, config, scores)
    scores = reported_scores(scores, config)
    table = MetricTable(config.metric_directions)
    roles = SuiteRoles.resolve(scores, config, table)
    index = ScoreIndex(scores)
    known = {c["cell"] for c in index.cells} | {index.base_cell()}
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


# ----------------------------------------------------------------------------- two runs


class TwoRunItems:
    """The per-item statistics of two runs behind the one interface ``compare_systems`` reads:
    a cell key ``A:lora-n64-s0`` is that cell of run A, ``B:lora-n64-s0`` of run B."""

    def __init__(self, run_a: RunDir, run_b: RunDir):
        self.sides = {"A": SampleItems(run_a), "B": SampleItems(run_b)}

    def stats(self, suite: str, cell: str, stage: str, metric: str):
        side, key = cell.split(":", 1)
        return self.sides[side].stats(suite, key, stage, metric)

    def references(self, suite: str, cell: str, stage: str):
        side, key = cell.split(":", 1)
        return self.sides[side].references(suite, key, stage)


def compare_runs(run_a: str | Path, run_b: str | Path, stage: str = "final") -> dict[str, Any]:
    """Every (method, size) both runs trained, B against A on every suite both scored: the cells
    of all seeds both runs have, pooled into one system per run and paired by example id (the
    held-out items must be the same), plus each seed's own difference. p-values are adjusted
    over every (method, size, suite) of the comparison together."""
    runs = [open_run(run_a), open_run(run_b)]
    config = analysis_config_of(runs[0])
    table = MetricTable(config.metric_directions)
    every = [load_scores(run.scores) for run in runs]
    own = [config, analysis_config_of(runs[1])]  # each run chooses its rates by its own criterion
    selections = [run_selection(run, c, frame) for run, c, frame in zip(runs, own, every)]
    scores = [reported_scores(frame, c) for frame, c in zip(every, own)]
    indexes = [ScoreIndex(frame) for frame in scores]
    roles = [SuiteRoles.resolve(frame, config, table) for frame in scores]
    groups = [cells_by_method_size(index, selection.compares) for index, selection in zip(indexes, selections)]
    items = TwoRunItems(*runs)
    notes = []
    entries = []
    suites = [s for s in roles[0].task + roles[0].general if s in roles[1].task + roles[1].general]
    for suite in suites:
        metric = roles[0].primary[suite]
        base_values = [index.base(suite, metric) for index in indexes]
        if None not in base_values and not np.isclose(*base_values, rtol=1e-6, atol=1e-9):
            notes.append(f"{suite}: the base model scores {base_values[0]:.4g} in run A and {base_values[1]:.4g} in "
                         "run B: different base models or items, so the runs are not an ablation of one thing")
    for method, size in sorted(set(groups[0]) & set(groups[1])):
        seeds = sorted(set(groups[0][(method, size)]) & set(groups[1][(method, size)]))
        if not seeds:
            continue
        cells = [[groups[side][(method, size)][seed] for seed in seeds] for side in (0, 1)]
        for suite in suites:
            metric = roles[0].primary[suite]

            def stored(cell: str, st: str, suite: str = suite, metric: str = metric) -> float | None:
                side, key = cell.split(":", 1)
                return indexes["AB".index(side)].get(key, st, suite, metric)

            systems = [[(f"{side}:{c}", stage) for c in side_cells] for side, side_cells in zip("AB", cells)]
            if any(stored(cell, st) is None for system in systems for cell, st in system):
                continue
            entry = paired_entry(items, suite, metric, systems[0], systems[1], config.significance, table,
                                 stored=stored)
            entry.update(method=method, size=size, seeds=seeds, suite=suite,
                         role="task" if suite in roles[0].task else "general",
                         per_seed=_per_seed(indexes, suite, metric, stage, cells, seeds))
            entries.append(entry)
    if not entries:
        raise CuratuneError(f"{runs[0].root} and {runs[1].root} have no (method, size, seed) scored on a common "
                            f"suite at stage {stage!r}: nothing to compare")
    label_family(entries, config.significance)
    return {
        "run_a": str(runs[0].root), "run_b": str(runs[1].root), "stage": stage,
        "alpha": config.significance.alpha, "fdr": config.significance.fdr, "entries": entries,
        "paired_draw": {"a": paired_draw_summary(runs[0]), "b": paired_draw_summary(runs[1])}, "notes": notes,
    }


def _per_seed(indexes: list[ScoreIndex], suite: str, metric: str, stage: str,
              cells: list[list[str]], seeds: list[int]) -> dict[int, float | None]:
    """Each seed's B - A of the stored scores (no test: one draw each)."""
    out: dict[int, float | None] = {}
    for seed, cell_a, cell_b in zip(seeds, *cells):
        a, b = indexes[0].get(cell_a, stage, suite, metric), indexes[1].get(cell_b, stage, suite, metric)
        out[seed] = None if a is None or b is None else b - a
    return out


def differing_records(result: dict[str, Any], size: int, seeds: list[int]) -> str:
    """'12, 14, 11' records in which the curated and raw subsets of ``size`` differ per seed, from
    whichever run drew its subsets paired; '—' when neither did."""
    for side in ("a", "b"):
        paired = result["paired_draw"].get(side) or {}
        counts = paired.get("differing_records") or {}
        values = [counts.get(str(seed), {}).get(str(size)) for seed in seeds]
        if any(v is not None for v in values):
            return ", ".join("—" if v is None else str(v) for v in values)
    return "—"


def render_run_comparison(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"B = {result['run_b']} vs A = {result['run_a']} ({result['stage']}): difference = B - A, "
                  "seeds pooled", title_justify="left")
    for name in ("method", "size", "suite", "metric", "A", "B", "difference [95% CI]", "per seed", "test", "p adj.",
                 "verdict for B", "records differing"):
        table.add_column(name, justify="right" if name in ("size", "A", "B", "p adj.") else "left")
    for entry in result["entries"]:
        label = entry["label"]
        table.add_row(
            entry["method"], str(entry["size"]), Text(entry["suite"] + (" (task)" if entry["role"] == "task" else "")),
            Text(f"{entry['metric']} {'↑' if entry['direction'] == 'higher' else '↓'}"),
            fmt(entry["value_a"]), fmt(entry["value_b"]), interval_text(entry), per_seed_text(entry), entry["test"] or "",
            fmt(entry["p_adjusted"], 3), Text(label, style=LABEL_STYLE.get(label, "")),
            differing_records(result, entry["size"], entry["seeds"]),
        )
    console.print(table)
    tested = sum(e["p_adjusted"] is not None for e in result["entries"])
    console.print(f"[dim]p-values adjusted over the {tested} tested (method, size, suite) entries ({result['fdr']}); "
                  f"significant = adjusted p < {result['alpha']:g}. The interval resamples items with the seeds' "
                  "models fixed; 'per seed' shows whether the seeds agree. 'records differing': per seed, records "
                  "in which the curated and the raw subset of that size differ (train.draw: paired).[/dim]")
    for note in result["notes"]:
        console.print(f"[yellow]{escape(note)}[/yellow]", highlight=False)
    for entry in result["entries"]:
        if entry.get("reason"):
            console.print(f"[yellow]{escape(entry['method'])} n={entry['size']} {escape(entry['suite'])}:[/yellow] "
                          f"{escape(entry['reason'])}", highlight=False)


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def interval_text(entry: dict[str, Any]) -> str:
    if entry.get("ci_low") is None:
        return "—"
    return f"{entry['difference']:+.3g} [{entry['ci_low']:+.3g}, {entry['ci_high']:+.3g}]"


def per_seed_text(entry: dict[str, Any]) -> str:
    """A compare-runs entry's per-seed differences, '+0.01, -0.003, ...'."""
    return ", ".join("—" if v is None else f"{v:+.3g}" for v in entry["per_seed"].values())


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
