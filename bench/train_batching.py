"""Real (non-pad) training tokens/s: packed vs padded curatune cells vs a plain Trainer script.

    nice python bench/train_batching.py --datasets codealpaca multi30k sharegpt --methods lora full
    nice python bench/train_batching.py --suite bf16 --datasets demo --methods lora

Suite ``batching`` (issue 19, part 1): for each real dataset and method, three sides run
interleaved (order rotated per pair so drift in machine load hits all alike), each a fresh
subprocess on the same records:

* ``padded``: a curatune cell with ``train.batching = padded`` (the collator before packing);
* ``packed``: a curatune cell with ``train.batching = packed`` (padding-free);
* ``plain``: bench/train_plain_trainer.py, a hand-written transformers Trainer script
  (``DataCollatorForSeq2Seq``, padded), the peer.

The number is real tokens/s: tokens of the examples (never padding) / seconds inside
``trainer.train()``; every side trains on the same examples once (1 epoch), so the
real-token totals are equal and printed. The final losses are reported too (padded and
packed cells see the same batches, so their loss curves should agree closely).

Suite ``bf16`` (issue 19, part 0): the same cell in fp32 and with bf16 autocast on this CPU,
interleaved; tokens/s and the per-step loss curves side by side, plus whether the CPU has
native bf16 (avx512_bf16 / amx_bf16 in /proc/cpuinfo).

Data (read at run time from ../shared/data, never copied): codealpaca (code_alpaca_2k.json),
the ShareGPT half (sharegpt_v3_even.jsonl.gz, multi-turn), Multi30k en->de train pairs as
short translation chats, and the demo dataset. The machine load (1-min average) is recorded
before and after every run. Results: bench/results/train_batching.{json,md} or
train_bf16_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = HERE.parent.parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")

DATASETS = {
    "codealpaca": "instruct/codealpaca/data/code_alpaca_2k.json",
    "sharegpt": "instruct/sharegpt_v3/sharegpt_v3_even.jsonl.gz",
    "gpteacher": "instruct/gpteacher/Toolformer/toolformer-dedupe-only-dataset.json",
    "multi30k": "mt/multi30k/data/task1/raw/train.en.gz",
}


def load_records(name: str, n: int, work: Path, seed: int = 0):
    """``n`` records of a dataset, drawn with a fixed seed (the same on every side)."""
    from curatune.config import SourceConfig
    from curatune.data.loaders import load_sources
    from curatune.records import Record

    if name == "demo":
        from curatune.data.demo import generate_demo_dataset

        path = generate_demo_dataset(work / "demo", n_train=400, n_heldout=20, seed=0).train
        records = load_sources([SourceConfig(path=str(path))]).records
    elif name == "multi30k":
        en_path = SHARED / DATASETS["multi30k"]
        with gzip.open(en_path, "rt", encoding="utf-8") as en, \
                gzip.open(str(en_path).replace(".en.gz", ".de.gz"), "rt", encoding="utf-8") as de:
            pairs = [(a.strip(), b.strip()) for a, b in zip(en, de)]
        records = [Record.make([{"role": "user", "content": f"Translate into German:\n{a}"},
                                {"role": "assistant", "content": b}], source="multi30k") for a, b in pairs]
    else:
        records = load_sources([SourceConfig(path=str(SHARED / DATASETS[name]))]).records
    records = [r for r in records if r.response.strip()]
    random.Random(seed).shuffle(records)
    return records[:n]


def make_template(work: Path, name: str, examples: int) -> Path:
    from curatune.records import records_to_frame
    from curatune.rundir import RunDir, atomic_write_parquet

    template = RunDir(work / f"template-{name}")
    atomic_write_parquet(template.kept, records_to_frame(load_records(name, examples + 4, work)))
    return template.root


def cell_config(run_root: Path, model: str, method: str, examples: int, batching: str, bf16, threads: int):
    from curatune.config import validate_config

    return validate_config({
        "run_dir": str(run_root),
        "model": {"base": model},
        "data": {"heldout_size": 4},
        "train": {"sizes": [examples], "methods": [method], "epochs": 1, "per_device_batch_size": 4,
                  "max_seq_length": 384, "logging_steps": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
                  "cpu_threads": threads, "batching": batching, "bf16": bf16},
    })


def worker_cell(args) -> dict:
    """One cell through curatune.run_sweep, exactly as `curatune sweep` runs it."""
    from curatune.rundir import read_json, read_jsonl
    from curatune.train.sweep import run_sweep

    run_root = Path(args.run_root)
    bf16 = {"true": True, "false": False}.get(args.bf16, args.bf16)
    config = cell_config(run_root, args.model, args.method, args.examples, args.batching, bf16, args.threads)
    summary = run_sweep(config, run_root, progress=False)
    assert not summary["failed"], summary["failed"]
    cell = run_root / "train" / args.method / f"n{args.examples}" / "s0"
    done = read_json(cell / "done.json")
    return {"tokens": done["train_tokens"], "steps": done["steps"], "train_seconds": done["train_seconds"],
            "train_cpu_seconds": done["train_cpu_seconds"], "tokens_per_second": done["tokens_per_second"],
            "batching": done["batching"], "bf16": done["bf16"], "precision_reason": done["precision_reason"],
            "losses": [line["loss"] for line in read_jsonl(cell / "train_log.jsonl")]}


def export_subset(run_root: Path, config, method: str, examples: int, out: Path) -> None:
    """The records the cell trains on (the plain script gets exactly these)."""
    from curatune.rundir import CellSpec, RunDir
    from curatune.train.cell import subset_records
    from curatune.train.plan import plan_sweep

    plan_sweep(config, RunDir(run_root))
    with open(out, "w", encoding="utf-8") as f:
        for r in subset_records(RunDir(run_root), CellSpec(method, examples, 0)):
            f.write(json.dumps({"messages": r.messages}, ensure_ascii=False) + "\n")


def run_json(cmd: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_run(side: str, work: Path, template: Path, args, dataset: str, method: str, examples: int) -> dict:
    run_root = work / f"run-{dataset}-{method}-{side}"
    shutil.rmtree(run_root, ignore_errors=True)
    shutil.copytree(template, run_root)
    load_before = os.getloadavg()[0]
    if side == "plain":
        config = cell_config(run_root, args.model, method, examples, "padded", False, args.threads)
        subset = run_root / "subset.jsonl"
        export_subset(run_root, config, method, examples, subset)
        result = run_json([sys.executable, str(HERE / "train_plain_trainer.py"), "--model", args.model_path,
                           "--data", str(subset), "--method", method, "--out", str(run_root / "plain-out")],
                          args.threads)
    else:
        batching, bf16 = (side, "false") if args.suite == "batching" else ("auto", side)
        result = run_json([sys.executable, __file__, "--worker", "--run-root", str(run_root), "--model", args.model,
                           "--method", method, "--examples", str(examples), "--threads", str(args.threads),
                           "--batching", batching, "--bf16", bf16], args.threads)
    shutil.rmtree(run_root, ignore_errors=True)
    result.update(dataset=dataset, method=method, side=side, examples=examples,
                  load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["batching", "bf16"], default="batching")
    parser.add_argument("--model", default="default", help="default (the embedded SmolLM2-135M-Instruct) or a path")
    parser.add_argument("--datasets", nargs="+", default=["codealpaca", "multi30k", "sharegpt"])
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--examples", type=int, default=32, help="examples per run (batch 4: examples/4 steps)")
    parser.add_argument("--examples-sharegpt", type=int, default=16, help="ShareGPT rows are long: fewer")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-root", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--batching", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", default="false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker_cell(args)))
        return

    from curatune.models import resolve_model_path
    from curatune.train.batching import cpu_has_native_bf16

    args.model_path = str(resolve_model_path(args.model))
    sides = ["padded", "packed", "plain"] if args.suite == "batching" else ["false", "true"]
    name = "train_batching" if args.suite == "batching" else "train_bf16_cpu"
    work = Path(tempfile.mkdtemp(prefix="curatune-bench-batching-"))
    runs: list[dict] = []
    try:
        for dataset in args.datasets:
            examples = args.examples_sharegpt if dataset == "sharegpt" else args.examples
            template = make_template(work, dataset, examples)
            for rep in range(args.reps):
                for method in args.methods:
                    shift = len(runs) // len(sides)  # rotate the order: no side always runs first
                    for side in sides[shift % len(sides):] + sides[:shift % len(sides)]:
                        result = one_run(side, work, template, args, dataset, method, examples)
                        result["rep"] = rep
                        runs.append(result)
                        print(json.dumps(result), flush=True)
                        report = summarize(runs, args, sides, cpu_has_native_bf16())
                        write(report, name)  # after every run: a killed bench keeps what it measured
        print(markdown(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(runs: list[dict], args, sides: list[str], native_bf16: bool) -> dict:
    import platform

    import torch
    import transformers

    groups = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        for method in dict.fromkeys(r["method"] for r in runs if r["dataset"] == dataset):
            mine = [r for r in runs if r["dataset"] == dataset and r["method"] == method]
            by_side = {s: [r for r in mine if r["side"] == s] for s in sides}
            row = {"dataset": dataset, "method": method, "examples": mine[0]["examples"],
                   "load_range": [min(r["load_before"] for r in mine), max(r["load_after"] for r in mine)]}
            for side, rs in by_side.items():
                if rs:
                    row[f"{side}_tokens_per_second"] = [round(r["tokens_per_second"], 1) for r in rs]
                    row[f"{side}_tokens"] = rs[0]["tokens"]
                    row[f"{side}_cpu_tokens_per_second"] = [round(r["tokens"] / r["train_cpu_seconds"], 1) for r in rs]
                    if "losses" in rs[0]:
                        row[f"{side}_losses"] = rs[0]["losses"]
            base, other = sides[0], sides[1]
            pairs = list(zip(by_side[base], by_side[other]))
            if pairs:
                row[f"{other}_over_{base}"] = round(statistics.median(
                    b["tokens_per_second"] / a["tokens_per_second"] for a, b in pairs), 3)
                row[f"{other}_over_{base}_cpu"] = round(statistics.median(
                    (b["tokens"] / b["train_cpu_seconds"]) / (a["tokens"] / a["train_cpu_seconds"]) for a, b in pairs), 3)
                la, lb = pairs[0][0].get("losses"), pairs[0][1].get("losses")
                if la and lb:
                    row["max_loss_relative_difference"] = round(max(abs(x - y) / abs(x) for x, y in zip(la, lb)), 5)
            if "plain" in by_side and by_side["plain"]:
                ppairs = list(zip(by_side["plain"], by_side[other]))
                row[f"{other}_over_plain"] = round(statistics.median(
                    b["tokens_per_second"] / a["tokens_per_second"] for a, b in ppairs), 3)
                row[f"{other}_over_plain_cpu"] = round(statistics.median(
                    (b["tokens"] / b["train_cpu_seconds"]) / (a["tokens"] / a["train_cpu_seconds"]) for a, b in ppairs), 3)
            groups.append(row)
    return {
        "suite": args.suite, "model": args.model, "reps": args.reps, "threads": args.threads,
        "settings": "1 epoch, batch 4, max_seq_length 384, cosine, warmup 0.1, LoRA r16/a32 all-linear",
        "cpu_native_bf16": native_bf16,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "groups": groups, "runs": runs,
    }


def write(report: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(report) + "\n")


def markdown(report: dict) -> str:
    when = report["when"]
    if report["suite"] == "batching":
        lines = [f"### Real (non-pad) training tokens/s, {report['model']}, {report['threads']} thread(s), "
                 f"{report['reps']} interleaved rep(s) ({when}, {report['machine']['cpu_capability']})", "",
                 "| data | method | examples | real tokens | padded tok/s | packed tok/s | plain Trainer tok/s | "
                 "packed / padded | packed / plain | same, CPU-s based | max loss diff | load (1-min) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in report["groups"]:
            lines.append(
                f"| {g['dataset']} | {g['method']} | {g['examples']} | {g.get('packed_tokens', '')} | "
                f"{_join(g.get('padded_tokens_per_second'))} | {_join(g.get('packed_tokens_per_second'))} | "
                f"{_join(g.get('plain_tokens_per_second'))} | {g.get('packed_over_padded', '')} | "
                f"{g.get('packed_over_plain', '')} | {g.get('packed_over_padded_cpu', '')} / "
                f"{g.get('packed_over_plain_cpu', '')} | {g.get('max_loss_relative_difference', '')} | "
                f"{g['load_range'][0]}-{g['load_range'][1]} |")
    else:
        lines = [f"### fp32 vs bf16 autocast training on this CPU ({report['machine']['cpu_capability']}, native bf16: "
                 f"{report['cpu_native_bf16']}), {report['model']}, {report['threads']} thread(s) ({when})", "",
                 "| data | method | fp32 tok/s | bf16 tok/s | bf16 / fp32 | same, CPU-s based | max loss diff | "
                 "fp32 losses | bf16 losses | load (1-min) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for g in report["groups"]:
            lines.append(
                f"| {g['dataset']} | {g['method']} | {_join(g.get('false_tokens_per_second'))} | "
                f"{_join(g.get('true_tokens_per_second'))} | {g.get('true_over_false', '')} | "
                f"{g.get('true_over_false_cpu', '')} | {g.get('max_loss_relative_difference', '')} | "
                f"{_join([round(x, 3) for x in g.get('false_losses', [])])} | "
                f"{_join([round(x, 3) for x in g.get('true_losses', [])])} | "
                f"{g['load_range'][0]}-{g['load_range'][1]} |")
    return "\n".join(lines)


def _join(values) -> str:
    return ", ".join(map(str, values)) if values else ""


if __name__ == "__main__":
    main()
