"""SetFit vs the frozen-embedder head vs zero-shot on real classification tasks, 8 to 64 per class.

The tasks are T0 prompt templates of the self-instruct fine-tuning data (../shared/data, see
shared/DATA.md): each template file holds 200 rows of its source dataset as prompt/completion;
curatune's classification loader strips the template (the text every row shares) and the
end-of-text marker, leaving (text, label). Nothing is copied into the repository.

Runs `curatune sweep` and `curatune evaluate` (task: classification) through the Python API on the
embedded all-MiniLM-L6-v2, then writes bench/results/setfit_<task>.{md,json} with the scores,
the paired tests (eval/classification.json) and the time of every cell, and an SVG of the
saturation curves to docs/images/.

    nice -n 10 python bench/setfit_real.py [--tasks amazon_polarity ag_news] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curatune.classify.evaluate import evaluate_classification  # noqa: E402
from curatune.classify.sweep import run_classification_sweep  # noqa: E402
from curatune.config import validate_config  # noqa: E402
from curatune.rundir import RunDir, list_cells, read_json  # noqa: E402

TEMPLATES = REPO.parent / "shared" / "data" / "instruct" / "self_instruct" / "data" / "finetuning" / "t0_train_50k" / \
    "data_per_template"
#: task -> (template file, test examples per class, zero-shot template). The test split is what
#: the 200 rows leave after the 64-per-class pool of the smallest class (89 negative reviews; 78
#: business articles).
TASKS = {
    "amazon_polarity": ("amazon_polarity_Is_this_review.jsonl", 25, "This product review is {label}."),
    "ag_news": ("ag_news_classify.jsonl", 14, "This news article is about {label}."),
}


def run_task(task: str, seeds: list[int], sizes: list[int], out_root: Path, setfit: dict,
             evaluate_only: bool = False, methods: tuple[str, ...] = ("setfit", "logreg")) -> dict:
    file, per_class, template = TASKS[task]
    run_dir = out_root / task
    config = validate_config({
        "task": "classification", "name": f"setfit-{task}", "run_dir": str(run_dir),
        "model": {"embedder": "default", "device": "cpu"},
        "data": {"sources": [{"path": str(TEMPLATES / file)}]},
        "classify": {"sizes_per_class": sizes, "seeds": seeds, "heldout_per_class": per_class,
                     "zero_shot_template": template, "suite": task, "setfit": setfit,
                     "methods": list(methods)},
    })
    load_before = os.getloadavg()
    started = time.perf_counter()
    sweep = {"embed_seconds": None}
    if not evaluate_only:  # --evaluate-only: score the cells a stopped sweep finished
        sweep = run_classification_sweep(config, run_dir, progress=lambda key: print(f"[{task}] {key}", flush=True))
    sweep_seconds = time.perf_counter() - started
    evaluation = evaluate_classification(config, run_dir)
    rd = RunDir(run_dir)
    cells = [{"cell": c.key, "method": c.method, "size_per_class": c.size, "seed": c.seed, "status": c.status,
              **{k: (c.done or {}).get(k) for k in ("wall_seconds", "train_seconds", "predict_seconds", "pairs",
                                                    "steps", "train_examples")}} for c in list_cells(rd)]
    scores = pd.read_parquet(rd.scores)
    plan = read_json(rd.plan)
    comparisons = read_json(rd.classification)
    analysis = read_json(rd.analysis)
    return {
        "task": task, "file": file, "classes": plan["classes"], "class_counts": plan["class_counts"],
        "test_examples": plan["heldout_size"], "pool_examples": plan["pool_size"], "template": plan["fields"],
        "seeds": seeds, "sizes_per_class": sizes, "zero_shot_template": template,
        "setfit_settings": config.classify.setfit.model_dump(),
        "sweep_seconds": sweep_seconds, "embed_seconds_frozen": sweep["embed_seconds"],
        "evaluate_seconds": evaluation["seconds"], "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "cells": cells,
        "scores": scores.to_dict(orient="records"), "comparisons": comparisons["comparisons"],
        "saturation": [{k: s.get(k) for k in ("method", "metric", "sizes", "means", "model", "saturation_point",
                                                "saturation_text")} for s in analysis["saturation"]],
        "zero_shot": comparisons["zero_shot"],
    }


def markdown(result: dict) -> str:
    scores = pd.DataFrame(result["scores"])
    table = scores.groupby(["method", "size", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    lines = [f"# SetFit on {result['task']} ({result['file']})", "",
             f"Classes and rows after template stripping: {result['class_counts']}; test split "
             f"{result['test_examples']} examples (balanced), pool {result['pool_examples']}. Seeds {result['seeds']}.",
             f"Zero-shot prompts: {result['zero_shot']['prompts']}. SetFit settings: {result['setfit_settings']}.", "",
             f"Machine load (1/5/15-min averages, 2 shared cores): before {result['load_average_before']}, "
             f"after {result['load_average_after']}. Sweep {result['sweep_seconds']:.0f} s (0 with --evaluate-only), evaluate "
             f"{result['evaluate_seconds']:.0f} s (frozen embeddings of pool + test: {result['embed_seconds_frozen'] or 0:.1f} s).",
             "", "## Scores on the test split (mean over seeds, std)", "",
             "| method | per class | accuracy | macro-F1 |", "|---|---|---|---|"]
    for (method, size), group in table.groupby(["method", "size"]):
        row = {r["metric"]: r for _, r in group.iterrows()}
        fmt = lambda m: f"{row[m]['mean']:.3f}" + (f" ± {row[m]['std']:.3f}" if row[m]["count"] > 1 else "")  # noqa: E731
        lines.append(f"| {'zero-shot' if method == 'base' else method} | {size or '-'} | {fmt('acc')} | {fmt('macro_f1')} |")
    lines += ["", "## Paired tests, seeds pooled (95% interval of the difference; p adjusted by Benjamini-Hochberg "
              "over every test of the run)", "",
              "| method | per class | against | metric | test | difference | interval | p adj. | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in result["comparisons"]:
        if e["seeds"] != "pooled" or e.get("difference") is None:
            continue
        lines.append(f"| {e['method']} | {e['size']} | {e['against']} | {e['metric']} | {e['test']} | "
                     f"{e['difference']:+.3f} | [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] | {e['p_adjusted']:.3g} | "
                     f"{e['label']} |")
    per_seed = [e for e in result["comparisons"] if e["seeds"] != "pooled" and e["metric"] == "acc"
                and e.get("difference") is not None]
    lines += ["", "Per seed, accuracy by McNemar's exact test (Agresti-Min interval):", "",
              "| cell | against | difference | interval | p adj. | verdict |", "|---|---|---|---|---|---|"]
    for e in per_seed:
        lines.append(f"| {e['method']}-n{e['size']}-s{e['seeds']} | {e['against']} | {e['difference']:+.3f} | "
                     f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}] | {e['p_adjusted']:.3g} | {e['label']} |")
    lines += ["", "## Time per cell (wall seconds, includes loading the embedder for setfit cells)", "",
              "| cell | examples | contrastive pairs | steps | train s | predict s | wall s |", "|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        lines.append(f"| {c['cell']} | {c['train_examples']} | {c['pairs'] or '-'} | {c['steps'] or '-'} | "
                     f"{(c['train_seconds'] or 0):.1f} | {(c['predict_seconds'] or 0):.1f} | {(c['wall_seconds'] or 0):.1f} |")
    lines += ["", "## Saturation fits (analysis.json)", "", "| method | metric | sizes | means | model | verdict |",
              "|---|---|---|---|---|---|"]
    for s in result["saturation"]:
        means = ", ".join(f"{m:.3f}" for m in s["means"])
        verdict = s.get("saturation_text") or ""
        lines.append(f"| {s['method']} | {s['metric']} | {s['sizes']} | {means} | {s['model']} | {verdict} |")
    return "\n".join(lines) + "\n"


COLOURS = {"setfit": "#d62728", "logreg": "#1f77b4", "base": "#7f7f7f"}


def svg_curve(result: dict, metric: str = "acc", width: int = 420, height: int = 300) -> str:
    """The saturation curve as a small SVG (no plotting library is installed here): mean over
    seeds per size per class, log2 x axis, zero-shot as a dashed line."""
    scores = pd.DataFrame(result["scores"])
    scores = scores[scores["metric"] == metric]
    sizes = sorted(int(s) for s in scores.loc[scores["method"] != "base", "size"].unique())
    if not sizes:
        return ""
    left, right, top, bottom = 50, 110, 30, 40
    lo = min(0.4, float(scores["value"].min()) - 0.05)
    x_of = {s: left + (width - left - right) * (i / max(len(sizes) - 1, 1)) for i, s in enumerate(sizes)}

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (1 - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="18" font-size="13">{result["task"]}: {metric} vs examples per class</text>']
    for tick in [t / 10 for t in range(11) if t / 10 >= lo]:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    for s in sizes:
        parts.append(f'<text x="{x_of[s]:.1f}" y="{height - bottom + 16}" text-anchor="middle">{s}</text>')
    base = scores.loc[scores["method"] == "base", "value"]
    if len(base):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(base.iloc[0]):.1f}" y2="{y(base.iloc[0]):.1f}" '
                     f'stroke="{COLOURS["base"]}" stroke-dasharray="5,4"/><text x="{width - right + 6}" '
                     f'y="{y(base.iloc[0]) + 4:.1f}" fill="{COLOURS["base"]}">zero-shot</text>')
    for method in ("logreg", "setfit"):
        points = scores[scores["method"] == method].groupby("size")["value"]
        if not len(points):
            continue
        means = points.mean()
        path = " ".join(f"{x_of[int(s)]:.1f},{y(v):.1f}" for s, v in means.items())
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[method]}" stroke-width="2"/>')
        for s, values in points:
            for v in values:  # every seed as a dot
                parts.append(f'<circle cx="{x_of[int(s)]:.1f}" cy="{y(v):.1f}" r="2.5" fill="{COLOURS[method]}"/>')
        last = means.index[-1]
        parts.append(f'<text x="{x_of[int(last)] + 6:.1f}" y="{y(means.iloc[-1]) + 4:.1f}" '
                     f'fill="{COLOURS[method]}">{method}</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--num-iterations", type=int, default=20, help="classify.setfit.num_iterations")
    parser.add_argument("--max-length", type=int, default=256, help="classify.setfit.max_length")
    parser.add_argument("--methods", nargs="+", default=["setfit", "logreg"], help="classify.methods")
    parser.add_argument("--evaluate-only", action="store_true", help="score what an earlier run finished")
    parser.add_argument("--out", type=Path, default=Path("/tmp/curatune-setfit-bench"))
    args = parser.parse_args()
    if not TEMPLATES.is_dir():
        sys.exit(f"real data not found at {TEMPLATES} (see shared/DATA.md)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for task in args.tasks:
        result = run_task(task, args.seeds, args.sizes, args.out,
                          {"num_iterations": args.num_iterations, "max_length": args.max_length}, args.evaluate_only,
                          tuple(args.methods))
        result["commit"] = commit
        results = REPO / "bench" / "results"
        (results / f"setfit_{task}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (results / f"setfit_{task}.md").write_text(markdown(result) + f"\ncuratune commit {commit}\n")
        for metric in ("acc", "macro_f1"):
            (REPO / "docs" / "images").mkdir(exist_ok=True)
            (REPO / "docs" / "images" / f"setfit_{task}_{metric}.svg").write_text(svg_curve(result, metric))
        print(markdown(result))


if __name__ == "__main__":
    main()
