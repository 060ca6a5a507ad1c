"""The paired tests on a real (small) run: a tiny Llama (curatune.testing.tiny_model, ~100k
parameters, random weights) fine-tuned with LoRA and full fine-tuning on Multi30k en-de pairs,
evaluated on 100 test pairs (BLEU, chrF++, TER from real generations), 200 ARC-Easy and 200
PIQA items, the retention probe and the same probe on the task's held-out prompts (task_kl). Everything is real: the training, the generations, the
per-item samples, sacrebleu's statistics; only the model is tiny, so its outputs are poor.

What it shows: the labels in analysis.json (which cells changed significantly, on which suite),
`curatune compare` between LoRA and full at one size, and `curatune plan` with the discordance
estimated from this run. Needs ../shared/data (skips otherwise).

Run:  nice python bench/significance_tiny_run.py   (writes bench/results/significance_tiny_run.{json,md})
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from curatune.config import validate_config
from curatune.evaluate.compare import compare_run_cells
from curatune.evaluate.power import power_table
from curatune.evaluate.runner import run_evaluate
from curatune.rundir import RunDir, read_json
from curatune.testing.tiny_model import build_tiny_model
from curatune.train.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MT = SHARED / "mt" / "multi30k" / "data" / "task1" / "raw"
RESULTS = ROOT / "bench" / "results"


def config_for(run_dir: Path, model_dir: Path):
    return validate_config({
        "name": "tiny-significance",
        "run_dir": str(run_dir),
        "model": {"base": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {
            "sources": [{"path": str(MT / "train.en.gz"), "format": "parallel", "target_path": str(MT / "train.de.gz")}],
            "eval_sources": [{"path": str(MT / "test_2016_flickr.en.gz"), "format": "parallel",
                              "target_path": str(MT / "test_2016_flickr.de.gz")}],
        },
        "train": {"data": "raw", "sizes": [32, 256], "seeds": [0], "methods": ["lora", "full"], "epochs": 1,
                  "per_device_batch_size": 8, "max_seq_length": 96, "cpu_threads": 1, "keep_weights": "final",
                  "lora": {"learning_rate": 5e-3}, "full": {"learning_rate": 2e-3}},
        "evaluate": {
            "stages": ["base", "final"],
            "suites": [
                {"name": "task", "kind": "generation", "metrics": ["bleu", "chrf", "ter"], "limit": 100,
                 "max_new_tokens": 24},
                {"name": "arc_easy", "kind": "multiple_choice", "path": str(SHARED / "bench/mc/arc_easy.jsonl"), "limit": 200},
                {"name": "piqa", "kind": "multiple_choice", "path": str(SHARED / "bench/mc/piqa.jsonl"), "limit": 200},
                {"name": "retention", "kind": "retention", "limit": 40, "max_new_tokens": 16},
                {"name": "task_kl", "kind": "retention", "prompts": "heldout", "limit": 40, "max_new_tokens": 16},
            ],
            "analysis": {"n_bootstrap": 0},
        },
    })


def main() -> None:
    if not MT.exists():
        print(f"skipped: {MT} not found (needs ../shared/data)")
        return
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "model")
        run_dir = Path(tmp) / "run"
        config = config_for(run_dir, model_dir)
        run = RunDir(run_dir)
        run.write_manifest(config.resolved(), "train")
        run_sweep(config, run, progress=False)
        run_evaluate(config, run, progress=False)
        analysis = read_json(run.analysis)
        labels = [
            {"cell": row["cell"], "suite": suite, "metric": e["metric"], "test": e["test"],
             "base": e["base_value"], "value": e["value"], "difference": e["difference"],
             "ci": [e["ci_low"], e["ci_high"]], "p": e["p_value"], "p_adjusted": e["p_adjusted"],
             "label": e["label"], "reason": e["reason"]}
            for row in analysis["learning_forgetting"] for suite, e in row["significance"].items()
        ]
        comparison = compare_run_cells(run_dir, "lora-n256-s0", "full-n256-s0")
        power = [r.to_dict() for r in power_table(config, run, drop=0.05)]
    seconds = time.perf_counter() - started
    result = {"seconds": round(seconds, 1), "load_average": os.getloadavg(), "platform": platform.platform(),
              "summary": analysis["significance"], "labels": labels, "probe_correlations": analysis["probe_correlations"], "compare_lora_vs_full_n256": comparison["suites"],
              "power": power}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "significance_tiny_run.json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    def num(v, f="{:+.3g}"):
        return "—" if v is None else f.format(v)

    md = ["# Paired tests on a real tiny run", "",
          "Tiny random Llama (~100k parameters) fine-tuned on Multi30k en-de (32 and 256 pairs, LoRA lr 5e-3, "
          "full lr 2e-3, 1 epoch), evaluated on 100 test pairs, 200 ARC-Easy, 200 PIQA items, 40 retention "
          f"prompts and 40 held-out task prompts (task_kl). Wall {seconds / 60:.1f} min, load average {os.getloadavg()[0]:.1f} on the shared 2-core machine.",
          "", f"Family: {analysis['significance']['family_size']} tests, {analysis['significance']['fdr']}, "
          f"alpha {analysis['significance']['alpha']}; labels: {analysis['significance']['labels']}", "",
          "| cell | suite | metric | test | base | cell | difference [95% CI] | p | p adj. | label |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in labels:
        ci = "" if r["ci"][0] is None else f" [{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]"
        md.append(f"| {r['cell']} | {r['suite']} | {r['metric']} | {r['test'] or ''} | {num(r['base'], '{:.4g}')} | "
                  f"{num(r['value'], '{:.4g}')} | {num(r['difference'])}{ci} | {num(r['p'], '{:.3g}')} | "
                  f"{num(r['p_adjusted'], '{:.3g}')} | {r['label']} |")
    md += ["", "## `curatune compare RUN lora-n256-s0 full-n256-s0`", "",
           "| suite | metric | lora | full | full − lora [95% CI] | test | p adj. | verdict for full |",
           "|---|---|---:|---:|---:|---|---:|---|"]
    for e in comparison["suites"]:
        ci = "" if e["ci_low"] is None else f" [{e['ci_low']:+.3g}, {e['ci_high']:+.3g}]"
        md.append(f"| {e['suite']} | {e['metric']} | {num(e['value_a'], '{:.4g}')} | {num(e['value_b'], '{:.4g}')} | "
                  f"{num(e['difference'])}{ci} | {e['test'] or ''} | {num(e['p_adjusted'], '{:.3g}')} | {e['label']} |")
    md += ["", "## KL probes vs benchmark drops (final cells)", "",
           "| probe | drop on | cells | Spearman ρ | p | note |", "|---|---|---:|---:|---:|---|"]
    for e in analysis["probe_correlations"]:
        md.append(f"| {e['probe']} | {e['target']} | {e['n_cells']} | {num(e['spearman'], '{:.2f}')} | "
                  f"{num(e['p_value'], '{:.2g}')} | {e['reason'] or ''} |")
    md += ["", "## `curatune plan` with this run (drop 0.05)", "",
           "| suite | metric | items | test | discordance / sd | MDE | items for 0.05 | note |",
           "|---|---|---:|---|---:|---:|---:|---|"]
    for p in power:
        md.append(f"| {p['suite']} | {p['metric']} | {p['n_items']} | {p['test']} | "
                  f"{num(p['spread'], '{:.3g}')} ({p['spread_source'] or '—'}) | {num(p['mde'], '{:.3g}')} | "
                  f"{p['items_for_drop'] or '—'} | {p['note']} |")
    (RESULTS / "significance_tiny_run.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
