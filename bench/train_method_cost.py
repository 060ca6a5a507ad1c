"""What each train.method costs on this machine: trainable parameters, adapter size, seconds per step.

    OMP_NUM_THREADS=1 nice -n 10 python bench/train_method_cost.py --model default --steps 2

For every method, the wrapped model of a fresh sweep cell (curatune.train.cell.load_base_for_training,
the method's default settings) takes ``--steps`` timed AdamW steps (after one untimed warm-up
step) on one fixed batch of 4 chat examples of the demo kind, padded to 128 tokens, on 1 CPU
thread; the peer is the full fine-tune (the ratio column). Adapter size is the safetensors
bytes of ``save_pretrained`` (full: the whole model). For prompt and prefix tuning the
evaluation wrapper (curatune.virtual_tokens.VirtualTokenLM) is checked against peft's own
forward pass on the real model (max |logit difference|).

Results: bench/results/train_method_cost_<model>.json and .md. The machine is shared: the
1-minute load average is recorded beside each method.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from curatune.config import validate_config
from curatune.models import resolve_model_path
from curatune.train.cell import load_base_for_training
from curatune.train.config import METHODS
from curatune.virtual_tokens import PROMPT_LEARNING, VirtualTokenLM

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = ("<|im_start|>user\nExtract the brand, colour and size from: Acme red cotton shirt, size M, 19.99 EUR"
        "<|im_end|>\n<|im_start|>assistant\n{\"brand\": \"Acme\", \"colour\": \"red\", \"size\": \"M\"}<|im_end|>\n")


def measure(method: str, model_path: Path, steps: int) -> dict:
    config = validate_config({"model": {"base": str(model_path)}, "train": {"methods": [method]}})
    torch.manual_seed(0)
    tokenizer, model = load_base_for_training(config, method, model_path)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    ids = tokenizer([TEXT * 4] * 4, return_tensors="pt", truncation=True, max_length=128, padding="max_length")
    batch = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"], "labels": ids["input_ids"]}
    optimizer = torch.optim.AdamW(trainable, lr=config.train.learning_rate(method))
    model.train()
    times = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step allocates optimizer state: not timed
            times.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*.safetensors"))
    row = {"method": method, "trainable_parameters": n_trainable, "weights_bytes": size,
           "seconds_per_step": statistics.median(times), "step_seconds": [round(t, 3) for t in times],
           "loss_after": float(loss), "load_1min": os.getloadavg()[0]}
    if method in PROMPT_LEARNING:
        model.eval()
        probe = tokenizer([TEXT], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            theirs = model(input_ids=probe).logits[:, -probe.shape[1]:]
            ours = VirtualTokenLM(model)(input_ids=probe).logits
        row["wrapper_max_abs_logit_diff"] = float((theirs - ours).abs().max())
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=[m for m in METHODS if m != "qlora"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_path = resolve_model_path(args.model)
    rows = []
    for method in args.methods:
        row = measure(method, model_path, args.steps)
        print(json.dumps(row), flush=True)
        rows.append(row)
    full = next((r["seconds_per_step"] for r in rows if r["method"] == "full"), None)
    name = "default" if args.model == "default" else Path(args.model).name
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"train_method_cost_{name}.json").write_text(json.dumps({"when": stamp, "rows": rows}, indent=2) + "\n")
    lines = [f"### train.methods on {name}: batch 4 x 128 tokens, 1 torch thread, {args.steps} timed steps ({stamp})",
             "", "| method | trainable parameters | adapter / weights MB | s per step | step time vs full | load (1-min) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['seconds_per_step'] / full:.2f}" if full else "-"
        lines.append(f"| {r['method']} | {r['trainable_parameters']:,} | {r['weights_bytes'] / 1e6:.2f} | "
                     f"{r['seconds_per_step']:.2f} | {ratio} | {r['load_1min']:.1f} |")
    checks = [f"{r['method']}: {r['wrapper_max_abs_logit_diff']:.2e}" for r in rows if "wrapper_max_abs_logit_diff" in r]
    if checks:
        lines += ["", "VirtualTokenLM against peft's own forward pass, max |logit difference|: " + ", ".join(checks)]
    (RESULTS / f"train_method_cost_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
