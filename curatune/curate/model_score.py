"""Model-based scoring with keep-top-fraction: response perplexity, or IFD (Cherry LLM).

IFD (instruction-following difficulty, Li et al. 2023, "From Quantity to Quality") is
the ratio of the response's perplexity given the prompt to its perplexity alone. Near 0:
the prompt makes the answer trivial; near 1: the prompt barely helps (hard to follow);
above 1: the prompt makes the answer *less* likely, a sign prompt and answer do not
match. Selection keeps the highest IFD below 1, as the paper does.
"""
from __future__ import annotations

import math

import numpy as np

from curatune.curate.base import CurateContext, Removal, Step, StepResult, chunked
from curatune.curate.config import ModelScoreConfig
from curatune.models import load_model_and_tokenizer
from curatune.records import Record


def _prompt_text(tokenizer, record: Record) -> str:
    history = record.messages[: record.last_assistant_index]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    return record.prompt + "\n"


def response_losses(model, tokenizer, contexts: list[list[int]], responses: list[list[int]]) -> np.ndarray:
    """Mean negative log-likelihood of each response's tokens after its context (one batch)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sequences = [c + r for c, r in zip(contexts, responses)]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    target = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, (c, r) in enumerate(zip(contexts, responses)):
        ids[i, : len(c) + len(r)] = torch.tensor(c + r)
        mask[i, : len(c) + len(r)] = 1
        target[i, len(c) : len(c) + len(r)] = True
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    # Token t is predicted by position t-1.
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logprobs.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
    scored = target[:, 1:].to(device)
    per_record = (nll * scored).sum(dim=1) / scored.sum(dim=1).clamp(min=1)
    return per_record.cpu().numpy().astype(np.float64)


class ModelScore(Step):
    config_class = ModelScoreConfig
    reasons = ("low_model_score",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if not records:
            return StepResult([], [])
        model, tokenizer = load_model_and_tokenizer(
            cfg.model or context.model, dtype=context.dtype, device=context.device,
            trust_remote_code=context.trust_remote_code,
        )
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        conditional = np.empty(len(records))
        alone = np.empty(len(records))
        position = 0
        with context.progress.task(f"model score ({cfg.score})", len(records)) as task:
            for batch in chunked(records, cfg.batch_size):
                prompts, answers = [], []
                for record in batch:
                    answer = tokenizer(record.response, add_special_tokens=False)["input_ids"][: cfg.max_length - 1]
                    if not answer:  # an empty response: score it as worst below
                        answer = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0]
                    prompt = tokenizer(_prompt_text(tokenizer, record), add_special_tokens=False)["input_ids"]
                    prompt = prompt[-max(1, cfg.max_length - len(answer)) :]  # keep the prompt's end
                    prompts.append(prompt)
                    answers.append(answer)
                n = len(batch)
                conditional[position : position + n] = response_losses(model, tokenizer, prompts, answers)
                if cfg.score == "ifd":
                    start = bos or [answers[0][0]]
                    alone[position : position + n] = response_losses(model, tokenizer, [start] * n, answers)
                position += n
                task.advance(n)
        if cfg.score == "perplexity":
            scores = np.exp(np.minimum(conditional, 50.0))
            # Lower perplexity is better: rank by it ascending.
            preference = scores
            label = "perplexity"
        else:
            scores = np.exp(conditional - alone)  # ratio of perplexities
            # Highest IFD below 1 first; IFD >= 1 (prompt and answer do not fit) last.
            preference = np.where(scores < 1.0, -scores, 1.0 + scores)
            label = "IFD"
        empty = np.array([not r.response.strip() for r in records])
        preference = np.where(empty, np.inf, preference)
        n_keep = max(1, math.ceil(cfg.keep_top_fraction * len(records)))
        order = np.argsort(preference, kind="stable")
        keep = np.zeros(len(records), dtype=bool)
        keep[order[:n_keep]] = True
        cutoff = float(scores[order[n_keep - 1]])
        kept, removed = [], []
        for i, record in enumerate(records):
            if keep[i]:
                record.meta = {**record.meta, "model_score": round(float(scores[i]), 5)}
                kept.append(record)
            else:
                removed.append(
                    Removal(record, "low_model_score", f"{label} {scores[i]:.4f} outside the top {cfg.keep_top_fraction:.0%} (cutoff {cutoff:.4f})")
                )
        return StepResult(
            kept, removed,
            {"score": cfg.score, "cutoff": round(cutoff, 5), "median": round(float(np.median(scores)), 5)},
        )
