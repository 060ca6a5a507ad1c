"""The peer of a curatune cell on a GPU: a plain TRL SFTTrainer script, written as a user would.

    python bench/gpu_trl_sft.py --model DIR --data records.jsonl --method lora --out DIR
    python bench/gpu_trl_sft.py ... --cpu-smoke      # tiny sizes on CPU, fp32: checks the script runs

Same records (JSONL of {messages: [...]}, single-turn: the last message is the answer),
batch, epochs, learning rates, LoRA settings (r16/a32, all-linear, dropout 0.05), max length
and bf16 as the curatune cell that bench/gpu_check.sh runs beside it. The loss is on the
answer only (TRL's prompt-completion format, completion_only_loss), as in curatune.
method: lora, full, or qlora (4-bit nf4 + double quant, bitsandbytes; CUDA only).

Prints one JSON line: real tokens, steps, train seconds, tokens/s, peak GPU memory, wall seconds.
"""
from __future__ import annotations

import argparse
import json
import time


def to_prompt_completion(messages: list[dict]) -> dict:
    """TRL's conversational prompt-completion row: the loss goes on the completion only."""
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="JSONL of {messages: [...]}")
    parser.add_argument("--method", choices=["lora", "full", "qlora"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--cpu-smoke", action="store_true", help="CPU, fp32, first 8 records: the script runs")
    args = parser.parse_args()
    wall_start = time.perf_counter()

    # heavy imports after argument parsing, so --help is instant
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(0)
    on_cuda = torch.cuda.is_available() and not args.cpu_smoke
    if args.method == "qlora" and not on_cuda:
        raise SystemExit("qlora needs a CUDA GPU (bitsandbytes)")
    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    with open(args.data, encoding="utf-8") as f:
        rows = [to_prompt_completion(json.loads(line)["messages"]) for line in f if line.strip()]
    if args.cpu_smoke:
        rows = rows[:8]
    dataset = Dataset.from_list(rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load_kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    peft_config = None
    if args.method == "qlora":
        from transformers import BitsAndBytesConfig

        load_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        load_kwargs["device_map"] = {"": 0}
    else:
        # master weights in fp32 with bf16 autocast, as curatune (and the Trainer's bf16=True) does
        load_kwargs["dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.model, **load_kwargs)
    model.config.use_cache = False
    if args.method in ("lora", "qlora"):
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                 task_type="CAUSAL_LM")

    config = SFTConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.batch,
        num_train_epochs=args.epochs,
        learning_rate=2e-5 if args.method == "full" else 2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        max_grad_norm=1.0,
        max_length=args.max_length,
        completion_only_loss=True,
        packing=False,
        bf16=bf16,
        use_cpu=not on_cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train()
    if on_cuda:
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    trainer.save_model(args.out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({
        "side": "trl", "method": args.method, "records": len(rows), "tokens": tokens,
        "steps": trainer.state.global_step, "train_seconds": round(train_seconds, 3),
        "tokens_per_second": round(tokens / train_seconds, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if on_cuda else None,
        "bf16": bf16, "final_loss": losses[-1] if losses else None,
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
    }))


if __name__ == "__main__":
    main()
