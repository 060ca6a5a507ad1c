"""Wall time of a real sweep: 4 sizes x {lora, full} x 1 seed, 135M default model, demo data, CPU.

    nice python bench/train_demo_sweep.py --sizes 16 32 64 128 --epochs 2 --threads 1

Trains on the raw demo records (held-out = the demo's held-out file), through the same
`run_sweep` as `curatune sweep`, then records the sweep's wall time, every cell's
done.json numbers and the machine load in bench/results/train_demo_sweep.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--keep", help="keep the run directory here instead of a temp dir")
    args = parser.parse_args()

    from curatune.config import validate_config
    from curatune.data.demo import generate_demo_dataset
    from curatune.rundir import list_cells
    from curatune.train.sweep import run_sweep

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="curatune-demo-sweep-"))
    try:
        paths = generate_demo_dataset(work / "data", seed=0)
        config = validate_config({
            "name": "demo-sweep-bench",
            "run_dir": str(work / "run"),
            "model": {"base": "default"},
            "data": {"sources": [{"path": str(paths.train)}], "eval_sources": [{"path": str(paths.heldout)}]},
            "train": {"data": "raw", "sizes": args.sizes, "methods": ["lora", "full"], "seeds": [0],
                      "epochs": args.epochs, "cpu_threads": args.threads},
        })
        load_before = os.getloadavg()
        start = time.perf_counter()
        summary = run_sweep(config, config.run_dir, progress=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        cells = []
        for cell in list_cells(config.run_dir):
            d = cell.done or {}
            cells.append({k: d.get(k) for k in ("key", "train_examples", "steps", "train_tokens", "train_seconds",
                                                 "wall_seconds", "tokens_per_second", "final_loss")}
                         | {"status": cell.status, "first_loss": (cell.log() or [{}])[0].get("loss")})
        report = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sizes": args.sizes, "epochs": args.epochs, "threads": args.threads or "torch default",
            "wall_seconds": round(wall, 1), "summary": summary, "cells": cells,
            "load_before": load_before, "load_after": load_after,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_demo_sweep.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "train_demo_sweep.md").write_text(markdown(report) + "\n")
        print(markdown(report))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def markdown(report: dict) -> str:
    lines = [
        f"### Demo sweep, 135M default, sizes {report['sizes']} x lora/full x 1 seed, {report['epochs']} epochs, "
        f"threads {report['threads']} ({report['when']})", "",
        f"Wall time of the whole sweep: **{report['wall_seconds']:.0f} s** "
        f"({report['wall_seconds'] / 60:.1f} min); 1-min load average before/after: "
        f"{report['load_before'][0]:.1f} / {report['load_after'][0]:.1f} on {report['machine']['cpus']} cores.", "",
        "| cell | examples | steps | tokens | train s | cell wall s | tok/s | first loss | final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cells"]:
        lines.append(
            f"| {c['key']} | {c['train_examples']} | {c['steps']} | {c['train_tokens']} | {c['train_seconds']} | "
            f"{c['wall_seconds']} | {c['tokens_per_second']} | {_fmt(c['first_loss'])} | {_fmt(c['final_loss'])} |"
        )
    return "\n".join(lines)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else str(x)


if __name__ == "__main__":
    main()
