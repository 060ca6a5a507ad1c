"""A grid cell's validation loss (curatune.train.validation.validation_loss) against transformers'
own loss, on real Multi30k pairs with the default 135M model; then its cost, for the re-run plan.

Correctness: the token-weighted mean of `model(input_ids, labels=labels).loss` over the records,
one record per forward pass (transformers shifts the labels and averages inside the model), must
equal curatune's batched, padded computation. Then time: both side by side in this process, one
torch thread, so the cost of the validation loss per cell can be put beside the training time
(docs/study-multi30k/README.md, "Re-run plan").

Data (../shared/data, skipped when absent): the first VALIDATION_SIZE pairs of the Multi30k
training set in curatune's canonical (id) order, formatted exactly as the study trains on them.

Run:  nice python bench/lr_grid_validation.py [--records 200]
      (appends to bench/results/lr_grid_validation.json, rewrites .md with every run)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from curatune.chat_format import IGNORE_INDEX, encode
from curatune.data.loaders import load_sources
from curatune.models import load_model_and_tokenizer
from curatune.train.subsets import canonical_order
from curatune.train.validation import validation_loss

ROOT = Path(__file__).resolve().parents[1]
MT = ROOT.parent / "shared" / "data" / "mt" / "multi30k" / "data" / "task1" / "raw"
RESULTS = ROOT / "bench" / "results"
VALIDATION_SIZE = 100  # examples/multi30k-en-de/config-lr-grid.yaml: train.validation_size
MAX_LENGTH = 256
BATCH = 4  # train.per_device_batch_size's default


def reference_loss(model, tokenizer, records) -> tuple[float, int]:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for record in records:
            enc = encode(tokenizer, record, MAX_LENGTH)
            n = sum(1 for label in enc.labels[1:] if label != IGNORE_INDEX)
            if n == 0:
                continue
            loss = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels])).loss
            total, tokens = total + float(loss) * n, tokens + n
    return total / tokens, tokens


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=VALIDATION_SIZE)
    args = parser.parse_args()
    if not MT.exists():
        print(f"skipped: {MT} not found (the shared data folder)")
        return 0
    torch.set_num_threads(1)
    source = {"path": str(MT / "train.en.gz"), "format": "parallel", "target_path": str(MT / "train.de.gz")}
    records = canonical_order(list(load_sources([source]).records))[:args.records]
    model, tokenizer = load_model_and_tokenizer(dtype="float32", device="cpu")
    load_before = os.getloadavg()[0]
    # CPU seconds beside wall seconds: on a shared machine the wall clock mostly measures the other jobs
    started, cpu_started = time.perf_counter(), time.process_time()
    ours = validation_loss(model, tokenizer, records, MAX_LENGTH, BATCH)
    ours_seconds, ours_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    started, cpu_started = time.perf_counter(), time.process_time()
    ref, ref_tokens = reference_loss(model, tokenizer, records)
    ref_seconds, ref_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    load_after = os.getloadavg()[0]
    result = {
        "records": ours["records"], "tokens": ours["tokens"], "reference_tokens": ref_tokens,
        "loss": ours["loss"], "reference_loss": round(ref, 6), "abs_difference": abs(ours["loss"] - ref),
        "seconds": round(ours_seconds, 2), "reference_seconds": round(ref_seconds, 2),
        "cpu_seconds": round(ours_cpu, 2), "reference_cpu_seconds": round(ref_cpu, 2),
        "tokens_per_second": round(ours["tokens"] / ours_seconds, 1),
        "speed_ratio_vs_reference": round(ref_seconds / ours_seconds, 3),
        "batch": BATCH, "threads": 1, "load_1min": [round(load_before, 2), round(load_after, 2)],
        "python": platform.python_version(), "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ok = result["tokens"] == ref_tokens and result["abs_difference"] < 1e-5
    result["correct"] = ok
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "lr_grid_validation.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs = (runs if isinstance(runs, list) else [runs]) + [result]
    path.write_text(json.dumps(runs, indent=2) + "\n")
    md = []
    for run in reversed(runs):  # newest first
        cpu = (f"{run['cpu_seconds']} | {run['reference_cpu_seconds']}" if "cpu_seconds" in run else "— | —")
        md += [
            f"### validation loss, default model, {run['records']} Multi30k training pairs, 1 torch thread "
            f"({run['when']})", "",
            "| | curatune validation_loss (batch 4, padded) | transformers loss, one record per pass |",
            "|---|---:|---:|",
            f"| mean loss per answer token | {run['loss']:.6f} | {run['reference_loss']:.6f} |",
            f"| answer tokens | {run['tokens']} | {run['reference_tokens']} |",
            f"| wall seconds | {run['seconds']} | {run['reference_seconds']} |",
            f"| CPU seconds | {cpu} |", "",
            f"|difference| = {run['abs_difference']:.2e} ({'equal' if run['correct'] else 'NOT EQUAL'}); "
            f"load (1-min) {run['load_1min'][0]}-{run['load_1min'][1]} on 2 cores shared with other jobs.", "",
        ]
    (RESULTS / "lr_grid_validation.md").write_text("\n".join(md))
    print("\n".join(md[:12]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
