"""Training steps side by side in one process: packed vs padded batches, and fp32 vs bf16 on CPU.

    nice python bench/train_batching_steps.py --suite batching --datasets codealpaca sharegpt multi30k
    nice python bench/train_batching_steps.py --suite bf16 --datasets demo

Why in one process: on the shared 2-core machine a subprocess per run spends most of its
time waiting for a core and loading the model, so whole-cell timings (bench/train_batching.py)
drift by more than the effect measured. Here each side has its own copy of the model and
optimizer (same initial weights, same batches, same order), and the sides alternate step
by step, the order rotated each step, so load drift hits them alike. Each step is a full
training step (forward, backward, AdamW update) timed in wall seconds and in CPU seconds of
this process (1 torch thread: CPU seconds are compute, and do not count the time spent
waiting for a core, so they are the steadier number here).

Suite batching (issue 19, part 1): curatune's PaddingCollator ("padded", the collator before
this change), DataCollatorWithFlattening ("packed", train.batching = packed). The plain Trainer
script (bench/train_plain_trainer.py) uses DataCollatorForSeq2Seq, which pads each batch to
its longest example exactly like "padded": the bench checks the shapes are equal on every
batch, so its compute per step is the padded side's (bench/results/train_speed_default.md
measured a whole curatune cell against that script: within a few percent). Real tokens =
tokens of the examples, never padding. Also checked on the real model and data: the first
batch's loss, dropout off, padded vs packed.

Suite bf16 (issue 19, part 0): fp32 against bf16 autocast (torch.autocast("cpu")), same
batches, loss per step of both.

Results: bench/results/train_batching_steps.{json,md} or train_bf16_cpu.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_batching import RESULTS, load_records  # noqa: E402  (bench-local helpers)


def build(model_path: str, method: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.config.use_cache = False  # as in a training cell (and needed for packing)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    return model


def step(model, optimizer, batch, bf16: bool) -> float:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def run_group(args, model_path: str, tokenizer, dataset: str, method: str, work: Path) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, set_seed

    from curatune.chat_format import encode
    from curatune.train.batching import attention_cost_ratio, collator

    batches_wanted = args.batches_sharegpt if dataset == "sharegpt" else args.batches
    records = load_records(dataset, 4 * batches_wanted * 2, work)
    features = []
    for record in records:
        enc = encode(tokenizer, record, args.max_length)
        if enc.trained_tokens:
            features.append({"input_ids": enc.input_ids, "labels": enc.labels})
    # one more batch than timed: the first step of each side warms up (allocator, lazy init) untimed
    groups = [features[i:i + 4] for i in range(0, 4 * (batches_wanted + 1), 4)]
    padded_collate = collator("padded", tokenizer.pad_token_id)
    packed_collate = collator("packed", tokenizer.pad_token_id)
    seq2seq = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    set_seed(0)
    first = build(model_path, method)
    if args.suite == "batching":
        sides = {"padded": (padded_collate, False), "packed": (packed_collate, False)}
        if args.auto:  # train.batching: auto, the per-batch rule
            sides["auto"] = (collator("auto", tokenizer.pad_token_id, attention_cost_ratio(first)), False)
    else:
        sides = {"fp32": (padded_collate, False), "bf16": (padded_collate, True)}
    models = {name: first if i == 0 else copy.deepcopy(first) for i, name in enumerate(sides)}
    lr = 2e-4 if method == "lora" else 2e-5
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
                  for name, m in models.items()}

    check = {}
    if args.suite == "batching":  # the same loss on real data, dropout off
        first.eval()
        with torch.no_grad():
            check = {name: first(**collate(groups[0])).loss.item() for name, (collate, _) in sides.items()
                     if name != "auto"}  # auto is one of the two (and would count this batch)
        first.train()

    per_side = {name: {"wall": [], "cpu": [], "real_tokens": 0, "computed_tokens": 0, "losses": []} for name in sides}
    names = list(sides)
    warmup = {name: round(step(models[name], optimizers[name], collate(groups[0]), bf16), 5)
              for name, (collate, bf16) in sides.items()}
    if "auto" in sides:  # count the timed batches only
        sides["auto"][0].counts = {"packed": 0, "padded": 0}
    for i, group in enumerate(groups[1:]):
        real = sum(len(f["input_ids"]) for f in group)
        shapes_equal = tuple(padded_collate(group)["input_ids"].shape) == tuple(
            seq2seq([{k: f[k] for k in ("input_ids", "labels")} | {"attention_mask": [1] * len(f["input_ids"])}
                     for f in group])["input_ids"].shape)
        assert shapes_equal, "DataCollatorForSeq2Seq pads differently from PaddingCollator"
        for name in names[i % len(names):] + names[:i % len(names)]:
            collate, bf16 = sides[name]
            batch = collate(group)
            wall, cpu = time.perf_counter(), time.process_time()
            loss = step(models[name], optimizers[name], batch, bf16)
            side = per_side[name]
            side["wall"].append(time.perf_counter() - wall)
            side["cpu"].append(time.process_time() - cpu)
            side["real_tokens"] += real
            side["computed_tokens"] += batch["input_ids"].numel()
            side["losses"].append(round(loss, 5))
        print(json.dumps({"dataset": dataset, "method": method, "batch": i, "real_tokens": real,
                          **{n: round(per_side[n]["cpu"][-1], 2) for n in names}}), flush=True)

    base = names[0]
    row = {"dataset": dataset, "method": method, "batches": len(groups) - 1, "batch_size": 4,
           "warmup_step_loss": warmup,
           "max_length": args.max_length, "real_tokens": per_side[base]["real_tokens"],
           "load_1min": os.getloadavg()[0]}
    for name, side in per_side.items():
        row[name] = {
            "computed_tokens": side["computed_tokens"],
            "padding_fraction": round(1 - side["real_tokens"] / side["computed_tokens"], 4),
            "real_tokens_per_second": round(side["real_tokens"] / sum(side["wall"]), 2),
            "real_tokens_per_cpu_second": round(side["real_tokens"] / sum(side["cpu"]), 2),
            "losses": side["losses"],
        }
    for other in names[1:]:
        step_ratios = [a / b for a, b in zip(per_side[base]["cpu"], per_side[other]["cpu"])]
        row[f"{other}_over_{base}_cpu"] = round(sum(per_side[base]["cpu"]) / sum(per_side[other]["cpu"]), 3)
        row[f"{other}_over_{base}_wall"] = round(sum(per_side[base]["wall"]) / sum(per_side[other]["wall"]), 3)
        row[f"{other}_over_{base}_cpu_per_step_median"] = round(statistics.median(step_ratios), 3)
    if "auto" in sides:
        row["auto_batches"] = dict(sides["auto"][0].counts)
    other = names[1]
    row["max_loss_relative_difference"] = round(max(
        abs(a - b) / abs(a) for a, b in zip(per_side[base]["losses"], per_side[other]["losses"])), 5)
    if check:
        row["first_batch_loss_dropout_off"] = check
        row["first_batch_loss_relative_difference"] = abs(check[base] - check["packed"]) / abs(check[base])
    del models, optimizers, first
    return row


def main() -> None:
    import tempfile

    import torch
    import transformers
    from transformers import AutoTokenizer

    from curatune.chat_format import ensure_chat_template
    from curatune.models import ensure_pad_token, resolve_model_path
    from curatune.train.batching import cpu_has_native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["batching", "bf16"], default="batching")
    parser.add_argument("--model", default="default")
    parser.add_argument("--datasets", nargs="+", default=["codealpaca", "sharegpt", "multi30k"])
    parser.add_argument("--methods", nargs="+", default=["lora", "full"])
    parser.add_argument("--batches", type=int, default=4,
                        help="timed batches of 4 examples per dataset and method (after one warm-up batch)")
    parser.add_argument("--batches-sharegpt", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=384, help="train.max_seq_length (the default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", help="results file name (default: train_batching_steps / train_bf16_cpu)")
    parser.add_argument("--auto", action="store_true", help="suite batching: a third side, train.batching auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_path = str(resolve_model_path(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ensure_chat_template(tokenizer)
    ensure_pad_token(tokenizer)
    name = args.name or ("train_batching_steps" if args.suite == "batching" else "train_bf16_cpu")
    report = {
        "suite": args.suite, "model": args.model, "threads": args.threads,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_before": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cpu_native_bf16": cpu_has_native_bf16()},
        "command": " ".join(sys.argv),
        "groups": [],
    }
    with tempfile.TemporaryDirectory(prefix="curatune-bench-steps-") as work:
        for dataset in args.datasets:
            for method in args.methods:
                report["groups"].append(run_group(args, model_path, tokenizer, dataset, method, Path(work)))
                report["load_after"] = os.getloadavg()
                RESULTS.mkdir(parents=True, exist_ok=True)  # after every group: a killed bench keeps its rows
                (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
                (RESULTS / f"{name}.md").write_text(markdown(report) + "\n")
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    head = (f"### {report['suite']}: training steps side by side, {report['model']} model, {report['threads']} thread(s), "
            f"{m['cpu_capability']}, native bf16 {m['cpu_native_bf16']} ({report['when']}; load "
            f"{report['load_before'][0]:.1f} -> {report.get('load_after', report['load_before'])[0]:.1f})")
    if report["suite"] == "batching":
        lines = [head, "", "| data | method | batches x 4 | real tokens | padding (padded) | padded real tok/CPU-s | "
                 "packed real tok/CPU-s | packed / padded (CPU s) | per-step median | (wall) | first-batch loss diff "
                 "(dropout off) | max per-step loss diff |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in report["groups"]:
            lines.append(
                f"| {g['dataset']} | {g['method']} | {g['batches']} | {g['real_tokens']} | "
                f"{g['padded']['padding_fraction']:.0%} | {g['padded']['real_tokens_per_cpu_second']} | "
                f"{g['packed']['real_tokens_per_cpu_second']} | **{g['packed_over_padded_cpu']}** | "
                f"{g['packed_over_padded_cpu_per_step_median']} | {g['packed_over_padded_wall']} | "
                f"{g['first_batch_loss_relative_difference']:.1e} | {g['max_loss_relative_difference']} |")
        if any("auto" in g for g in report["groups"]):
            lines += ["", "train.batching auto (the per-batch rule) on the same batches, a third side:", "",
                      "| data | method | batches packed / padded by the rule | auto real tok/CPU-s | auto / padded (CPU s) | "
                      "per-step median | (wall) | auto / best of packed, padded (CPU s) |", "|---|---|---|---|---|---|---|---|"]
            for g in report["groups"]:
                if "auto" not in g:
                    continue
                best = max(1.0, g["packed_over_padded_cpu"])
                lines.append(
                    f"| {g['dataset']} | {g['method']} | {g['auto_batches']['packed']} / {g['auto_batches']['padded']} | "
                    f"{g['auto']['real_tokens_per_cpu_second']} | **{g['auto_over_padded_cpu']}** | "
                    f"{g['auto_over_padded_cpu_per_step_median']} | {g['auto_over_padded_wall']} | "
                    f"{g['auto_over_padded_cpu'] / best:.3f} |")
    else:
        lines = [head, "", "| data | method | steps x 4 | real tokens | fp32 tok/CPU-s | bf16 tok/CPU-s | bf16 / fp32 "
                 "(CPU s) | (wall) | fp32 losses | bf16 losses | max loss diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for g in report["groups"]:
            lines.append(
                f"| {g['dataset']} | {g['method']} | {g['batches']} | {g['real_tokens']} | "
                f"{g['fp32']['real_tokens_per_cpu_second']} | {g['bf16']['real_tokens_per_cpu_second']} | "
                f"**{g['bf16_over_fp32_cpu']}** | {g['bf16_over_fp32_wall']} | "
                f"{', '.join(f'{x:.3f}' for x in g['fp32']['losses'])} | "
                f"{', '.join(f'{x:.3f}' for x in g['bf16']['losses'])} | {g['max_loss_relative_difference']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
