"""Batched greedy generation for the target task.

Prompts are formatted exactly like training formats them (the conversation up to its
last assistant turn, through the tokenizer's chat template with
``add_generation_prompt=True``), sorted by length so each batch wastes little padding,
left-padded (a decoder continues from the right edge), and decoded greedily. An answer
ends at an EOS token or at the first configured stop string, which is cut from it.
Outputs come back in the caller's order.

The decoding loop is written here rather than calling ``model.generate`` for one reason:
a row that has finished leaves the batch at once (its KV-cache row is dropped), where
``generate`` keeps computing every finished row until the slowest answer of the batch
ends. Task answers vary a lot in length (a caption of 10 tokens beside one of 60), so
most of a batch's steps ran on finished rows. The tokens chosen are the same argmax
``generate`` picks (bench/eval_generation.py checks the outputs equal on the Multi30k
task workload); sampling settings in a model's generation_config can never leak in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from curatune.chat_format import ChatSettings
from curatune.evaluate.lm_scoring import (
    _accepts_logits_to_keep,
    cache_argument,
    output_cache,
)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    batch_size: int = 16
    stop: list[str] = field(default_factory=list)


@dataclass
class GenerationOutput:
    outputs: list[str]
    #: Prompts whose start was cut so prompt + answer fit the model's context.
    truncated_prompts: int = 0


def prompt_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to (not including) its last assistant turn."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return [dict(m) for m in messages[:i]]
    return [dict(m) for m in messages]


def format_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]], chat: ChatSettings | None = None,
                  tools: list[dict[str, Any]] | None = None) -> str:
    """The text the model continues, rendered as in training (curatune.chat_format).

    ``chat``: the run's train.chat_template / system_prompt, so the base model and every cell
    see the template and system prompt the cells were trained with. Without a configured
    template, a tokenizer without one gets training's documented plain template (a fine-tuned
    cell's tokenizer carries it already; the base model's does not), passed per call so a
    shared, cached tokenizer is never modified.
    """
    chat = chat or ChatSettings()
    return tokenizer.apply_chat_template(
        chat.messages(prompt_messages(messages)), tools=tools or None, tokenize=False, add_generation_prompt=True,
        chat_template=chat.template_for(tokenizer),
    )


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    # The template writes its own special tokens and training tokenizes each rendered
    # segment with add_special_tokens=False; a second BOS would shift the prompt.
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id is not None and int(token_id) not in ids:
                ids.append(int(token_id))
    return ids


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut ``text`` before the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def _context_limit(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    progress: bool = True,
    description: str = "generate",
) -> GenerationOutput:
    """Greedy answers to already formatted ``prompts`` (see :func:`format_prompt`)."""
    settings = settings or GenerationSettings()
    if not prompts:
        return GenerationOutput([])
    encoded = encode_prompts(tokenizer, prompts)

    truncated = 0
    limit = _context_limit(model)
    if limit is not None:
        room = max(limit - settings.max_new_tokens, 1)
        for i, ids in enumerate(encoded):
            if len(ids) > room:  # keep the end: the instruction's tail and the generation prompt
                encoded[i] = ids[-room:]
                truncated += 1

    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_ids[0] if eos_ids else 0
    decoder = GreedyDecoder(model, tokenizer, settings.max_new_tokens, eos_ids, settings.stop, pad_id)

    # Longest first: the first batch shows memory problems early; similar lengths pad little.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str] = [""] * len(encoded)
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    bar = tqdm(batches, desc=description, unit="batch", leave=False, disable=not progress)
    for batch in bar:
        for i, new_tokens in zip(batch, decoder.decode([encoded[i] for i in batch])):
            text = tokenizer.decode(new_tokens, skip_special_tokens=True)
            outputs[i] = cut_at_stop(text, settings.stop).strip()
    return GenerationOutput(outputs, truncated)


class GreedyDecoder:
    """Greedy decoding of one left-padded batch with a KV cache; finished rows leave the batch.

    ``decode`` returns each row's new tokens without the EOS that ended it. A row finishes at
    an EOS token, when its decoded text contains a stop string (checked as ``generate``'s
    ``stop_strings`` would, on the text of the new tokens), or after ``max_new_tokens``.
    """

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int, eos_ids: Sequence[int],
                 stop: Sequence[str], pad_id: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.eos_ids = set(eos_ids)
        self.stop = [s for s in stop if s]
        self.pad_id = pad_id
        self.cache_kw = cache_argument(model)  # `cache` on transformers >= 5.24
        self.keep_last_logits = _accepts_logits_to_keep(model)

    def decode(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        device = self.model.device
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        # positions as generate() computes them: pads get 1, real tokens count from 0
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        extra = {"logits_to_keep": 1} if self.keep_last_logits else {}
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        cache = output_cache(out)
        can_drop_rows = hasattr(cache, "batch_select_indices")

        answers: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        rows = list(range(len(prompts)))  # the prompt each cache row belongs to
        next_position = positions[:, -1] + 1
        for step in range(self.max_new_tokens):
            tokens = out.logits[:, -1, :].argmax(dim=-1)
            for r, token in enumerate(tokens.tolist()):
                prompt = rows[r]
                if not finished[prompt]:
                    finished[prompt] = self._ends(answers[prompt], token)
            running = [r for r, prompt in enumerate(rows) if not finished[prompt]]
            if not running or step == self.max_new_tokens - 1:
                break
            # Dropping rows copies the whole KV cache, which on a CPU costs about one decoding step:
            # worth it only once at least half the rows are finished (at most log2(batch) copies).
            if can_drop_rows and len(running) <= len(rows) // 2:
                keep = torch.tensor(running, device=device)
                cache.batch_select_indices(keep)
                tokens, mask, next_position = tokens[keep], mask[keep], next_position[keep]
                rows = [rows[r] for r in running]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                             use_cache=True, **{self.cache_kw: cache})
            cache = output_cache(out)
            next_position = next_position + 1
        return answers

    def _ends(self, answer: list[int], token: int) -> bool:
        """Take a row's next token; whether the answer has ended (EOS, not kept, or a stop string)."""
        if token in self.eos_ids:
            return True
        answer.append(token)
        return bool(self.stop) and any(stop in self.tokenizer.decode(answer, skip_special_tokens=True)
                                       for stop in self.stop)
