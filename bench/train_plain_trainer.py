"""The peer of one curatune sweep cell: a plain transformers Trainer script, nothing else.

    python bench/train_plain_trainer.py --model DIR --data subset.jsonl --method lora --out DIR

Same model, records, masking (loss on the answer only), batch, schedule, precision and
LoRA settings as a curatune cell with the bench config, written the way a user would
write it by hand. Prints one JSON line: tokens, train seconds, tokens/s, wall seconds.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="JSONL of {messages: [...]}")
    parser.add_argument("--method", choices=["lora", "full"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=384)
    args = parser.parse_args()
    wall_start = time.perf_counter()

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.config.use_cache = False
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))

    def tokenize(messages):
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + answer_ids)[: args.max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[: args.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    with open(args.data, encoding="utf-8") as f:
        dataset = [tokenize(json.loads(line)["messages"]) for line in f]

    training_args = TrainingArguments(
        output_dir=args.out,
        per_device_train_batch_size=args.batch,
        num_train_epochs=args.epochs,
        learning_rate=2e-4 if args.method == "lora" else 2e-5,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start
    trainer.save_model(args.out)
    tokens = int(trainer.state.num_input_tokens_seen)
    print(json.dumps({
        "tokens": tokens,
        "steps": trainer.state.global_step,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens / train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
    }))


if __name__ == "__main__":
    main()
