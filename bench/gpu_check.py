"""The GPU path measured: LoRA, full and QLoRA cells, evaluation with generation, beside TRL.

Run through bench/gpu_check.sh (which installs first); directly:

    python bench/gpu_check.py [--model default] [--records 300] [--out DIR]
    python bench/gpu_check.py --cpu-smoke      # tiny model, 8 records, CPU: the script's parts run

On the same records (the demo dataset's training rows, clean and flawed alike: curation is not
what is measured), each method trains once as a curatune cell (``run_sweep``, bf16, packed
batching as the default ``auto`` picks) and once as a plain TRL ``SFTTrainer`` script
(bench/gpu_trl_sft.py), each in its own process so that peak GPU memory is per run. Then
``run_evaluate`` scores the base model and the final weights of every cell on the demo's task
suite (greedy generation) and the retention suite. Printed and written (``$OUT`` or --out):
real tokens/s, peak GPU memory, wall time per run, the ratios curatune / TRL, and the
evaluation's wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def prepare(work: Path, records: int, heldout: int) -> tuple[Path, Path]:
    """A run dir whose curated pool is the demo's first ``records`` training rows; the held-out file."""
    from curatune.config import SourceConfig
    from curatune.data.demo import generate_demo_dataset
    from curatune.data.loaders import load_sources
    from curatune.records import records_to_frame
    from curatune.rundir import RunDir, atomic_write_parquet

    paths = generate_demo_dataset(work / "data", n_train=max(400, records + 50), n_heldout=heldout, seed=0)
    pool = [r for r in load_sources([SourceConfig(path=str(paths.train))]).records if r.response.strip()]
    run_dir = RunDir(work / "run")
    atomic_write_parquet(run_dir.kept, records_to_frame(pool[:records]))
    return run_dir.root, paths.heldout


def experiment(run_root: Path, heldout: Path, model: str, records: int, methods: list[str], smoke: bool) -> dict:
    return {
        "name": "gpu-check",
        "run_dir": str(run_root),
        "model": {"base": model, "device": "cpu" if smoke else "auto"},
        "data": {"eval_sources": [{"path": str(heldout)}]},
        "train": {"sizes": [records], "methods": methods, "epochs": 1, "per_device_batch_size": 8,
                  "max_seq_length": 512, "bf16": "auto", "batching": "auto", "early_fraction": 0.5},
        "evaluate": {
            "stages": ["base", "final"],
            "limit_heldout": 4 if smoke else 100,
            "generation": {"max_new_tokens": 8 if smoke else 80, "batch_size": 4 if smoke else 64},
            "suites": [{"name": "task", "kind": "generation"},
                       {"name": "retention", "kind": "retention", "answer_agreement": False}],
        },
    }


def worker(args) -> dict:
    """One stage in this process: a sweep of one method, or the evaluation; with peak GPU memory."""
    import torch

    from curatune.config import validate_config
    from curatune.rundir import read_json

    config = validate_config(json.loads(Path(args.config).read_text()))
    on_cuda = torch.cuda.is_available() and not args.cpu_smoke
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out: dict = {}
    if args.worker == "evaluate":
        from curatune.evaluate.runner import run_evaluate

        run_evaluate(config, progress=False)
        scores = Path(config.run_dir) / "eval" / "scores.parquet"
        out["scores_written"] = scores.exists()
    else:
        from curatune.train.sweep import run_sweep

        summary = run_sweep(config, only=[args.worker], progress=False)
        if summary["failed"]:
            raise SystemExit(f"cell failed: {summary['failed']}")
        size = config.train.sizes[0]
        done = read_json(Path(config.run_dir) / "train" / args.worker / f"n{size}" / "s0" / "done.json")
        out.update(tokens=done["train_tokens"], steps=done["steps"], train_seconds=done["train_seconds"],
                   tokens_per_second=done["tokens_per_second"], bf16=done["bf16"], batching=done["batching"],
                   final_loss=done["final_loss"])
    out["wall_seconds"] = round(time.perf_counter() - start, 3)
    out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if on_cuda else None
    return out


def run_json(cmd: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:], "wall_seconds": round(time.perf_counter() - started, 3)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_seconds"] = round(time.perf_counter() - started, 3)  # model load included
    return result


def export_subset(config_path: Path, method: str, out: Path) -> None:
    """The records the cell trains on, for the TRL script: the same rows on both sides."""
    from curatune.config import validate_config
    from curatune.rundir import CellSpec, RunDir
    from curatune.train.cell import subset_records

    config = validate_config(json.loads(config_path.read_text()))
    records = subset_records(RunDir(config.run_dir), CellSpec(method, config.train.sizes[0], 0))
    with open(out, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"messages": r.messages}, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct (tiny with --cpu-smoke)")
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=["lora", "full", "qlora"])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"))
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny model, 8 records, no QLoRA, on CPU: checks every part runs, measures nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import tempfile

    import torch

    from curatune.models import resolve_model_path

    work = Path(args.work or tempfile.mkdtemp(prefix="curatune-gpu-check-"))
    if args.cpu_smoke:
        from curatune.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny-model")) if args.model is None else args.model
        records, methods = 8, [m for m in args.methods if m != "qlora"]
    else:
        model, records, methods = args.model or "default", args.records, args.methods
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU visible: run with --cpu-smoke to check the script on CPU")
    model_path = str(resolve_model_path(model))
    run_root, heldout = prepare(work, records, heldout=8 if args.cpu_smoke else 100)
    config_path = work / "config.json"
    config_path.write_text(json.dumps(experiment(run_root, heldout, model_path, records, methods, args.cpu_smoke)))
    smoke = ["--cpu-smoke"] if args.cpu_smoke else []

    from curatune.config import validate_config
    from curatune.rundir import RunDir
    from curatune.train.plan import plan_sweep

    plan_sweep(validate_config(json.loads(config_path.read_text())), RunDir(run_root))
    rows = []
    started = time.perf_counter()
    for method in methods:
        cell = run_json([sys.executable, __file__, "--worker", method, "--config", str(config_path)] + smoke)
        subset = work / f"subset-{method}.jsonl"
        export_subset(config_path, method, subset)
        trl = run_json([sys.executable, str(HERE / "gpu_trl_sft.py"), "--model", model_path, "--data", str(subset),
                        "--method", method, "--out", str(work / f"trl-{method}"), "--batch", "8",
                        "--max-length", "512"] + smoke)
        row = {"method": method, "curatune": cell, "trl": trl}
        if "error" not in cell and "error" not in trl and trl.get("tokens_per_second"):
            row["tokens_per_second_ratio"] = round(cell["tokens_per_second"] / trl["tokens_per_second"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    evaluation = run_json([sys.executable, __file__, "--worker", "evaluate", "--config", str(config_path)] + smoke)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_smoke": args.cpu_smoke, "model": model, "records": records,
        "settings": "1 epoch, batch 8, max length 512, bf16 auto, batching auto (curatune), LoRA r16/a32 all-linear",
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "cells": rows, "evaluation": evaluation,
        "total_wall_seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check_cpu_smoke" if args.cpu_smoke else "gpu_check"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    failed = [r["method"] for r in rows if "error" in r["curatune"] or "error" in r["trl"]]
    if failed or "error" in evaluation:
        raise SystemExit(f"failed: {failed or ''} {'evaluation' if 'error' in evaluation else ''}")


def markdown(report: dict) -> str:
    def cell(side: dict, key: str):
        return side.get(key, "error" if "error" in side else "")

    lines = [f"### GPU check: {report['model']}, {report['records']} records ({report['machine']['gpu'] or 'CPU smoke'}, "
             f"{report['when']})", "",
             "| method | curatune tok/s | TRL tok/s | curatune / TRL | peak GiB curatune | peak GiB TRL | "
             "train s curatune | train s TRL | process wall s curatune | process wall s TRL | batching | final loss c / TRL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["cells"]:
        c, t = r["curatune"], r["trl"]
        lines.append(f"| {r['method']} | {cell(c, 'tokens_per_second')} | {cell(t, 'tokens_per_second')} | "
                     f"{r.get('tokens_per_second_ratio', '')} | {cell(c, 'peak_gpu_memory_gib')} | "
                     f"{cell(t, 'peak_gpu_memory_gib')} | {cell(c, 'train_seconds')} | {cell(t, 'train_seconds')} | "
                     f"{cell(c, 'process_wall_seconds')} | {cell(t, 'process_wall_seconds')} | {cell(c, 'batching')} | "
                     f"{cell(c, 'final_loss')} / {cell(t, 'final_loss')} |")
    e = report["evaluation"]
    lines += ["", f"Evaluation (base + {len(report['cells'])} final cells; task generation + retention): "
              f"{e.get('process_wall_seconds', 'error')} s wall, peak {e.get('peak_gpu_memory_gib')} GiB. "
              f"Total {report['total_wall_seconds']} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
