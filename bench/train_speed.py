"""Tokens/s of one curatune sweep cell against a plain transformers Trainer script.

    nice python bench/train_speed.py --model tiny    --reps 3 --examples 96
    nice python bench/train_speed.py --model default --reps 3 --examples 48

Same model, data (demo dataset records, the cell's exact subset), masking, batch,
schedule and LoRA settings on both sides (bench/train_plain_trainer.py is the peer).
Every measurement is a fresh subprocess; runs are interleaved (harness, plain, plain,
harness, ...) and repeated, and the machine load is recorded with each, because the
machine is shared. The primary number is training tokens/s (non-padding tokens / seconds
inside ``trainer.train()``; the harness side includes its JSONL log, progress bars and
the early checkpoint it writes); the end-to-end wall time of the whole cell (model load
and final save included) is reported too.

Results: bench/results/train_speed_<model>.json (every run) and .md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def build_tiny(out: Path) -> Path:
    """A ~4M-parameter Llama (hidden 256, 6 layers) with the test tokenizer."""
    from curatune.testing.tiny_model import build_tiny_model

    return build_tiny_model(out, hidden_size=256, num_layers=6)


def prepare(work: Path, model: str, examples: int) -> tuple[Path, Path]:
    """Model dir + a curated run dir holding demo records; returns (model_dir, records_jsonl)."""
    from curatune.config import SourceConfig
    from curatune.data.demo import generate_demo_dataset
    from curatune.data.loaders import load_sources
    from curatune.models import resolve_model_path
    from curatune.records import records_to_frame
    from curatune.rundir import RunDir, atomic_write_parquet

    model_dir = build_tiny(work / "tiny-model") if model == "tiny" else resolve_model_path(model)
    paths = generate_demo_dataset(work / "demo", n_train=400, n_heldout=20, seed=0)
    records = load_sources([SourceConfig(path=str(paths.train))]).records
    records = [r for r in records if r.response.strip()][: examples + 4]
    template = RunDir(work / "template")
    atomic_write_parquet(template.kept, records_to_frame(records))
    return Path(model_dir), template.root


def bench_config(run_root: Path, model_dir: Path, method: str, examples: int, threads: int = 0):
    from curatune.config import validate_config

    return validate_config({
        "run_dir": str(run_root),
        "model": {"base": str(model_dir)},
        "data": {"heldout_size": 4},
        "train": {"sizes": [examples], "methods": [method], "epochs": 1, "per_device_batch_size": 4,
                  "max_seq_length": 384, "logging_steps": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
                  "cpu_threads": threads},
    })


def worker_harness(args) -> dict:
    """One cell through curatune.run_sweep, exactly as `curatune sweep` runs it."""
    from curatune.rundir import read_json
    from curatune.train.sweep import run_sweep

    wall_start = time.perf_counter()
    run_root = Path(args.run_root)
    config = bench_config(run_root, Path(args.model_dir), args.method, args.examples, args.threads)
    summary = run_sweep(config, run_root, progress=True)
    assert not summary["failed"], summary["failed"]
    done = read_json(run_root / "train" / args.method / f"n{args.examples}" / "s0" / "done.json")
    return {"tokens": done["train_tokens"], "steps": done["steps"], "train_seconds": done["train_seconds"],
            "tokens_per_second": done["tokens_per_second"], "train_cpu_seconds": done["train_cpu_seconds"],
            "early_save_seconds": done["early_save_seconds"],
            "wall_seconds": time.perf_counter() - wall_start}


def export_subset(run_root: Path, method: str, examples: int, out: Path) -> None:
    """The records the harness cell trains on, in its draw order, for the plain script."""
    from curatune.rundir import CellSpec
    from curatune.train.cell import subset_records
    from curatune.rundir import RunDir

    records = subset_records(RunDir(run_root), CellSpec(method, examples, 0))
    with open(out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"messages": r.messages}, ensure_ascii=False) + "\n")


def run_json(cmd: list[str], threads: int) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads, on both sides alike
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (built here) or default (SmolLM2-135M) or a path")
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads on both sides (0 = torch default). On a busy shared machine "
                        "1 thread is faster and steadier than 2")
    parser.add_argument("--worker", choices=["harness"], help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker_harness(args)))
        return

    work = Path(tempfile.mkdtemp(prefix="curatune-bench-"))
    try:
        model_dir, template = prepare(work, args.model, args.examples)
        runs = []
        for rep in range(args.reps):
            for method in args.methods:
                # alternate which side goes first, so drift in machine load hits both alike
                order = ["harness", "plain"] if (rep + len(runs)) % 2 == 0 else ["plain", "harness"]
                for side in order:
                    run_root = work / f"run-{method}-{rep}-{side}"
                    shutil.copytree(template, run_root)
                    load_before = os.getloadavg()[0]
                    if side == "harness":
                        result = run_json([sys.executable, __file__, "--worker", "harness", "--run-root",
                                           str(run_root), "--model-dir", str(model_dir), "--method", method,
                                           "--examples", str(args.examples), "--threads", str(args.threads)],
                                          args.threads)
                    else:
                        from curatune.rundir import RunDir
                        from curatune.train.plan import plan_sweep

                        plan_sweep(bench_config(run_root, model_dir, method, args.examples), RunDir(run_root))
                        subset = run_root / "subset.jsonl"
                        export_subset(run_root, method, args.examples, subset)
                        result = run_json([sys.executable, str(HERE / "train_plain_trainer.py"), "--model",
                                           str(model_dir), "--data", str(subset), "--method", method,
                                           "--out", str(run_root / "plain-out")], args.threads)
                    result.update(method=method, side=side, rep=rep, load_before=load_before,
                                  load_after=os.getloadavg()[0])
                    runs.append(result)
                    print(json.dumps(result), flush=True)
                    shutil.rmtree(run_root, ignore_errors=True)
        report = summarize(runs, args)
        out = RESULTS / f"train_speed_{args.model if args.model in ('tiny', 'default') else 'custom'}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report) + "\n")
        print(markdown(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(runs: list[dict], args) -> dict:
    import platform

    import torch
    import transformers

    methods = {}
    for method in args.methods:
        h = [r for r in runs if r["method"] == method and r["side"] == "harness"]
        p = [r for r in runs if r["method"] == method and r["side"] == "plain"]
        # paired by repetition: the two sides of one rep ran back to back
        ratios = [a["tokens_per_second"] / b["tokens_per_second"] for a, b in zip(h, p)]
        # CPU seconds inside trainer.train(): far less sensitive to other jobs than wall time
        cpu = [b["train_cpu_seconds"] / a["train_cpu_seconds"] for a, b in zip(h, p)]
        # the harness without the early checkpoint it writes (a feature the plain script lacks)
        no_early = [a["tokens"] / (a["train_seconds"] - a["early_save_seconds"]) / b["tokens_per_second"]
                    for a, b in zip(h, p)]
        wall = [a["wall_seconds"] / b["wall_seconds"] for a, b in zip(h, p)]
        methods[method] = {
            "harness_tokens_per_second": [round(r["tokens_per_second"], 1) for r in h],
            "plain_tokens_per_second": [round(r["tokens_per_second"], 1) for r in p],
            "tokens_per_second_ratio_median": round(statistics.median(ratios), 4),
            "tokens_per_second_ratios": [round(x, 4) for x in ratios],
            "overhead_percent_median": round(100 * (1 / statistics.median(ratios) - 1), 2),
            "early_save_seconds": [round(r["early_save_seconds"], 2) for r in h],
            "ratio_without_early_save_median": round(statistics.median(no_early), 4),
            "overhead_without_early_save_percent_median": round(100 * (1 / statistics.median(no_early) - 1), 2),
            "cpu_throughput_ratio_median": round(statistics.median(cpu), 4),
            "cpu_throughput_ratios": [round(x, 4) for x in cpu],
            "cpu_overhead_percent_median": round(100 * (1 / statistics.median(cpu) - 1), 2),
            "tokens_per_second_ratio_mean": round(statistics.mean(ratios), 4),
            "wall_ratio_median": round(statistics.median(wall), 4),
            "harness_tokens": h[0]["tokens"], "plain_tokens": p[0]["tokens"],
            "steps": h[0]["steps"],
            "load_range": [round(min(r["load_before"] for r in h + p), 2),
                           round(max(r["load_after"] for r in h + p), 2)],
        }
    return {
        "model": args.model, "examples": args.examples, "reps": args.reps, "threads": args.threads,
        "settings": "1 epoch, batch 4, max_seq_length 384, cosine, warmup 0.1, fp32, LoRA r16/a32 all-linear",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "methods": methods, "runs": runs,
    }


def markdown(report: dict) -> str:
    lines = [f"### {report['model']} model, {report['examples']} examples, {report['reps']} interleaved reps, "
             f"{report['threads'] or 'default'} torch thread(s) ({report['when']})", "",
             "| method | harness tok/s | plain tok/s | tok/s ratio (median) | overhead (wall) | "
             "overhead without early save | early save s | overhead (CPU s in train) | cell wall ratio | "
             "load (1-min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, m in report["methods"].items():
        lines.append(
            f"| {method} | {', '.join(map(str, m['harness_tokens_per_second']))} | "
            f"{', '.join(map(str, m['plain_tokens_per_second']))} | {m['tokens_per_second_ratio_median']} | "
            f"{m['overhead_percent_median']}% | {m['overhead_without_early_save_percent_median']}% | "
            f"{', '.join(map(str, m['early_save_seconds']))} | {m['cpu_overhead_percent_median']}% | {m['wall_ratio_median']} | "
            f"{m['load_range'][0]}-{m['load_range'][1]} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
