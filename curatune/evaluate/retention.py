"""Data-free forgetting probe: how far a fine-tuned model's answers drift from the base model's.

A fixed set of general prompts (facts, arithmetic, instructions, writing, reasoning, code,
language, small talk; ``retention_prompts.jsonl``, written for this project) goes through
the chat template. The base model answers each greedily; :class:`RetentionReference`
stores those answers and, at every answer position, the base model's next-token
distribution. A fine-tuned model is then scored teacher-forced on the same token ids:

* ``kl_divergence``: mean over all answer positions of KL(base || fine-tuned), in nats;
* ``base_answer_logprob``: mean per-token log-likelihood of the base model's answers;
* ``answer_agreement`` (when the model also answers, ``generate=True``): share of prompts
  whose greedy answer is exactly the base model's.

Storage keeps the base distribution's ``top_k`` most likely tokens plus one bucket holding
the rest of the probability mass, so the reference is a few MB whatever the vocabulary.
The KL is therefore computed between the two distributions coarsened to those k + 1
outcomes: never more than the full KL (coarsening cannot increase a divergence), equal to it
when the fine-tuned model moves mass only within the top k or the rest, and exactly 0 for
the base model itself.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from curatune.errors import DataError, ModelError
from curatune.evaluate.lm_scoring import (
    ItemScores,
    _accepts_logits_to_keep,
    cache_argument,
    output_cache,
)
from curatune.jsonl import iter_jsonl
from curatune.rundir import atomic_path

PROMPTS_FILE = Path(__file__).with_name("retention_prompts.jsonl")
FORMAT_VERSION = "1"
_META_KEY = "curatune_retention"


def load_retention_prompts(path: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """The probe prompts: ``[{id, category, prompt}]`` from a JSONL file (default: the packaged set)."""
    path = Path(path) if path is not None else PROMPTS_FILE
    prompts = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read retention prompts ({e.strerror})") from None
    for n, row in iter_jsonl(lines, str(path)):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DataError(f"{path}: line {n}: field 'prompt' must be a non-empty string")
        prompts.append({"id": str(row.get("id") or f"prompt-{len(prompts)}"),
                        "category": str(row.get("category") or ""), "prompt": row["prompt"]})
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def format_prompt(tokenizer, prompt: str) -> str:
    """The prompt as one user turn through the chat template, or plain text ending in a newline."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return f"{prompt}\n"


@dataclass
class RetentionReference:
    """The base model's answers and answer-position distributions (top-k + rest)."""

    prompts: list[dict[str, str]]
    formatted: list[str]
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]
    answers: list[str]
    topk_ids: torch.Tensor        # (positions, k) int32, positions of all prompts concatenated
    topk_logprobs: torch.Tensor   # (positions, k) float32
    rest_logprob: torch.Tensor    # (positions,) float32: log of the base mass outside the top k
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for ids in self.answer_ids:
            out.append(out[-1] + len(ids))
        return out

    # ---- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, base_model, tokenizer, prompts: Sequence[str | dict] | str | os.PathLike | None = None,
              max_new_tokens: int = 32, *, top_k: int = 100, batch_size: int = 16,
              progress: bool = True) -> "RetentionReference":
        """Answer every prompt greedily with the base model and keep its distributions."""
        if prompts is None or isinstance(prompts, (str, os.PathLike)):
            rows = load_retention_prompts(prompts)
        else:
            rows = [p if isinstance(p, dict) else {"id": f"prompt-{i}", "category": "", "prompt": p}
                    for i, p in enumerate(prompts)]
            rows = [{"id": str(r.get("id", f"prompt-{i}")), "category": str(r.get("category", "")),
                     "prompt": str(r["prompt"])} for i, r in enumerate(rows)]
        if not rows:
            raise DataError("no retention prompts")
        formatted = [format_prompt(tokenizer, r["prompt"]) for r in rows]
        prompt_ids = [list(tokenizer.encode(f, add_special_tokens=False)) for f in formatted]
        answer_ids = greedy_answers(base_model, tokenizer, prompt_ids, max_new_tokens, batch_size=batch_size,
                                    progress=progress)
        ids, lps, rest = [], [], []
        for logprobs in answer_logprobs(base_model, tokenizer, prompt_ids, answer_ids, batch_size=batch_size):
            k = min(top_k, logprobs.shape[-1])
            top = logprobs.topk(k, dim=-1)
            ids.append(top.indices.to(torch.int32))
            lps.append(top.values.float())
            rest.append(_rest_logprob(logprobs, top.indices))
        meta = {
            "model": str(getattr(getattr(base_model, "config", None), "_name_or_path", "")),
            "max_new_tokens": max_new_tokens,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return cls(rows, formatted, prompt_ids, answer_ids,
                   [tokenizer.decode(a, skip_special_tokens=True) for a in answer_ids],
                   torch.cat(ids), torch.cat(lps), torch.cat(rest), meta)

    # ---- storage ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file (arrays + JSON metadata), written atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {
            "topk_ids": self.topk_ids.contiguous(),
            "topk_logprobs": self.topk_logprobs.contiguous(),
            "rest_logprob": self.rest_logprob.contiguous(),
        }
        info = {"prompts": self.prompts, "formatted": self.formatted, "prompt_ids": self.prompt_ids,
                "answer_ids": self.answer_ids, "answers": self.answers, "meta": self.meta}
        metadata = {_META_KEY: json.dumps(info, ensure_ascii=False), "format_version": FORMAT_VERSION}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RetentionReference":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no retention reference here (build one with RetentionReference.build)")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in ("topk_ids", "topk_logprobs", "rest_logprob")}
            info = json.loads(metadata[_META_KEY])
        except Exception as e:  # truncated or foreign file
            raise DataError(f"{path}: not a curatune retention reference ({type(e).__name__}: {e})") from None
        if metadata.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path}: retention reference format {metadata.get('format_version')!r}, "
                            f"expected {FORMAT_VERSION}; rebuild it")
        ref = cls(info["prompts"], info["formatted"], info["prompt_ids"], info["answer_ids"], info["answers"],
                  tensors["topk_ids"], tensors["topk_logprobs"], tensors["rest_logprob"], info.get("meta", {}))
        if ref.offsets[-1] != ref.topk_ids.shape[0]:
            raise DataError(f"{path}: answer lengths do not match the stored distributions; rebuild it")
        return ref


def retention_scores(model, tokenizer, reference: RetentionReference, *, batch_size: int = 16,
                     generate: bool = True, progress: bool = True) -> ItemScores:
    """Score ``model`` against the base model's reference (see module docstring)."""
    _check_tokenizer(tokenizer, reference, model)
    offsets = reference.offsets
    per_item = []
    all_kl, all_lp = [], []
    outputs: list[str] = [""] * len(reference.prompts)
    if generate:
        max_new = int(reference.meta.get("max_new_tokens") or max(len(a) for a in reference.answer_ids))
        answers = greedy_answers(model, tokenizer, reference.prompt_ids, max_new, batch_size=batch_size,
                                 progress=progress)
        outputs = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        agree = [list(a) == list(b) for a, b in zip(answers, reference.answer_ids)]
    logprob_iter = answer_logprobs(model, tokenizer, reference.prompt_ids, reference.answer_ids, batch_size=batch_size)
    for i, logprobs in enumerate(logprob_iter):
        lo, hi = offsets[i], offsets[i + 1]
        kl = coarse_kl(reference.topk_ids[lo:hi].long(), reference.topk_logprobs[lo:hi],
                       reference.rest_logprob[lo:hi], logprobs)
        answer = torch.tensor(reference.answer_ids[i], dtype=torch.long)
        token_lp = logprobs.gather(1, answer[:, None]).squeeze(1)
        all_kl.append(kl)
        all_lp.append(token_lp)
        row = {
            "example_id": reference.prompts[i]["id"],
            "prompt": reference.prompts[i]["prompt"],
            "reference": reference.answers[i],
            "output": outputs[i],
            "kl_divergence": float(kl.mean()),
            "base_answer_logprob": float(token_lp.mean()),
            # The suite's scores are means over all answer tokens, not over prompts: the token
            # count lets a paired test recompute them exactly from these rows.
            "n_answer_tokens": len(answer),
            "category": reference.prompts[i].get("category", ""),
        }
        if generate:
            row["answer_agreement"] = float(agree[i])
        per_item.append(row)
    metrics = {
        "kl_divergence": float(torch.cat(all_kl).mean()),
        "base_answer_logprob": float(torch.cat(all_lp).mean()),
    }
    if generate:
        metrics["answer_agreement"] = sum(agree) / len(agree)
    return ItemScores(metrics, per_item)


# ---- the pieces ------------------------------------------------------------------------------
def coarse_kl(topk_ids: torch.Tensor, base_topk_lp: torch.Tensor, base_rest_lp: torch.Tensor,
              model_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(base || model) per position over the base's top-k tokens plus one 'rest' outcome."""
    model_topk = model_logprobs.gather(1, topk_ids)
    model_rest = _rest_logprob(model_logprobs, topk_ids)
    p = base_topk_lp.exp()
    kl = (p * (base_topk_lp - model_topk)).sum(dim=1)
    p_rest = base_rest_lp.exp()
    # 0 * log(0 / q) = 0; where the base puts (numerically) no mass outside the top k
    rest_term = torch.where(p_rest > 0, p_rest * (base_rest_lp - model_rest), torch.zeros_like(p_rest))
    return (kl + rest_term).clamp_min(0.0)


def _rest_logprob(logprobs: torch.Tensor, top_indices: torch.Tensor) -> torch.Tensor:
    """log of the probability mass outside ``top_indices``, computed without cancellation."""
    masked = logprobs.float().scatter(1, top_indices.long(), float("-inf"))
    return torch.logsumexp(masked, dim=1)


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                ids.add(int(v))
    return ids


def greedy_answers(model, tokenizer, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, *,
                   batch_size: int = 16, progress: bool = False) -> list[list[int]]:
    """Greedy answers (token ids, ending with the EOS token when the model stopped on its own).

    Decoding is step by step with a KV cache, left-padded batches; an answer stops at its
    first EOS. Implemented here rather than via ``generate`` so sampling settings in a
    model's generation_config can never leak in.
    """
    device = next(model.parameters()).device
    cache_kw = cache_argument(model)  # `cache` on transformers >= 5.24 (`past_key_values` warns there)
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    answers: list[list[int]] = [[] for _ in prompt_ids]
    bar = None
    if progress:
        bar = tqdm(total=len(prompt_ids), desc="retention answers", leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(prompt_ids[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):
                seq = list(prompt_ids[i])
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        logits_to_keep=1)
            cache = output_cache(out)
            done = torch.zeros(len(batch), dtype=torch.bool, device=device)
            next_pos = positions[:, -1] + 1
            for _ in range(max_new_tokens):
                token = out.logits[:, -1, :].argmax(dim=-1)
                for r, i in enumerate(batch):
                    if not done[r]:
                        answers[i].append(int(token[r]))
                        if int(token[r]) in eos:
                            done[r] = True
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=mask.dtype, device=device)], dim=1)
                out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                            use_cache=True, **{cache_kw: cache})
                cache = output_cache(out)
                next_pos = next_pos + 1
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return answers


def answer_logprobs(model, tokenizer, prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]], *,
                    batch_size: int = 16):
    """Yield, prompt by prompt in order, the (answer_len, vocab) float32 log-probabilities the
    model assigns at the positions that predict each answer token (teacher-forced)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    masked_logits = _accepts_logits_to_keep(model)
    with torch.inference_mode():
        for start in range(0, len(prompt_ids), batch_size):
            rows = range(start, min(start + batch_size, len(prompt_ids)))
            seqs = [list(prompt_ids[i]) + list(answer_ids[i])[:-1] for i in rows]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            keep = torch.zeros(ids.shape, dtype=torch.bool)
            for r, (i, seq) in enumerate(zip(rows, seqs)):
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
                first = len(prompt_ids[i]) - 1  # this position predicts the first answer token
                keep[r, first:first + len(answer_ids[i])] = True
            kwargs = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
            logits = None
            if masked_logits:  # logits only where answers are predicted (transformers >= 5)
                try:
                    logits = model(**kwargs, logits_to_keep=keep.to(device)).logits
                    if logits.ndim != 2 or logits.shape[0] != int(keep.sum()):
                        logits = None
                except (TypeError, ValueError, IndexError, RuntimeError):
                    logits = None
                masked_logits = logits is not None
            if logits is None:
                logits = model(**kwargs).logits[keep.to(device)]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            offset = 0
            for i in rows:
                n = len(answer_ids[i])
                yield logprobs[offset:offset + n]
                offset += n


def _check_tokenizer(tokenizer, reference: RetentionReference, model) -> None:
    """The reference stores token ids; the model must read them with the same vocabulary."""
    for text, ids in list(zip(reference.formatted, reference.prompt_ids))[:3]:
        if list(tokenizer.encode(text, add_special_tokens=False)) != list(ids):
            raise ModelError("the retention reference was built with a different tokenizer than this model's; "
                             "rebuild it from this model family's base model")
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
    if vocab is not None and int(reference.topk_ids.max()) >= vocab:
        raise ModelError(f"the retention reference uses token ids beyond this model's vocabulary ({vocab})")
