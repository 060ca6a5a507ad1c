"""The terminal report of a run: what was curated, which cells trained, the scores, and
the analysis (learning vs forgetting, saturation, early vs final).

:func:`build_report` gathers everything from the run directory's files into one plain
dict (what ``curatune report --json`` prints); :func:`render_report` draws it with rich.
The report only reads, with one exception: when eval/analysis.json is missing or older
than eval/scores.parquet it runs :func:`analyze_run` first, which writes the analysis
files (or, in a read-only run directory, keeps the result in memory).
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curatune.config import format_validation_error
from curatune.curate.accounting import curate_accounting
from curatune.curate.audit import AuditSummary, audit_run, table_rows
from curatune.errors import ConfigError, CuratuneError
from curatune.evaluate.analysis import AnalysisConfig, analyze_run, load_scores
from curatune.evaluate.analysis.lr_selection import (
    by_suite,
    criterion_label,
    criterion_title,
    loss_rule_text,
    margin_text,
    mean_score,
    selected_text,
)
from curatune.evaluate.metrics import COMET_LIKE_NOTE
from curatune.rundir import (
    BASE,
    DONE,
    FAILED,
    RunDir,
    cell_key,
    cell_status,
    format_lr,
    not_planned_folders,
    parse_cell_key,
    plan_cell_keys,
    read_json,
    read_json_or_none,
)

# ----------------------------------------------------------------------------- gathering


def open_run(path: str | Path) -> RunDir:
    """The run directory at ``path``, or a CuratuneError saying why it is not one."""
    root = Path(path)
    if not root.exists():
        raise CuratuneError(f"{root}: no such folder")
    if not root.is_dir():
        raise CuratuneError(f"{root}: not a folder; pass a run directory (the run_dir of a config)")
    run = RunDir(root)
    if not run.is_run_dir():
        what = "is empty" if not any(root.iterdir()) else "has no manifest.json"
        raise CuratuneError(
            f"{root} {what}: not a curatune run directory. Stages create one at the config's run_dir "
            "(`curatune curate CONFIG`); pass that folder."
        )
    return run


def _read_json_file(path: Path) -> Any:
    try:
        return read_json(path)
    except json.JSONDecodeError as exc:
        raise CuratuneError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def analysis_config_of(run: RunDir) -> AnalysisConfig:
    """``evaluate.analysis`` from the run's config.yaml; the defaults when absent."""
    if not run.config.exists():
        return AnalysisConfig()
    try:
        raw = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{run.config}: not valid YAML ({exc})") from None
    section = (raw.get("evaluate") or {}).get("analysis") if isinstance(raw, dict) else None
    try:
        return AnalysisConfig.model_validate(section or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{run.config}: evaluate.analysis")) from None


def run_summary(run: RunDir) -> dict[str, Any]:
    manifest = _read_json_file(run.manifest)
    config = manifest.get("config") or {}
    summary: dict[str, Any] = {
        "name": config.get("name"),
        "run_dir": str(run.root),
        "created": manifest.get("created"),
        "updated": manifest.get("updated"),
        "synthetic": bool(manifest.get("synthetic")),
        "stages": manifest.get("stages") or {},
        "curate": None,
        "sweep": sweep_status(run),
        "paired_draw": paired_draw_summary(run),
    }
    if run.curate_report.exists():
        report = _read_json_file(run.curate_report)
        removed = report.get("removed_by_reason") or {}
        summary["curate"] = {
            "input_records": report.get("input_records"),
            "kept": report.get("kept"),
            "removed": int(sum(removed.values())) if removed else 0,
            "removed_by_reason": removed,
            "accounting": curate_accounting(report),
            "audit": _audit(run),
        }
    return summary


def paired_draw_summary(run: RunDir) -> dict[str, Any] | None:
    """train/plan.json's paired draw (train.draw = paired): per seed and size, how many records
    of the curated subset differ from the raw subset of the same size."""
    if not run.plan.exists():
        return None
    plan = _read_json_file(run.plan)
    return plan.get("paired_draw") if isinstance(plan, dict) else None


def _audit(run: RunDir) -> dict[str, Any] | None:
    """Each rule's audited precision (curatune audit); rules without labels say audited: false."""
    summary = audit_run(run)
    return summary.to_dict() if summary is not None else None


def sweep_status(run: RunDir) -> dict[str, Any] | None:
    """Planned cells (train/plan.json) against the cell folders on disk. Folders of cells the plan
    no longer lists (an earlier grid, other sizes) are counted apart, not as done."""
    if not run.train.exists():
        return None
    planned = None
    if run.plan.exists():
        plan = _read_json_file(run.plan)
        planned = plan_cell_keys(plan)
    not_planned = not_planned_folders(run, planned or [])
    outside = set(not_planned)
    done, failed = [], []
    costs: dict[str, list[dict[str, Any]]] = {}
    for cell, folder in run.cell_folders():
        if cell_key(*cell) in outside:
            continue
        status = cell_status(folder)
        if status == "done":
            done.append(cell_key(*cell))
            marker = read_json_or_none(folder / DONE)
            if isinstance(marker, dict):
                costs.setdefault(cell.method, []).append(marker)
        elif status == "failed":
            try:
                error = str(read_json(folder / FAILED).get("error", "")).strip().splitlines()
            except (OSError, ValueError, AttributeError):
                error = ["failed.json unreadable"]
            failed.append({"cell": cell_key(*cell), "error": error[0] if error else ""})
    finished = set(done) | {f["cell"] for f in failed}
    return {
        "planned": len(planned) if planned is not None else None,
        "done": len(done),
        "failed": failed,
        "pending": [c for c in planned if c not in finished] if planned is not None else [],
        "not_planned": not_planned,
        "methods": {method: _method_cost(markers) for method, markers in sorted(costs.items())},
    }


def _method_cost(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """What a method costs, from its done cells: trainable parameters, weights on disk, seconds a cell."""
    def median(key: str) -> float | None:
        values = [m[key] for m in markers if isinstance(m.get(key), (int, float))]
        return float(statistics.median(values)) if values else None

    return {"cells": len(markers), "trainable_parameters": median("trainable_parameters"),
            "weights_bytes": median("weights_bytes"), "train_seconds": median("train_seconds")}


def ensure_analysis(run: RunDir, progress: bool = False) -> dict[str, Any]:
    """eval/analysis.json, recomputed first when it is missing, unreadable, older than
    eval/scores.parquet, or made with other settings than config.yaml's evaluate.analysis."""
    config = analysis_config_of(run)
    if run.analysis.exists() and run.analysis.stat().st_mtime >= run.scores.stat().st_mtime:
        try:
            analysis = read_json(run.analysis)
        except (OSError, json.JSONDecodeError):
            analysis = None  # damaged: recompute
        if isinstance(analysis, dict) and analysis.get("config") == config.model_dump(mode="json"):
            return analysis
    console = Console(stderr=True)
    if progress and console.is_terminal:
        with console.status("analysing eval/scores.parquet ...") as status:
            return _analyze(run, config, lambda label: status.update(f"fitting saturation curves: {label}"))
    return _analyze(run, config, None)


def _analyze(run: RunDir, config: AnalysisConfig, progress) -> dict[str, Any]:
    try:
        return analyze_run(run, config, progress=progress)
    except PermissionError:  # a read-only run directory: show it without saving
        return analyze_run(run, config, progress=progress, write=False)


def score_table(scores: pd.DataFrame, columns: list[tuple[str, str]],
                selected: set[str] | None = None) -> list[dict[str, Any]]:
    """Final-stage scores per (method, size), and per learning rate in a grid run, mean and spread
    over seeds, base model first. ``selected``: the grid cells the learning-rate selection kept (a
    grid row says whether its rate is the selected one)."""
    final = scores[scores["stage"].isin(["base", "final"])].copy()
    # a grid cell's rate from its key; -1 stands for "no grid" so groupby keeps those rows
    final["lr"] = [(lambda p: p.lr if p and p.lr is not None else -1.0)(parse_cell_key(c)) for c in final["cell"]]
    rows = []
    groups = final.groupby(["method", "size", "lr"], sort=False)
    keys = sorted(groups.groups, key=lambda k: (k[0] != BASE, k[0], k[1], k[2]))
    for method, size, lr in keys:
        group = groups.get_group((method, size, lr))
        row: dict[str, Any] = {
            "method": method,
            "size": int(size),
            "lr": None if lr < 0 else float(lr),
            "n_seeds": int(group["cell"].nunique()),
            "scores": {},
        }
        if lr >= 0 and selected is not None:
            row["selected"] = bool(set(group["cell"]) & selected)
        for suite, metric in columns:
            values = group[(group["suite"] == suite) & (group["metric"] == metric)]["value"].dropna()
            if values.empty:
                continue
            row["scores"][f"{suite}/{metric}"] = {
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                "n": int(len(values)),
            }
        rows.append(row)
    return rows


def choose_columns(scores: pd.DataFrame, analysis: dict[str, Any] | None, suite: str | None, metric: str | None) -> list[tuple[str, str]]:
    """Default: every task metric and each general suite's headline metric."""
    pairs = scores[["suite", "metric"]].drop_duplicates().sort_values(["suite", "metric"])
    available = list(pairs.itertuples(index=False, name=None))
    if suite is not None:
        if suite not in {s for s, _ in available}:
            raise CuratuneError(f"--suite {suite}: no such suite in {sorted({s for s, _ in available})}")
        available = [(s, m) for s, m in available if s == suite]
    if metric is not None:
        if metric not in {m for _, m in available}:
            raise CuratuneError(f"--metric {metric}: no such metric; there are {sorted({m for _, m in available})}")
        return [(s, m) for s, m in available if m == metric]
    if suite is not None or analysis is None:
        return available
    roles = analysis["suites"]
    columns = [(s, m) for s in roles["task"] for m in roles["metrics"][s]]
    columns += [(s, roles["primary_metrics"][s]) for s in roles["general"]]
    return columns


def _filter_analysis(analysis: dict[str, Any], suite: str | None, metric: str | None) -> dict[str, Any]:
    def keep(entry: dict[str, Any]) -> bool:
        return (suite is None or entry["suite"] == suite) and (metric is None or entry["metric"] == metric)

    filtered = dict(analysis)
    filtered["saturation"] = [s for s in analysis["saturation"] if keep(s)]
    evf = dict(analysis["early_vs_final"])
    evf["metrics"] = [m for m in evf["metrics"] if keep(m)]
    filtered["early_vs_final"] = evf
    return filtered


def build_report(path: str | Path, suite: str | None = None, metric: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Everything the report shows, as plain data (the --json output)."""
    run = open_run(path)
    report: dict[str, Any] = {
        "run": run_summary(run),
        "columns": [],
        "scores": [],
        "analysis": None,
        "analysis_error": None,
        "evaluated": run.scores.exists(),
    }
    if not run.scores.exists():
        return report
    scores = load_scores(run.scores)
    # Scores of cell folders the plan no longer lists (an earlier grid's rates) stay in scores.parquet;
    # like every comparison, the score table leaves them out (the sweep line counts them apart).
    outside = set((report["run"].get("sweep") or {}).get("not_planned") or [])
    scores = scores[~scores["cell"].isin(outside)]
    analysis = None
    try:
        analysis = ensure_analysis(run, progress=progress)
    except CuratuneError as exc:
        report["analysis_error"] = str(exc)
    columns = choose_columns(scores, analysis, suite, metric)
    report["columns"] = [f"{s}/{m}" for s, m in columns]
    selection = (analysis or {}).get("lr_selection") or {}
    report["scores"] = score_table(scores, columns, set(selection.get("selected_cells") or [])
                                   if selection.get("active") else None)
    report["score_rows"] = int(len(scores))
    if analysis is not None:
        report["analysis"] = _filter_analysis(analysis, suite, metric)
    return report


# ----------------------------------------------------------------------------- rendering


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def render_report(report: dict[str, Any], console: Console) -> None:
    _render_summary(report["run"], console)
    _render_audit((report["run"].get("curate") or {}).get("audit"), console)
    if not report["evaluated"]:
        console.print("\n[yellow]No evaluation yet[/yellow] (eval/scores.parquet missing): run `curatune evaluate CONFIG`.")
        return
    analysis = report["analysis"]
    _render_scores(report, analysis, console)
    if analysis is None:
        console.print(f"\n[bold red]analysis unavailable:[/bold red] {escape(report['analysis_error'])}", highlight=False)
        return
    _render_lr_selection(analysis, console)
    _render_learning_forgetting(analysis, console)
    _render_significance(analysis, console)
    _render_method_comparison(analysis, console)
    _render_runner_up_checks(analysis, console)
    _render_saturation(analysis, console)
    _render_early_vs_final(analysis, console)
    _render_probe_correlations(analysis, console)
    for note in analysis.get("warnings", []):
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"[dim]analysis from eval/analysis.json, generated {analysis.get('generated')}[/dim]")


def _render_summary(summary: dict[str, Any], console: Console) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", f"{escape(str(summary['name'] or '?'))}  [dim]{escape(summary['run_dir'])}[/dim]")
    if summary["synthetic"]:
        grid.add_row("", "[yellow]synthetic test fixture: no model was trained[/yellow]")
    stages = summary["stages"]
    if stages:
        grid.add_row("stages", ", ".join(f"{k} ({'finished' if v.get('finished') else 'started'})" for k, v in stages.items()))
    curate = summary["curate"]
    if curate:
        reasons = sorted(curate["removed_by_reason"].items(), key=lambda kv: -kv[1])
        detail = ", ".join(f"{escape(str(r))} {n}" for r, n in reasons[:5]) + (", ..." if len(reasons) > 5 else "")
        grid.add_row("curate", _accounting_line(curate.get("accounting") or {}, curate) + (f" ({detail})" if detail else ""))
        turns = (curate.get("accounting") or {}).get("turns")
        if turns:
            grid.add_row("", f"turns (messages): {turns['in']} in = {turns['kept']} kept + {turns['removed']} removed "
                             "(by drops and trims)" + _unbalanced(turns))
        grid.add_row("audit", _audit_line(curate.get("audit")))
    else:
        grid.add_row("curate", "[dim]not run[/dim]")
    sweep = summary["sweep"]
    if sweep:
        planned = f" of {sweep['planned']} planned" if sweep["planned"] is not None else ""
        text = f"{sweep['done']} cells done{planned}, {len(sweep['failed'])} failed, {len(sweep['pending'])} pending"
        if sweep.get("not_planned"):
            text += (f"; {len(sweep['not_planned'])} cell folders the plan no longer lists (an earlier grid or sizes), "
                     "left out")
        grid.add_row("sweep", text)
        for failure in sweep["failed"][:5]:
            grid.add_row("", f"[red]failed[/red] {escape(failure['cell'])}: {escape(failure['error'])}")
        if len(sweep["failed"]) > 5:
            grid.add_row("", f"... and {len(sweep['failed']) - 5} more failed cells")
        for i, (method, cost) in enumerate((sweep.get("methods") or {}).items()):
            params, size, seconds = cost["trainable_parameters"], cost["weights_bytes"], cost["train_seconds"]
            grid.add_row("cost per method" if i == 0 else "",
                         f"{escape(method)}: {f'{params:,.0f}' if params is not None else '—'} trainable parameters, "
                         f"{f'{size / 1e6:.2f} MB' if size is not None else '—'} weights, "
                         f"{f'{seconds:.0f} s' if seconds is not None else '—'} training a cell (median of {cost['cells']})")
    else:
        grid.add_row("sweep", "[dim]not run[/dim]")
    paired = summary.get("paired_draw")
    if paired:
        for seed, sizes in paired["differing_records"].items():
            counts = ", ".join(f"n{size}: {n}" for size, n in sizes.items())
            grid.add_row("paired draw" if seed == next(iter(paired["differing_records"])) else "",
                         f"seed {seed}: records differing from the raw subset of the same size: {counts}")
    console.print(grid)


def _accounting_line(accounting: dict[str, Any], curate: dict[str, Any]) -> str:
    """records in = kept + dropped, with the trims among the kept said out loud."""
    records = accounting.get("records") or {"in": curate["input_records"], "kept": curate["kept"],
                                            "dropped": curate["removed"], "kept_trimmed": 0, "holds": None}
    trimmed = records.get("kept_trimmed") or 0
    among = f" ({trimmed} of them trimmed: turns cut, each in the ledger)" if trimmed else ""
    return (f"{records['in']} records in = {records['kept']} kept{among} + {records['dropped']} dropped"
            + _unbalanced(records))


def _unbalanced(counts: dict[str, Any]) -> str:
    return " [red](does not add up: curate/report.json is inconsistent)[/red]" if counts.get("holds") is False else ""


def _audit_line(audit: dict[str, Any] | None) -> str:
    if not audit or not audit.get("audited"):
        return "[dim]not audited (label a sample of each rule's removals: curatune audit RUN_DIR)[/dim]"
    done = [r for r in audit["rules"] if r["audited"]]
    return (f"{len(done)} of {len(audit['rules'])} rules audited, {audit['labels']} labels "
            f"({audit['labels_path']}); precision below")


def _render_audit(audit: dict[str, Any] | None, console: Console) -> None:
    """The per-rule precision table, when any rule has labels."""
    if not audit or not audit.get("audited"):
        return
    summary = AuditSummary.from_dict(audit)
    rows = table_rows(summary)
    table = Table(title="curation rules: precision (right / labelled, Wilson 95% interval) and good records lost")
    for column in rows[0]:
        table.add_column(column, justify="left" if column in ("rule", "labelled") else "right",
                         no_wrap=column == "rule")
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()),
                      style="dim" if row["precision [95% CI]"] == "not audited" else None)
    console.print(table)


def _render_scores(report: dict[str, Any], analysis: dict[str, Any] | None, console: Console) -> None:
    directions = (analysis or {}).get("suites", {}).get("directions", {})
    headers = []
    for column in report["columns"]:
        suite, metric = column.split("/", 1)
        arrow = {"higher": " ↑", "lower": " ↓"}.get(directions.get(metric, ""), "")
        headers.append(f"{suite}\n{metric}{arrow}")
    base_row = next((r for r in report["scores"] if r["method"] == BASE), None)
    with_lr = any(r.get("lr") is not None for r in report["scores"])
    rows = []
    for row in report["scores"]:
        cells = []
        for column in report["columns"]:
            score = row["scores"].get(column)
            if score is None:
                cells.append(Text("—", style="dim"))
                continue
            text = _num(score["mean"]) + (f" ±{_num(score['sd'])}" if score["sd"] is not None else "")
            style = ""
            base = (base_row or {"scores": {}})["scores"].get(column)
            metric = column.split("/", 1)[1]
            if row is not base_row and base is not None and metric in directions:
                sign = 1 if directions[metric] == "higher" else -1
                style = "green" if sign * (score["mean"] - base["mean"]) > 0 else "red"
            cells.append(Text(text, style=style))
        is_base = row["method"] == BASE
        keys = [Text(row["method"]), "" if is_base else str(row["size"]), "" if is_base else str(row["n_seeds"])]
        if with_lr:
            lr = "" if row.get("lr") is None else format_lr(row["lr"]) + (" ✓" if row.get("selected") else "")
            keys.append(lr)
        rows.append((keys, cells, "bold" if is_base else None))
    _print_split_table(console, "Scores (final checkpoint; mean ± sd over seeds)",
                       [("method", "left"), ("size", "right"), ("seeds", "right"), *([("lr", "right")] if with_lr else [])],
                       [(h, "right") for h in headers], rows)
    console.print("[dim]green: better than the base model, red: worse"
                  + ("; ✓ = the selected learning rate of that method and size" if with_lr else "") + "[/dim]")
    if any(column.split("/", 1)[1] == "comet_like" for column in report["columns"]):
        console.print(f"[dim]{escape(COMET_LIKE_NOTE)}[/dim]", highlight=False)


def _print_split_table(console: Console, title: str, key_columns: list[tuple[str, str]],
                       value_columns: list[tuple[str, str]], rows: list[tuple[list, list, str | None]]) -> None:
    """Print a table whose value columns may not fit the terminal: as several tables that each
    repeat the key columns, rather than one whose every column is cut to "…"."""
    def width(header: str, cells: list) -> int:
        texts = [header, *(c.plain if isinstance(c, Text) else str(c) for c in cells)]
        return max(len(line) for t in texts for line in t.split("\n")) + 3  # padding and border

    key_width = sum(width(h, [r[0][i] for r in rows]) for i, (h, _) in enumerate(key_columns)) + 1
    parts, current, used = [], [], key_width
    for i, (header, _) in enumerate(value_columns):
        w = width(header, [r[1][i] for r in rows])
        if current and used + w > console.width:
            parts.append(current)
            current, used = [], key_width
        current.append(i)
        used += w
    parts.append(current)
    for n, part in enumerate(parts, 1):
        suffix = f" ({n}/{len(parts)})" if len(parts) > 1 else ""
        table = Table(title=title + suffix, title_justify="left")
        for header, justify in key_columns:
            table.add_column(header, justify=justify)
        for i in part:
            table.add_column(Text(value_columns[i][0]), justify=value_columns[i][1])
        for keys, values, style in rows:
            table.add_row(*keys, *(values[i] for i in part), style=style)
        console.print()
        console.print(table)


def _render_learning_forgetting(analysis: dict[str, Any], console: Console) -> None:
    pareto = analysis["pareto"]
    if not pareto:
        console.print("\n[dim]Learning vs forgetting: needs base-model and fine-tuned final scores.[/dim]")
        return
    roles = analysis["suites"]
    task = ", ".join(f"{s}/{roles['primary_metrics'][s]}" for s in roles["task"])
    with_lr = any(point.get("lr") is not None for point in pareto)
    keys = [("method", "left"), ("size", "right"), ("seeds", "right"), *([("lr", "right")] if with_lr else [])]
    values = [("task gain\n(pts)", "right"), ("general\ndrop (pts)", "right"), ("Pareto", "center"),
              *[(f"{suite}\n{roles['primary_metrics'][suite]} drop", "right") for suite in roles["general"]]]
    rows = []
    for point in pareto:
        is_base = point["method"] == BASE
        gain = point["task_gain"]
        rows.append(([
            Text(point["method"]),
            "" if is_base else str(point["size"]),
            "" if is_base else str(point["n_seeds"]),
            *([format_lr(point["lr"]) if point.get("lr") is not None else ""] if with_lr else []),
        ], [
            Text(_signed(gain), style="" if gain is None or is_base else ("green" if gain > 0 else "red")),
            _signed(point["general_drop"]),
            ("★" if point["on_frontier"] else "") + ("≈" if point.get("ordering_significant") is False else ""),
            *[_signed(point["forgetting"].get(s), 3) for s in roles["general"]],
        ], "bold" if point["on_frontier"] else None))
    _print_split_table(console, f"Learning vs forgetting (final, mean over seeds; gain on {task}, drops from base)",
                       keys, values, rows)
    axis = pareto[0].get("frontier_axis", "general_drop")
    forgetting = "the general drop" if axis == "general_drop" else f"the {axis} drop (no suite has a points scale)"
    console.print(
        "[dim](pts): 0-100 scale (accuracy points, chrF points; % of base for perplexity-like metrics); the "
        "per-suite drops are base - cell in the metric's own units. "
        f"★ = Pareto frontier of task gain vs {forgetting}: no other row learns more while forgetting less; "
        "≈ = its task gain over the next frontier point below is not significant (paired test).[/dim]"
    )


def _render_lr_selection(analysis: dict[str, Any], console: Console) -> None:
    """The learning rate each (method, size) keeps, with every rate's mean criterion (validation loss
    by default, or a task metric on the validation split)."""
    selection = analysis.get("lr_selection") or {}
    if not selection.get("active"):
        return
    label, on_suite = criterion_label(selection), by_suite(selection)
    table = Table(title=f"Learning-rate selection ({criterion_title(selection)} over seeds)", title_justify="left")
    columns = [("method", "left"), ("size", "right"), ("selected lr", "right"), (label, "right"), ("seeds", "right"),
               ("lead over the runner-up (per seed)", "left"), ("every rate: mean (seeds)", "left")]
    if on_suite:
        columns.append(("validation loss would pick", "right"))
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for choice in selection.get("selected") or []:
        others = "  ".join(
            f"{format_lr(c['lr'])}: {_num(mean_score(c), 4)} ({len(c['seeds'])})"
            + ("" if c["complete"] else " incomplete") for c in choice["candidates"])
        lead = Text(margin_text(choice), style="yellow" if choice.get("agreement") == "seeds disagree" else "")
        row = [choice["method"], str(choice["size"]), selected_text(choice), _num(mean_score(choice), 4),
               str(choice["n_seeds"]), lead, others]
        if on_suite:
            row.append(loss_rule_text(choice))
        table.add_row(*row)
    console.print()
    console.print(table)
    unselected = selection.get("unselected_cells") or []
    console.print(f"[dim]Comparisons below use the selected rate's cells only; {len(unselected)} cells of other "
                  "rates are listed in eval/analysis.json (lr_selection.cells). Lead: how much better the selected "
                  "rate's mean is than the runner-up's, and per seed (each seed trains every rate on the same subset); "
                  "'seeds disagree' = some seed alone prefers the runner-up, so the choice is within seed noise. "
                  "(grid max) / (grid min): the selected rate is an end of the grid, so the best rate may lie beyond "
                  "it." + (" Validation loss would pick: the rate the default rule (lowest mean validation loss) "
                           "chooses among the same rates." if on_suite else "") + "[/dim]")


#: Markers of the significance labels in the report's table.
SIGNIFICANCE_MARKS = {"significant gain": ("▲", "green"), "significant loss": ("▼", "red"),
                      "no detectable change": ("·", ""), "cannot tell": ("?", "yellow"), "not tested": ("–", "dim")}


def significance_cell(entry: dict[str, Any] | None) -> Text:
    """'+1.23 [+0.4, +2.1] ▲' for one (cell, suite): the difference from the base model in the
    metric's units, its interval and the label's marker."""
    if not entry:
        return Text("")
    mark, style = SIGNIFICANCE_MARKS.get(entry.get("label"), ("?", "yellow"))
    if entry.get("difference") is None:
        return Text(mark, style=style)
    return Text(f"{entry['difference']:+.3g} [{entry['ci_low']:+.2g}, {entry['ci_high']:+.2g}] {mark}", style=style)


def _render_significance(analysis: dict[str, Any], console: Console) -> None:
    rows_in = [r for r in analysis["learning_forgetting"] if r["stage"] == "final" and r.get("significance")]
    if not rows_in:
        return
    roles = analysis["suites"]
    suites = [s for s in roles["task"] + roles["general"] if any(s in r["significance"] for r in rows_in)]
    keys = [("cell", "left")]
    values = [(f"{s}\n{roles['primary_metrics'][s]} {'(task)' if s in roles['task'] else ''}".rstrip(), "right")
              for s in suites]
    rows = [([Text(r["cell"])], [significance_cell(r["significance"].get(s)) for s in suites], None) for r in rows_in]
    summary = analysis.get("significance") or {}
    _print_split_table(console, "Paired tests against the base model (final; difference in the metric's units [95% CI])",
                       keys, values, rows)
    console.print(
        f"[dim]▲ significant gain, ▼ significant loss, · no detectable change, ? cannot tell (items differ or "
        f"samples missing), – not tested; p-values adjusted over {summary.get('family_size', '?')} tests "
        f"({summary.get('fdr', '?')}), significant = adjusted p < {summary.get('alpha', 0.05):g}; the intervals are "
        "not adjusted, so one that just excludes 0 may still be ·. "
        "Details per cell: `curatune compare RUN_DIR base CELL`.[/dim]"
    )


def _render_method_comparison(analysis: dict[str, Any], console: Console) -> None:
    """Each method against the reference method (full) at every size, seeds pooled."""
    methods = analysis.get("method_comparison") or {}
    entries = methods.get("entries") or []
    if not entries:
        return
    roles = analysis["suites"]
    suites = [s for s in roles["task"] + roles["general"] if any(e["suite"] == s for e in entries)]
    with_lr = any(e.get("lr_b") is not None for e in entries)
    keys = [("method", "left"), ("size", "right"), ("seeds", "right"),
            *([("lr (method / reference)", "right")] if with_lr else [])]
    values = [(f"{s}\n{roles['primary_metrics'][s]} {'(task)' if s in roles['task'] else ''}".rstrip(), "right")
              for s in suites]
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault((entry["method_b"], entry["size"]), {})[entry["suite"]] = entry
    rows = []
    for (method, size), by_suite in groups.items():
        first = next(iter(by_suite.values()))
        lr = (f"{format_lr(first['lr_b']) if first.get('lr_b') is not None else '—'} / "
              f"{format_lr(first['lr_a']) if first.get('lr_a') is not None else '—'}"
              + (" provisional" if first.get("provisional") else ""))
        rows.append(([Text(method), str(size), str(len(first["seeds"])), *([lr] if with_lr else [])],
                     [significance_cell(by_suite.get(s)) for s in suites], None))
    reference = methods.get("reference")
    _print_split_table(console, f"Methods against {reference} at each size (final, seeds pooled; difference = "
                       f"method - {reference} in the metric's units [95% CI])", keys, values, rows)
    console.print(
        f"[dim]▲ the method is significantly better than {reference} there, ▼ significantly worse (for KL and "
        "other lower-is-better metrics, better = lower), · no detectable change, ? cannot tell. Both methods' "
        "seeds are pooled and items paired; p-values adjusted over these entries together (intervals not "
        "adjusted, so one that just excludes 0 may still be ·). Each seed's own "
        "difference: eval/analysis.json (method_comparison.entries[].per_seed)."
        + (" provisional: a rate or seed of that size is still training (or unscored on the selection suite), so "
           "the selected rate, and this row, may change." if any(e.get("provisional") for e in entries) else "")
        + "[/dim]"
    )


def _render_runner_up_checks(analysis: dict[str, Any], console: Console) -> None:
    """Where a learning-rate choice is within seed noise: the method comparison at the runner-up rate."""
    checks = (analysis.get("method_comparison") or {}).get("runner_up_checks") or []
    if not checks:
        return
    table = Table(title="Doubtful learning-rate choices: the methods compared at the runner-up rate instead "
                        "(final, seeds pooled)", title_justify="left")
    for header, justify in (("method", "left"), ("size", "right"), ("seeds", "right"), ("swapped", "left"),
                            ("suite", "left"), ("at the runner-up rate", "right"), ("at the selected rate", "left"),
                            ("verdict changes", "center")):
        table.add_column(header, justify=justify)
    for entry in checks:
        swapped = (f"{entry['swapped']}: {format_lr(entry['lr_a'] if entry['method_a'] == entry['swapped'] else entry['lr_b'])}"
                   f" for {format_lr(entry['selected_lr'])} ({entry['agreement']})")
        changes = {True: Text("yes", style="bold red"), False: "no", None: "?"}[entry["verdict_changes"]]
        table.add_row(entry["method_b"], str(entry["size"]), str(len(entry["seeds"])), swapped,
                      f"{entry['suite']}/{entry.get('metric')}", significance_cell(entry),
                      entry.get("label_at_selected") or "—", changes)
    console.print()
    console.print(table)
    console.print(
        "[dim]A rate whose lead over the runner-up some seed contradicts ('seeds disagree') or that ties is not "
        "known to be the better one, so the comparison is run again with the runner-up's cells on the suites they "
        "were scored on (p-values adjusted over that redone family). 'verdict changes: yes' = the conclusion "
        "about the methods there depends on a choice the validation loss cannot make.[/dim]"
    )


def _render_saturation(analysis: dict[str, Any], console: Console) -> None:
    rows = analysis["saturation"]
    if not rows:
        return
    table = Table(title="Saturation (fit over sizes, final checkpoint)", title_justify="left")
    for name in ("method", "suite/metric", "model", "R²", "saturation point (95% interval)", "worse than base at", "note"):
        table.add_column(name, justify="right" if name == "R²" else "left")
    for row in rows:
        worse = row["worse_than_base_sizes"]
        confident = set(row["worse_than_base_confident"])
        worse_text = Text(", ".join(f"{n}{'*' if n in confident else ''}" for n in worse), style="red") if worse else Text("—", style="dim")
        table.add_row(
            Text(row["method"]), Text(f"{row['suite']}/{row['metric']}"), row["model"] or "—", _num(row["r2"]),
            saturation_cell(row), worse_text, Text(row["note"] or ""),
        )
    console.print()
    console.print(table)
    # One line per metric: kl_divergence's epsilon differs by series (its scale is the largest value seen).
    epsilons = {r["metric"]: r["epsilon_text"] for r in reversed(rows) if r.get("epsilon_text")}
    threshold = ("; ".join(epsilons[m] for m in sorted(epsilons)) if epsilons
                 else f"{analysis['config']['saturation_epsilon']:g} of the metric's scale")
    console.print(
        "[dim]saturation point: smallest size from which doubling the data gains less than epsilon "
        f"({threshold}); numbers rounded to what the interval supports; "
        "* = worse than base with bootstrap confidence.[/dim]"
    )


#: How each verdict is coloured in the terminal.
VERDICT_STYLES = {"saturated": "green", "range": "", "beyond largest size": "yellow", "not reached": "dim",
                  "not determined": "yellow"}


def saturation_cell(row: dict[str, Any]) -> Text:
    """The verdict in words; analysis.json from before verdicts existed shows point and interval."""
    if row["status"] == "insufficient sizes":
        return Text("insufficient sizes", style="yellow")
    if row.get("saturation_text"):
        return Text(row["saturation_text"], style=VERDICT_STYLES.get(row.get("saturation_verdict") or "", ""))
    point = row["saturation_point"]
    if point is None:
        return Text("not reached" if row["model"] else "—", style="dim")
    lo, hi = row["saturation_point_lo"], row["saturation_point_hi"]
    ci = "" if row["bootstrap"] == "none" or (lo is None and hi is None) else f" ({lo or '—'}–{hi or '>range'})"
    return Text(f"n≈{point}{ci}" + (" (extrap.)" if row["saturation_extrapolated"] else ""))


def _render_early_vs_final(analysis: dict[str, Any], console: Console) -> None:
    evf = analysis["early_vs_final"]
    if not evf["metrics"]:
        return
    table = Table(title="Early checkpoint vs final: does the early score rank cells like the final one?", title_justify="left")
    for name in ("suite/metric", "cells", "Spearman ρ", f"top-{evf['top_k']} overlap", "note"):
        table.add_column(name, justify="right" if name != "suite/metric" and name != "note" else "left")
    for entry in evf["metrics"]:
        overlap = entry["top_k_overlap"]
        table.add_row(
            Text(f"{entry['suite']}/{entry['metric']}" + (" *" if entry.get("primary") else "")),
            str(entry["n_cells"]),
            _num(entry["spearman"]),
            "—" if overlap is None else f"{round(overlap * entry['k'])}/{entry['k']}",
            entry["reason"] or "",
        )
    console.print()
    console.print(table)


def _render_probe_correlations(analysis: dict[str, Any], console: Console) -> None:
    entries = analysis.get("probe_correlations") or []
    if not entries:
        return
    table = Table(title="Do the KL probes predict the benchmark drops? (final cells)", title_justify="left")
    for name in ("probe", "drop on", "cells", "Spearman ρ", "p", "note"):
        table.add_column(name, justify="right" if name in ("cells", "Spearman ρ", "p") else "left")
    for e in entries:
        target = "mean drop (points)" if e["target"] == "general_drop" else f"{e['target']}/{e['target_metric']}"
        table.add_row(Text(e["probe"]), Text(target), str(e["n_cells"]), _num(e["spearman"]), _num(e["p_value"]),
                      Text(e["reason"] or ""))
    console.print()
    console.print(table)
    console.print("[dim]ρ > 0: cells whose next-token distributions drift further from the base model's also "
                  "lose more on the benchmark.[/dim]")


def report_json(report: dict[str, Any]) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, (np.integer, np.floating)):
            return obj.item()
        return str(obj)

    return json.dumps(report, indent=2, ensure_ascii=False, default=default)
