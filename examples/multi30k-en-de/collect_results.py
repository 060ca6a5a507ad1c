"""Copy a finished (or partly finished) Multi30k study run into docs/, with tables of what it measured.

    python examples/multi30k-en-de/collect_results.py runs/multi30k-en-de docs/study-multi30k [runs/multi30k-en-de-raw]

Writes to the output folder:
  scores.parquet, analysis.json   copies of the run's eval/ files (the long-form scores, the analysis)
  report.txt                      `curatune report RUN_DIR`, as the terminal shows it
  results.md                      per-cell tables (task metrics, forgetting suites) and wall times;
                                  with the curation-ablation run (config-raw.yaml) as third argument,
                                  also curated vs raw cell by cell, and how much their subsets overlap;
                                  for a learning-rate grid run (config-lr-grid.yaml), every rate's
                                  validation loss beside its task scores, and LoRA against full at the
                                  selected rates with paired tests (analysis.json's method_comparison),
                                  and, where a rate choice is within seed noise, the same at the runner-up
Only what is in the run directory is reported: cells that did not finish are listed as such.
"""
from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console

from curatune.evaluate.analysis.lr_selection import by_suite, criterion_label, mean_score
from curatune.evaluate.compare import interval_text, per_seed_text
from curatune.evaluate.report import build_report, render_report
from curatune.rundir import RunDir, atomic_write_text, format_lr, parse_cell_key, read_json

TASK_METRICS = [("bleu", "BLEU"), ("chrf", "chrF++"), ("ter", "TER"), ("comet_like", "comet_like")]
FORGETTING = [("arc_easy", "acc_norm"), ("arc_challenge", "acc_norm"), ("piqa", "acc_norm"),
              ("winogrande", "acc"), ("hellaswag", "acc_norm"), ("lambada", "acc"), ("retention", "kl_divergence")]


def _cells(run: RunDir) -> list[dict]:
    plan = read_json(run.plan)
    cells = []
    for cell in plan["cells"]:
        folder = run.root / cell["path"]
        done = folder / "done.json"
        info = read_json(done) if done.exists() else {}
        cells.append({**cell, "done": done.exists(), **{k: info.get(k) for k in
                      ("wall_seconds", "tokens_per_second", "train_tokens", "steps", "final_loss")}})
    return cells


def _fmt(value, digits: int = 2, sign: bool = False) -> str:
    if value is None or pd.isna(value):
        return "—"
    value = value if round(value, digits) != 0 else 0.0  # no "-0.00"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _value(frame: pd.DataFrame, cell: str, suite: str, metric: str):
    """The one score of ``cell`` on suite/metric in ``frame`` (already narrowed to a stage), or None."""
    hit = frame[(frame.cell == cell) & (frame.suite == suite) & (frame.metric == metric)]
    return hit.value.iloc[0] if len(hit) else None


def _table(frame: pd.DataFrame, stage: str, columns: list[tuple[str, str, str, int]]) -> str:
    rows = frame[frame.stage.isin([stage, "base"])]
    keys = rows[["cell", "method", "size"]].drop_duplicates().sort_values(["size", "method"])
    header = "| model | size | " + " | ".join(c[2] for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for _, key in keys.iterrows():
        cells = []
        for suite, metric, _, digits in columns:
            cells.append(_fmt(_value(rows, key.cell, suite, metric), digits))
        lines.append(f"| {_name(key.cell, key.method)} | {key['size'] or ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary(scores: pd.DataFrame, analysis: dict) -> str:
    """One row per model: the task metrics, the mean benchmark drop and the retention KL (final weights)."""
    drops = {(p["method"], p["size"]): p["general_drop"] for p in analysis.get("pareto", [])}
    header = ("| model | size | BLEU | chrF++ | TER ↓ | comet_like | mean drop on the benchmarks (points) "
              "| retention KL ↓ |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = scores[scores.stage.isin(["final", "base"])]
    keys = rows[["cell", "method", "size"]].drop_duplicates().sort_values(["size", "method"])
    for key in keys.itertuples():
        task = [_fmt(_value(rows, key.cell, "task", m), 1 if m != "comet_like" else 3) for m, _ in TASK_METRICS]
        drop = drops.get(("base", 0) if key.cell == "base" else (key.method, key.size))
        lines.append(f"| {_name(key.cell, key.method)} | {key.size or ''} | " + " | ".join(task)
                     + f" | {_fmt(drop)} | {_fmt(_value(rows, key.cell, 'retention', 'kl_divergence'), 3)} |")
    return "\n".join(lines)


def _name(cell: str, method: str) -> str:
    """'base model', 'LoRA', 'full'; a grid cell adds its rate and seed ('LoRA 2e-4 s1')."""
    if cell == "base":
        return "base model"
    name = "LoRA" if method == "lora" else method
    parsed = parse_cell_key(cell)
    return f"{name} {format_lr(parsed.lr)} s{parsed.seed}" if parsed and parsed.lr is not None else name


def _four(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _grid(scores: pd.DataFrame, analysis: dict) -> list[str]:
    """Every rate of the grid: its mean validation loss (what selects) beside its mean task scores on
    the test pairs (what the selection is meant to find), then the methods at their selected rates."""
    selection = analysis.get("lr_selection") or {}
    if not selection.get("active"):
        return []
    finals = scores[scores.stage == "final"]
    label, on_suite = criterion_label(selection), by_suite(selection)
    rule = (f"the highest mean {label} (generated on train/validation.parquet" if on_suite
            else "the lowest validation loss (train/validation.parquet")
    lines = [f"## Learning-rate selection ({label}) against the test scores", "",
             f"Mean over the seeds that finished. The rule picks {rule}, carved from the training pool); the task "
             "columns are the test pairs, shown to check whether the rule picks a rate that also translates best. "
             "✓ = selected.", "",
             "| method | size | rate | seeds | validation loss |" + (f" {label} |" if on_suite else "")
             + " BLEU | chrF++ | TER ↓ | comet_like |",
             "|---|---:|---:|---:|---:|" + ("---:|" if on_suite else "") + "---:|---:|---:|---:|"]
    cells = pd.DataFrame(selection["cells"])
    for choice in selection["selected"]:
        for candidate in choice["candidates"]:
            keys = cells[(cells["method"] == choice["method"]) & (cells["size"] == choice["size"])
                         & (cells["lr"] == candidate["lr"])]["cell"]
            task = []
            for metric, _ in TASK_METRICS:
                values = finals[finals.cell.isin(keys) & (finals.suite == "task") & (finals.metric == metric)].value
                task.append(f"{values.mean():.{3 if metric == 'comet_like' else 1}f} ({len(values)})" if len(values) else "—")
            mark = " ✓" if candidate["lr"] == choice["lr"] else ""
            incomplete = "" if candidate["complete"] else " (incomplete)"
            lines.append(f"| {choice['method']} | {choice['size']} | {format_lr(candidate['lr'])}{mark} | "
                         f"{len(candidate['seeds'])}{incomplete} | {_four(candidate.get('mean_validation_loss'))} | "
                         + (f"{_four(mean_score(candidate))} | " if on_suite else "") + " | ".join(task) + " |")
    methods = analysis.get("method_comparison") or {}
    if methods.get("entries"):
        reference = methods["reference"]
        lines += ["", f"## Methods at their selected rates: each against {reference}", "",
                  f"Difference = method − {reference} in the metric's units, both methods' seeds pooled and the "
                  "test items paired; p adjusted over all rows (Benjamini–Hochberg). For TER and KL lower is "
                  "better, so a 'significant gain' there is a lower value.", "",
                  f"| method (rate) | {reference} (rate) | size | suite | metric | {reference} | method | difference "
                  "[95% CI] | per seed | p adj. | verdict for the method |",
                  "|---|---|---:|---|---|---:|---:|---|---|---:|---|"]
        for e in methods["entries"]:
            provisional = ", provisional" if e.get("provisional") else ""
            rate = {side: f" ({format_lr(e[f'lr_{side}'])}{provisional})" if e.get(f"lr_{side}") is not None else ""
                    for side in "ab"}
            p = "—" if e["p_adjusted"] is None else f"{e['p_adjusted']:.3g}"
            value = {side: "—" if e[f"value_{side}"] is None else f"{e[f'value_{side}']:.4g}" for side in "ab"}
            lines.append(f"| {e['method_b']}{rate['b']} | {e['method_a']}{rate['a']} | {e['size']} | {e['suite']} | "
                         f"{e['metric']} | {value['a']} | {value['b']} | {interval_text(e)} | {per_seed_text(e)} | "
                         f"{p} | {e['label']}{' (' + e['reason'] + ')' if e.get('reason') else ''} |")
    checks = methods.get("runner_up_checks") or []
    if checks:
        lines += ["", "## Where a rate choice is within seed noise: the same comparison at the runner-up rate", "",
                  "The swapped method stands at its runner-up rate instead of the selected one (seeds disagree on "
                  "which validation loss is lower, or a tie); p adjusted over that redone family. 'changes' = the "
                  "verdict at the selected rate differs.", "",
                  "| method (rate) | reference (rate) | size | suite | swapped | difference [95% CI] | per seed | "
                  "verdict at the runner-up | at the selected rate | changes |",
                  "|---|---|---:|---|---|---|---|---|---|---|"]
        for e in checks:
            lines.append(f"| {e['method_b']} ({format_lr(e['lr_b'])}) | {e['method_a']} ({format_lr(e['lr_a'])}) | "
                         f"{e['size']} | {e['suite']} | {e['swapped']}: {format_lr(e['selected_lr'])} → runner-up "
                         f"({e['agreement']}) | {interval_text(e)} | {per_seed_text(e)} | {e['label']} | "
                         f"{e.get('label_at_selected') or '—'} | {'yes' if e.get('verdict_changes') else 'no'} |")
    return lines + [""]


def _unit_seconds(run: RunDir) -> pd.DataFrame:
    rows = []
    for part in (run.eval / "parts").rglob("*.json"):
        data = read_json(part)
        cell, stage = part.stem.split("__")
        rows.append({"suite": part.parent.name, "cell": cell, "stage": stage, "seconds": data.get("seconds")})
    return pd.DataFrame(rows)


def _ablation(run: RunDir, raw: RunDir) -> list[str]:
    """Curated cell vs the raw cell of the same method and size, on what both runs scored."""
    curated, uncurated = (pd.read_parquet(r.scores).query("stage == 'final'") for r in (run, raw))
    subsets, raw_subsets = pd.read_parquet(run.subsets), pd.read_parquet(raw.subsets)
    removed = set(pd.read_parquet(run.removed).id)
    columns = [("task", m, label, 1 if m != "comet_like" else 3) for m, label in TASK_METRICS]
    columns.append(("retention", "kl_divergence", "retention KL", 3))
    lines = ["## Curation ablation: curated vs raw training pairs (final weights)", "",
             f"Raw run: `{raw.root.name}`. Each cell shows curated / raw (raw − curated).", "",
             "| model | size | " + " | ".join(c[2] for c in columns)
             + " | pairs in both subsets | raw pairs curation removes |", "|" + "---|" * (len(columns) + 4)]
    finals = uncurated[["cell", "method", "size", "seed"]].drop_duplicates()
    for key in finals.sort_values(["size", "method"]).itertuples():
        values = []
        for suite, metric, _, digits in columns:
            a, b = (_value(frame, key.cell, suite, metric) for frame in (curated, uncurated))
            delta = f" ({_fmt(b - a, digits, sign=True)})" if a is not None and b is not None else ""
            values.append(f"{_fmt(a, digits)} / {_fmt(b, digits)}{delta}")
        ids = set(subsets[(subsets["size"] == key.size) & (subsets.seed == key.seed)].id)
        raw_ids = set(raw_subsets[(raw_subsets["size"] == key.size) & (raw_subsets.seed == key.seed)].id)
        lines.append(f"| {key.method} | {key.size} | " + " | ".join(values)
                     + f" | {len(ids & raw_ids)} of {len(raw_ids)} | {len(raw_ids & removed)} |")
    return lines + [""]


def main(run_dir: str, out_dir: str, raw_run_dir: str | None = None) -> None:
    run, out = RunDir(run_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()  # the report first: it re-analyses a run whose analysis.json is stale
    render_report(build_report(run.root), Console(file=buffer, width=200, color_system=None, force_terminal=False))
    atomic_write_text(out / "report.txt", buffer.getvalue())
    for name in ("scores.parquet", "analysis.json"):
        if (run.eval / name).exists():
            shutil.copyfile(run.eval / name, out / name)

    scores = pd.read_parquet(run.scores)
    cells = _cells(run)
    curate = read_json(run.root / "curate" / "report.json")
    units = _unit_seconds(run)
    task_cols = [("task", m, label, 1 if m != "comet_like" else 3) for m, label in TASK_METRICS]
    forget_cols = [(s, m, f"{s} {m}", 3) for s, m in FORGETTING]

    lines = [f"# Results of `{run.root.name}` (collected from the run directory)", ""]
    done = [c for c in cells if c["done"]]
    lines += [f"Cells trained: {len(done)} of {len(cells)} planned"
              + (f" (not finished: {', '.join(c['key'] for c in cells if not c['done'])})" if len(done) < len(cells) else ""), ""]
    if run.analysis.exists():
        lines += ["## Summary (final weights)", "", "The mean drop averages the accuracy change "
                  "(base − fine-tuned, in points) over the six benchmarks; negative = a gain.", "",
                  _summary(scores, read_json(run.analysis)), ""]
    if run.analysis.exists():
        lines += _grid(scores, read_json(run.analysis))
    lines += ["## Learning: the task (final weights)", "", _table(scores, "final", task_cols), ""]
    if (scores.stage == "early").any():
        lines += ["## Learning at the early checkpoint (20 % of the steps)", "", _table(scores, "early", task_cols), ""]
    lines += ["## Forgetting: general suites (final weights)", "", _table(scores, "final", forget_cols), ""]
    if raw_run_dir:
        lines += _ablation(run, RunDir(raw_run_dir))
    steps = ", ".join(f"{s['name']} {s.get('seconds') or 0:.1f} s" for s in curate["steps"])
    lines += ["## Wall time", "", f"Curation of {curate['input_records']:,} pairs: "
              f"{sum(s.get('seconds') or 0 for s in curate['steps']):.0f} s ({steps}).", "",
              "| cell | train wall (s) | tokens/s | steps | final loss | evaluation (s) |", "|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        evaluated = units[units.cell == c["key"]].seconds.sum() if len(units) else 0
        lines.append(f"| {c['key']} | {_fmt(c['wall_seconds'], 0)} | {_fmt(c['tokens_per_second'], 0)} | "
                     f"{c['steps'] or '—'} | {_fmt(c['final_loss'])} | {evaluated:.0f} |")
    if len(units):
        base = units[units.cell == "base"]
        lines += ["", f"Base model evaluation: {base.seconds.sum():.0f} s ("
                  + ", ".join(f"{r.suite} {r.seconds:.0f} s" for r in base.itertuples()) + ")."]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    print(f"wrote {out}/results.md, report.txt, scores.parquet, analysis.json")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
