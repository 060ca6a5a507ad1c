"""Batched greedy generation for the target task.

Prompts are formatted exactly like training formats them (the conversation up to its
last assistant turn, through the tokenizer's chat template with
``add_generation_prompt=True``), sorted by length so each batch wastes little padding,
left-padded (a decoder continues from the right edge), and decoded greedily. An answer
ends at an EOS token or at the first configured stop string, which is cut from it.
Outputs come back in the caller's order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from curatune.chat_format import ChatSettings


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


class _StopStrings(StoppingCriteria):
    """Marks a row finished once its generated text contains a stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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
    gen_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=eos_ids or None,
        pad_token_id=pad_id,
        temperature=None,
        top_p=None,
        top_k=None,
        use_cache=True,
    )

    # Longest first: the first batch shows memory problems early; similar lengths pad little.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs: list[str] = [""] * len(encoded)
    device = model.device
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    bar = tqdm(batches, desc=description, unit="batch", leave=False, disable=not progress)
    for batch in bar:
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = encoded[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        stopping = StoppingCriteriaList()
        if settings.stop:
            stopping.append(_StopStrings(tokenizer, settings.stop, width))
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=gen_config,
            stopping_criteria=stopping,
        )
        for row, i in enumerate(batch):
            new_tokens = generated[row, width:].tolist()
            for at, token in enumerate(new_tokens):
                if token in eos_ids:
                    new_tokens = new_tokens[:at]
                    break
            text = tokenizer.decode(new_tokens, skip_special_tokens=True)
            outputs[i] = cut_at_stop(text, settings.stop).strip()
    return GenerationOutput(outputs, truncated)
