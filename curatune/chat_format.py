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

Tool calling: an assistant turn that calls a tool (``tool_calls``) is an assistant turn and is
trained; ``tool`` results are context. The record's function schemas (``Record.tools``) go to
the template as ``tools=``. A template that drops a call, a result or a schema (most plain chat
templates render only ``content``) would teach the model empty turns, so :func:`encode` raises
one :class:`~curatune.errors.DataError` naming the record's file and row instead.

:class:`ChatSettings` carries the ``train.chat_template``, ``train.system_prompt`` and
``train.train_on_inputs`` settings; training and evaluation both format through it, so a
cell is prompted at evaluation exactly as it was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from curatune.errors import DataError
from curatune.records import Record, message_text

IGNORE_INDEX = -100

#: Plain chats render as before; tool schemas, calls and results get their own headings.
PLAIN_TEMPLATE = (
    "{% if tools %}### Tools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'tool' %}### Tool result:\n{{ message['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ message['content'] }}"
    "{% for call in message.tool_calls or [] %}<tool_call>{{ {'name': call.function.name, "
    "'arguments': call.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


@dataclass(frozen=True)
class ChatSettings:
    """How conversations become text: the configured template (None = the tokenizer's own, or
    PLAIN_TEMPLATE when it has none), a default system prompt for records without one, and
    whether the loss covers every token (``train_on_inputs``) or the assistant turns only."""

    template: str | None = None
    system_prompt: str | None = None
    train_on_inputs: bool = False

    @classmethod
    def from_train(cls, train: Any) -> "ChatSettings":
        """From a TrainConfig (``chat_template_text()``, ``system_prompt``, ``train_on_inputs``)."""
        return cls(train.chat_template_text(), train.system_prompt or None, train.train_on_inputs)

    def template_for(self, tokenizer: Any) -> str | None:
        """The template to pass per call (None = the tokenizer's own)."""
        if self.template:
            return self.template
        return None if getattr(tokenizer, "chat_template", None) else PLAIN_TEMPLATE

    def messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` with the default system prompt first when they have no system turn."""
        if not self.system_prompt or any(m["role"] == "system" for m in messages):
            return list(messages)
        return [{"role": "system", "content": self.system_prompt}, *messages]


def apply_chat_settings(tokenizer: Any, settings: ChatSettings) -> None:
    """Give a training tokenizer the configured template (saved with the cell), or the plain one."""
    if settings.template:
        tokenizer.chat_template = settings.template
    else:
        ensure_chat_template(tokenizer)


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


def render(tokenizer, messages: list[dict[str, Any]], *, generation_prompt: bool,
           tools: list[dict[str, Any]] | None = None) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
    )


def segments(tokenizer, messages: list[dict[str, Any]],
             tools: list[dict[str, Any]] | None = None) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained?) pieces that concatenate to the whole."""
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant_turns:
        raise ValueError("conversation has no assistant turn")
    pieces: list[tuple[str, bool]] = []
    done = ""  # text covered by pieces so far
    for i in assistant_turns:
        context = render(tokenizer, messages[:i], generation_prompt=True, tools=tools) if i else ""
        upto = render(tokenizer, messages[: i + 1], generation_prompt=False, tools=tools)
        if not (context.startswith(done) and upto.startswith(context) and len(upto) > len(context)):
            return _last_turn_only(tokenizer, messages, assistant_turns[-1], tools)
        if len(context) > len(done):
            pieces.append((context[len(done):], False))
        pieces.append((upto[len(context):], True))
        done = upto
    whole = render(tokenizer, messages, generation_prompt=False, tools=tools)
    if whole.startswith(done) and len(whole) > len(done):
        pieces.append((whole[len(done):], False))
    return pieces


def _last_turn_only(tokenizer, messages: list[dict[str, Any]], last: int,
                    tools: list[dict[str, Any]] | None = None) -> list[tuple[str, bool]]:
    context = render(tokenizer, messages[:last], generation_prompt=True, tools=tools)
    whole = render(tokenizer, messages[: last + 1], generation_prompt=False, tools=tools)
    if whole.startswith(context) and len(whole) > len(context):
        return [(context, False), (whole[len(context):], True)]
    # The template rewrites history; train the answer text plus end of sequence.
    return [(context, False), (message_text(messages[last]) + (tokenizer.eos_token or ""), True)]


def missing_tool_parts(rendered: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[str]:
    """What of a tool-calling conversation the rendered text leaves out (empty when all is there)."""
    missing = []
    for tool in tools or []:
        name = tool.get("function", tool).get("name", "")
        if name and name not in rendered:
            missing.append(f"the schema of tool {name!r}")
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            name = call.get("function", call).get("name", "")
            if name not in rendered:
                missing.append(f"the call to {name!r} in message {i}")
        if m["role"] == "tool" and m["content"].strip() and m["content"].strip() not in rendered:
            missing.append(f"the tool result in message {i}")
    return missing


def encode(tokenizer, record: Record, max_length: int, settings: ChatSettings | None = None) -> Encoded:
    """Token ids and labels (-100 on every non-assistant token unless train_on_inputs), cut at ``max_length``.

    Raises DataError naming the record's source (file:row) when the chat template fails on it
    or cannot render its tool calls."""
    settings = settings or ChatSettings()
    messages = settings.messages(record.messages)
    tools = record.tools
    where = record.source or f"record {record.id}"
    try:
        pieces = segments(tokenizer, messages, tools)
    except TemplateError as exc:
        raise DataError(
            f"{where}: the chat template cannot render this conversation ({exc}); "
            "set train.chat_template to one that can (docs/train.md)"
        ) from None
    if record.uses_tools:
        missing = missing_tool_parts("".join(text for text, _ in pieces), messages, tools)
        if missing:
            raise DataError(
                f"{where}: the model's chat template does not render tool calls ({'; '.join(missing[:3])} "
                "are missing from the rendered text), so training would teach empty turns; set "
                "train.chat_template to a template that renders tools and tool_calls (docs/train.md)"
            )
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in pieces:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if trained or settings.train_on_inputs else [IGNORE_INDEX] * len(ids))
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
