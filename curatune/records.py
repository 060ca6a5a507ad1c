"""The one record type for instruction data, from the loader onwards.

A record is a conversation (``messages``) plus where it came from. Converters from
outside formats (alpaca, ShareGPT, ...) live in :mod:`curatune.data.formats`; everything
after loading sees only :class:`Record`.

On disk (Parquet) a table of records has the columns of :data:`RECORD_COLUMNS`;
``meta`` is stored as a JSON string so heterogeneous passthrough fields survive Parquet.
Ledgers of removed records add the columns of :data:`LEDGER_COLUMNS`.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

ROLES = ("system", "user", "assistant", "tool")

#: Optional message keys besides role and content (OpenAI's tool-calling shape):
#: ``tool_calls`` on an assistant message: [{"type": "function", "function": {"name", "arguments": {...}},
#: "id"?}]; ``tool_call_id`` and ``name`` on a ``tool`` message (the result of a call).
#: On disk (Parquet) ``tool_calls`` is a JSON string: arguments differ in shape from call to call.
MESSAGE_EXTRAS = ("tool_calls", "tool_call_id", "name")

RECORD_COLUMNS = ["id", "messages", "category", "source", "meta"]
#: Extra columns of a removal ledger (curate/removed.parquet). ``action``: "drop" (the record
#: is gone) or "trim" (the conversation was cut; ``id``/``messages`` are the original's and
#: ``kept_as`` is the id of the shortened record in kept.parquet). ``turn``: index into
#: ``messages`` of the first message removed (trim) or flagged (drop), -1 for a rule that
#: judges the whole record. ``span``: the exact flagged text inside that message, or "".
#: ``eval_item``: for a ``contaminated`` record, the evaluation item it overlaps, as
#: "<file>:<line>:<field>" for a suite file or "<source>:<record id>:<prompt|response>" for an
#: ``eval_sources`` record (its record id is the example_id of the held-out samples); else None.
LEDGER_COLUMNS = ["step", "reason", "detail", "duplicate_of", "cluster_id", "action", "turn", "span", "kept_as",
                  "eval_item"]
#: What the columns added after the first ledgers mean for rows written before them.
LEDGER_DEFAULTS: dict[str, Any] = {"action": "drop", "turn": -1, "span": "", "kept_as": None, "eval_item": None}


def with_ledger_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """A ledger with every LEDGER_COLUMNS column; rows from older runs read as whole-record drops."""
    frame = frame.copy()
    for column, default in LEDGER_DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = [default] * len(frame)
    frame["action"] = frame["action"].map(lambda a: a if a in ("drop", "trim") else "drop")
    frame["turn"] = pd.to_numeric(frame["turn"], errors="coerce").fillna(-1).astype(int)
    frame["span"] = frame["span"].map(lambda s: s if isinstance(s, str) else "")
    for column in ("kept_as", "eval_item"):
        frame[column] = frame[column].map(lambda s: s if isinstance(s, str) and s else None).astype(object)
    return frame


def content_id(messages: list[dict[str, Any]], tools: Any = None) -> str:
    """Stable content hash of a conversation: same messages, same id, on any machine.

    Tool calls, tool-result links and the tool schemas count (two chats that differ only in a
    call's arguments are different records); a plain chat hashes as it always has."""
    canonical = json.dumps(
        [[m["role"], m["content"]] + ([{k: m[k] for k in MESSAGE_EXTRAS if k in m}] if _extras(m) else [])
         for m in messages] + ([["tools", tools]] if tools else []),
        ensure_ascii=False, separators=(",", ":"), sort_keys=True,
    )
    return hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:16]


def _extras(message: dict[str, Any]) -> bool:
    return any(message.get(k) is not None for k in MESSAGE_EXTRAS)


def clean_message(message: dict[str, Any]) -> dict[str, Any]:
    """role, content and whichever tool keys are set (Parquet fills absent ones with None)."""
    out: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    for key in MESSAGE_EXTRAS:
        value = message.get(key)
        if value is None:
            continue
        if key == "tool_calls" and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out


def tool_call_text(call: dict[str, Any]) -> str:
    """A tool call as text for the rules that read text: ``name({"arg": ...})``."""
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
    return f"{function.get('name', '')}({arguments})"


def message_text(message: dict[str, Any]) -> str:
    """What a message says, for curation: its content, then its tool calls (an assistant turn that
    only calls a tool is not empty)."""
    calls = message.get("tool_calls") or []
    if not calls:
        return message["content"]
    text = "\n".join(tool_call_text(c) for c in calls)
    return f"{message['content']}\n{text}" if message["content"] else text


def has_tools(messages: list[dict[str, Any]], tools: Any = None) -> bool:
    """True for a tool-calling conversation: tool schemas, a tool call, or a tool result."""
    return bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


@dataclass
class Record:
    id: str
    messages: list[dict[str, Any]]
    category: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        messages: list[dict[str, str]],
        *,
        category: str | None = None,
        source: str = "",
        meta: dict[str, Any] | None = None,
    ) -> "Record":
        messages = [clean_message(m) for m in messages]
        meta = dict(meta or {})
        return cls(content_id(messages, meta.get("tools")), messages, category, source, meta)

    # Views used by curation steps, training and evaluation alike.
    @property
    def prompt(self) -> str:
        """Everything the model sees before its last answer, as plain text (tool calls included)."""
        return "\n".join(message_text(m) for m in self.messages[: self.last_assistant_index])

    @property
    def response(self) -> str:
        """The last assistant turn: what fine-tuning teaches and evaluation compares."""
        return message_text(self.messages[self.last_assistant_index])

    @property
    def text(self) -> str:
        return "\n".join(message_text(m) for m in self.messages)

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        """The function schemas the conversation may call (the source row's ``tools``), or None."""
        return self.meta.get("tools") or None

    @property
    def uses_tools(self) -> bool:
        return has_tools(self.messages, self.tools)

    @property
    def last_assistant_index(self) -> int:
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i]["role"] == "assistant":
                return i
        raise ValueError(f"record {self.id} has no assistant turn")

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messages": [_stored(m) for m in self.messages],
            "category": self.category,
            "source": self.source,
            "meta": standard_json(self.meta),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        meta = row.get("meta")
        messages = [clean_message(m) for m in row["messages"]]
        category = row.get("category")
        if isinstance(category, float):  # pandas NaN for a missing category
            category = None
        return cls(
            id=row["id"],
            messages=messages,
            category=category,
            source=row.get("source") or "",
            meta=json.loads(meta) if isinstance(meta, str) and meta else {},
        )


def _stored(message: dict[str, Any]) -> dict[str, Any]:
    """A message as written to Parquet: tool calls as one JSON string (their arguments have no fixed shape)."""
    if "tool_calls" not in message:
        return message
    return {**message, "tool_calls": json.dumps(message["tool_calls"], ensure_ascii=False, sort_keys=True)}


def standard_json(value: Any) -> str:
    """``value`` as standard JSON: NaN and infinities (pandas' missing values in a passthrough
    column, or NaN in the input) become null, which every JSON reader accepts."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    return pd.DataFrame([r.to_row() for r in records], columns=RECORD_COLUMNS)


def frame_to_records(frame: pd.DataFrame) -> list[Record]:
    return [Record.from_row(row) for row in frame.to_dict("records")]
