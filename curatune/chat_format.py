"""Turn a record into training tokens with the loss on assistant tokens only.

The conversation is rendered with the tokenizer's chat template; a model without one
gets :data:`PLAIN_TEMPLATE` (written into the saved tokenizer, so evaluation prompts the
fine-tuned model exactly as it was trained)::

    ### System:
    {system}

    ### User:
    {user}

    ### Assistant:
    {assistant}<eos>

Masking works on rendered text, one segment at a time: for every assistant turn i the
text of ``messages[:i]`` with the generation prompt is the context, and what
``messages[:i+1]`` adds after it (the answer and its end-of-turn marker) is trained.
Each segment is tokenized on its own, which is also how inference sees it: the prompt is
tokenized, then the model produces the answer tokens. A template whose renderings are not
prefixes of each other (some strip earlier turns) falls back to training the last
assistant turn only.
"""
from __future__ import annotations

from dataclasses import dataclass

from curatune.records import Record

IGNORE_INDEX = -100

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` the documented plain template when it has none; True if it did."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = PLAIN_TEMPLATE
    return True


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def render(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def segments(tokenizer, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained?) pieces that concatenate to the whole."""
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant_turns:
        raise ValueError("conversation has no assistant turn")
    pieces: list[tuple[str, bool]] = []
    done = ""  # text covered by pieces so far
    for i in assistant_turns:
        context = render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (context.startswith(done) and upto.startswith(context) and len(upto) > len(context)):
            return _last_turn_only(tokenizer, messages, assistant_turns[-1])
        if len(context) > len(done):
            pieces.append((context[len(done):], False))
        pieces.append((upto[len(context):], True))
        done = upto
    whole = render(tokenizer, messages, generation_prompt=False)
    if whole.startswith(done) and len(whole) > len(done):
        pieces.append((whole[len(done):], False))
    return pieces


def _last_turn_only(tokenizer, messages: list[dict[str, str]], last: int) -> list[tuple[str, bool]]:
    context = render(tokenizer, messages[:last], generation_prompt=True)
    whole = render(tokenizer, messages[: last + 1], generation_prompt=False)
    if whole.startswith(context) and len(whole) > len(context):
        return [(context, False), (whole[len(context):], True)]
    # The template rewrites history; train the answer text plus end of sequence.
    return [(context, False), (messages[last]["content"] + (tokenizer.eos_token or ""), True)]


def encode(tokenizer, record: Record, max_length: int) -> Encoded:
    """Token ids and labels (-100 on every non-assistant token), cut at ``max_length``."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(tokenizer, record.messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
    truncated = len(input_ids) > max_length
    return Encoded(input_ids[:max_length], labels[:max_length], truncated)


class PaddingCollator:
    """Right-pads a batch to its longest example; padding is ignored by loss and attention."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
