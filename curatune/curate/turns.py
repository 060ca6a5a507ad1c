"""Conversations as exchanges: the unit that turn-level rules judge, trim and repair.

An *exchange* is an assistant turn together with the user (and system) turns since the
previous assistant turn. Turn-level rules judge each assistant turn with its user turn;
when one fails, the conversation is cut before that exchange and the clean prefix is kept
(a *trim*), provided it still holds a user turn and an assistant turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from pydantic import BaseModel

from curatune.curate.base import TRIM, CurateContext, Removal, Rule, Step, StepResult
from curatune.records import Record, message_text


@dataclass(frozen=True)
class AssistantTurn:
    """One assistant turn in context: what a turn-level rule looks at."""

    messages: list[dict[str, str]]
    index: int  # position of the assistant message in ``messages``
    exchange_start: int  # first message of its exchange (cut here to remove the exchange)
    user: str  # the last user message before it ("" when the conversation opens with the assistant)
    context_chars: int  # characters of every message before it (the prompt it answers)

    @property
    def response(self) -> str:
        return message_text(self.messages[self.index])

    @property
    def is_tool_call(self) -> bool:
        """The turn calls a tool: structured output, not an answer for the text rules to judge."""
        return bool(self.messages[self.index].get("tool_calls"))

    @property
    def next_user(self) -> str | None:
        """The user turn right after this one (None at the end of the conversation)."""
        following = self.messages[self.index + 1] if self.index + 1 < len(self.messages) else None
        return following["content"] if following and following["role"] == "user" else None

    @property
    def context(self) -> str:
        """Every message before this turn, joined (built on demand: long chats would cost O(n^2))."""
        return "\n".join(message_text(m) for m in self.messages[: self.index])


def assistant_turns(messages: list[dict[str, str]]) -> Iterator[AssistantTurn]:
    """Every assistant turn in order, with its exchange start, user turn and context size."""
    exchange_start = 0
    user = ""
    context_chars = 0
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            yield AssistantTurn(messages, i, exchange_start, user, context_chars + max(0, i - 1))
            exchange_start = i + 1
        elif message["role"] == "user":
            user = message["content"]
        context_chars += len(message_text(message))


def is_complete(messages: list[dict[str, str]]) -> bool:
    """A trainable conversation: at least one non-empty user turn and one non-empty assistant turn."""
    roles = {m["role"] for m in messages if message_text(m).strip()}
    return "user" in roles and "assistant" in roles


def count_turns(messages) -> int:
    """Turns of a ledger or record conversation (a load rejection has none)."""
    try:
        return len(messages)
    except TypeError:  # None / NaN for rows that never became a conversation
        return 0


def prefix_record(record: Record, cut: int) -> Record | None:
    """The record cut before message ``cut``, or None when that leaves no complete exchange."""
    messages = record.messages[:cut]
    # A trailing user turn with no answer teaches nothing; the prefix ends on an assistant turn.
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    if not is_complete(messages):
        return None
    return Record.make(messages, category=record.category, source=record.source, meta=record.meta)


@dataclass(frozen=True)
class Repair:
    """An empty turn taken out: the repaired record and the first message index removed."""

    record: Record | None  # None: nothing trainable is left
    first_removed: int
    removed: int  # number of messages removed
    detail: str


def repair_empty_turns(record: Record) -> Repair | None:
    """Drop empty user/assistant turns and the exchanges they break; None when none is empty.

    * an empty assistant turn: its exchange (the user turns it answers) goes with it;
    * an empty user turn next to another user turn (ShareGPT: "Please continue" then ""):
      only the empty message goes, the exchange stays whole;
    * an empty user turn that is the whole question: the exchange it opens goes.
    """
    messages = record.messages
    # A tool result may be empty (a call that returns nothing); only user and assistant turns must say something.
    empty = [i for i, m in enumerate(messages) if m["role"] in ("user", "assistant") and not message_text(m).strip()]
    if not empty:
        return None
    drop: set[int] = set()
    for i in empty:
        role = messages[i]["role"]
        if role == "assistant":
            j = i - 1
            while j >= 0 and messages[j]["role"] != "assistant":
                drop.add(j)
                j -= 1
            drop.add(i)
            continue
        # An empty user turn: is there another (non-empty) user turn in the same exchange?
        j, k = i - 1, i + 1
        while j >= 0 and messages[j]["role"] == "user" and not messages[j]["content"].strip():
            j -= 1
        while k < len(messages) and messages[k]["role"] == "user" and not messages[k]["content"].strip():
            k += 1
        has_sibling = (j >= 0 and messages[j]["role"] == "user") or (k < len(messages) and messages[k]["role"] == "user")
        drop.add(i)
        if not has_sibling and k < len(messages) and messages[k]["role"] == "assistant":
            drop.add(k)  # the answer to an empty question
    kept = [m for i, m in enumerate(messages) if i not in drop]
    first = min(drop)
    roles = ", ".join(sorted({messages[i]["role"] for i in empty}))
    detail = f"{len(empty)} empty {roles} turn(s); removed {len(drop)} message(s) from message {first}"
    if not is_complete(kept):
        return Repair(None, first, len(messages), detail + "; no complete exchange left")
    repaired = Record.make(kept, category=record.category, source=record.source, meta=record.meta)
    return Repair(repaired, first, len(messages) - len(kept), detail)


class RepairConfig(BaseModel):
    """The repair pass has no settings: an empty turn is never training data."""

    name: str = "repair"
    enabled: bool = True


class RepairEmptyTurns(Step):
    """Always runs first: a conversation with an empty turn loses that exchange, not everything.

    Ledger rows: reason ``empty_turn``, action ``trim`` (the repaired record is kept) or
    ``drop`` (no complete exchange was left).
    """

    config_class = RepairConfig
    reasons = ("empty_turn",)
    rules = {"empty_turn": Rule("empty_turn", "turn", TRIM, "an empty user or assistant turn: its exchange is removed")}

    def __init__(self, config: RepairConfig | None = None):
        super().__init__(config or RepairConfig())

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        kept: list[Record] = []
        removed: list[Removal] = []
        for record in records:
            repair = repair_empty_turns(record)
            if repair is None:
                kept.append(record)
            elif repair.record is None:
                removed.append(Removal(record, "empty_turn", repair.detail, turn=repair.first_removed))
            else:
                kept.append(repair.record)
                removed.append(Removal(record, "empty_turn", repair.detail, action=TRIM, turn=repair.first_removed,
                                       replacement=repair.record))
        return StepResult(kept, removed)
