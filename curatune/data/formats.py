"""Outside record formats (alpaca, dolly, ShareGPT, ...) and their conversion to messages.

Every format is described by a :class:`FieldMap`: which field of a raw row holds the
instruction, the input, the output, a ready-made conversation, the category, ... A user's
``mapping`` is the same thing written by hand, so "detect a format" and "apply a mapping"
are one code path: pick a FieldMap, then :class:`RowConverter` turns each raw row into
messages or raises :class:`RowRejected` with a short machine-friendly reason.

Nothing here reads files; :mod:`curatune.data.loaders` does that and keeps the ledger.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable

from curatune.errors import DataError
from curatune.records import message_text

# ----------------------------------------------------------------------------- reasons

#: Rejection reasons a loader can give (column ``reason`` of the ledger, step "load").
REASONS = {
    "invalid_json": "the line or element is not valid JSON",
    "not_an_object": "the row is valid JSON but not an object ({...})",
    "malformed_row": "a CSV/TSV row with more or fewer fields than the header",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type (e.g. a list where text is expected)",
    "empty_conversation": "the conversation list is empty",
    "empty_content": "the instruction/output is empty, or every user (or every assistant) turn of a conversation is",
    "no_user_turn": "the conversation has no user turn",
    "no_assistant_turn": "the conversation has no assistant turn",
    "unknown_role": "a turn's role/from is not one of the known speaker names",
    "undecodable_text": "the row contains bytes that are not valid in the file's encoding",
    "bad_tool_call": "a tool call has no function name, or its arguments (or the row's tools) are not valid JSON",
}


class RowRejected(Exception):
    """One raw row that cannot become a record; the loader writes it to the ledger."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


# ----------------------------------------------------------------------------- field maps

#: Keys a user mapping may set (SourceConfig.mapping).
MAPPING_KEYS = ("system", "instruction", "input", "output", "messages", "conversations", "category")


@dataclass(frozen=True)
class FieldMap:
    """Which raw field plays which part. ``None`` = that part is not used.

    Required parts: ``messages``, or ``conversations``, or both ``instruction`` and
    ``output``. ``system``, ``input`` and ``category`` are optional: a row without them
    is fine.
    """

    system: str | None = None
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    messages: str | None = None
    conversations: str | None = None
    category: str | None = None

    @property
    def kind(self) -> str | None:
        """'messages', 'conversations', 'instruction' or None when incomplete."""
        if self.messages:
            return "messages"
        if self.conversations:
            return "conversations"
        if self.instruction and self.output:
            return "instruction"
        return None

    def required_fields(self) -> list[str]:
        kind = self.kind
        if kind == "messages":
            return [self.messages]  # type: ignore[list-item]
        if kind == "conversations":
            return [self.conversations]  # type: ignore[list-item]
        if kind == "instruction":
            return [self.instruction, self.output]  # type: ignore[list-item]
        return []

    def used_fields(self) -> set[str]:
        return {getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def overlay(self, mapping: dict[str, str]) -> "FieldMap":
        """This map with the user's mapping on top; an empty value switches a part off."""
        return replace(self, **{k: (v or None) for k, v in mapping.items()})


#: The formats ``format: auto`` detects, with the fields each one reads.
PRESETS: dict[str, FieldMap] = {
    "alpaca": FieldMap(system="system", instruction="instruction", input="input", output="output", category="category"),
    "dolly": FieldMap(system="system", instruction="instruction", input="context", output="response", category="category"),
    "gpteacher": FieldMap(system="system", instruction="instruction", input="input", output="response", category="category"),
    "prompt_completion": FieldMap(system="system", instruction="prompt", output="completion", category="category"),
    "sharegpt": FieldMap(system="system", conversations="conversations", category="category"),
    "openai": FieldMap(messages="messages", category="category"),
}


def detect_row_format(keys: Iterable[str]) -> str | None:
    """The format a single row's field names point to, or None.

    Order matters: a row with ``messages`` is a chat even if it also has an
    ``instruction``; dolly and GPTeacher both answer in ``response`` and differ by
    ``context`` vs ``input``.
    """
    keys = set(keys)
    if "messages" in keys:
        return "openai"
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys and "response" in keys:
        return "dolly" if "context" in keys else "gpteacher"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    return None


#: How many leading rows vote on a file's format.
DETECTION_SAMPLE = 100


def resolve_field_map(
    format: str, mapping: dict[str, str] | None, sample: list[dict[str, Any]], where: str
) -> tuple[str, FieldMap]:
    """Pick the FieldMap for one file: forced format, detected format, and/or mapping.

    * ``mapping`` complete on its own (has messages, conversations, or instruction+output)
      and ``format: auto`` -> the mapping alone (reported as format "mapping").
    * otherwise the forced or detected format, with the mapping laid over it.

    Detection is a vote of the first :data:`DETECTION_SAMPLE` object rows; rows that fit
    another format are rejected one by one later, not the whole file.
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPING_KEYS))
    if unknown:
        raise DataError(
            f"{where}: unknown mapping key(s) {', '.join(unknown)}; allowed: {', '.join(MAPPING_KEYS)}"
        )
    if format != "auto":
        if format not in PRESETS:
            raise DataError(f"{where}: unknown format {format!r}; allowed: auto, {', '.join(PRESETS)}")
        name, base = format, PRESETS[format]
    else:
        from_mapping = FieldMap().overlay(mapping)
        if from_mapping.kind is not None:
            return "mapping", from_mapping
        votes = Counter(detect_row_format(row) for row in sample[:DETECTION_SAMPLE])
        votes.pop(None, None)
        if not votes:
            seen = sorted({k for row in sample[:DETECTION_SAMPLE] for k in row})
            raise DataError(
                f"{where}: cannot detect the record format from the fields "
                f"{', '.join(seen) or '(none)'}; set `format:` or a `mapping:` such as "
                "{instruction: <field>, output: <field>} (see docs/data.md)"
            )
        name = votes.most_common(1)[0][0]
        base = PRESETS[name]
    field_map = base.overlay(mapping)
    if mapping:
        name = f"{name}+mapping"
    if field_map.kind is None:
        raise DataError(
            f"{where}: the mapping {mapping} leaves no instruction+output, messages or "
            "conversations field to read"
        )
    return name, field_map


# ----------------------------------------------------------------------------- roles

#: Speaker names seen in the wild -> our three roles. ShareGPT uses ``from``; OpenAI ``role``.
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    # Tool results: OpenAI "tool" (legacy "function"), ShareGPT/LLaMA-Factory "observation", Llama 3 "ipython".
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
    # ShareGPT/LLaMA-Factory: an assistant turn whose value is the call, {"name", "arguments"} as JSON.
    "function_call": "assistant",
}

#: Speaker names whose turn is a tool call written as JSON text (the value becomes ``tool_calls``).
CALL_SPEAKERS = {"function_call"}

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(value: Any) -> bool:
    """True when any text inside ``value`` holds an undecodable byte (surrogateescape)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_lone_surrogate(v) for v in value)
    return False


# ----------------------------------------------------------------------------- conversion


@dataclass
class Converted:
    messages: list[dict[str, str]]
    category: str | None
    meta: dict[str, Any]


class RowConverter:
    """Turns raw rows (dicts) into messages + category + passthrough meta with one FieldMap."""

    def __init__(self, field_map: FieldMap, format_name: str = "mapping"):
        self.field_map = field_map
        self.format_name = format_name
        self._used = field_map.used_fields()

    def convert(self, row: Any) -> Converted:
        if not isinstance(row, dict):
            raise RowRejected("not_an_object", f"expected an object ({{...}}), got {_type_name(row)}")
        fm = self.field_map
        for name in fm.required_fields():
            if row.get(name) is None:
                have = ", ".join(sorted(map(str, row))) or "no fields"
                state = "is null" if name in row else "is missing"
                raise RowRejected(
                    "missing_field", f"field '{name}' {state} ({self.format_name} format; the row has: {have})"
                )
        kind = fm.kind
        if kind == "instruction":
            messages = self._instruction_messages(row)
        else:
            field = fm.messages if kind == "messages" else fm.conversations
            messages = self._chat_messages(row, field)  # type: ignore[arg-type]
        messages, used_system = self._with_system(row, messages)
        self._check_conversation(messages)
        category = self._category(row)
        consumed = self._used if used_system or not fm.system else self._used - {fm.system}
        meta = {k: v for k, v in row.items() if k not in consumed}
        if row.get("tools") is not None and fm.kind != "instruction":
            meta["tools"] = normalize_tools(row["tools"])
        return Converted(messages, category, meta)

    # -- the two shapes of raw data

    def _instruction_messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        fm = self.field_map
        instruction = self._text(row, fm.instruction, required=True)
        output = self._text(row, fm.output, required=True)
        extra = self._text(row, fm.input, required=False) if fm.input else ""
        if not instruction.strip():
            raise RowRejected("empty_content", f"field '{fm.instruction}' (the instruction) is empty")
        if not output.strip():
            raise RowRejected("empty_content", f"field '{fm.output}' (the output) is empty")
        # Alpaca's own prompt joins instruction and input with a blank line.
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]

    def _chat_messages(self, row: dict[str, Any], field: str) -> list[dict[str, str]]:
        turns = row[field]
        if isinstance(turns, str):
            # CSV and some Parquet exports store the conversation as a JSON string.
            turns = _parse_json_text(turns, field)
        if isinstance(turns, tuple):
            turns = list(turns)
        if not isinstance(turns, list):
            raise RowRejected("wrong_type", f"field '{field}' must be a list of turns, got {_type_name(turns)}")
        if not turns:
            raise RowRejected("empty_conversation", f"field '{field}' is an empty list")
        messages = [self._turn(turn, field, i) for i, turn in enumerate(turns)]
        # An empty turn inside a conversation is repaired by curation (its exchange is dropped
        # and ledgered); only a conversation with no non-empty user or assistant turn is rejected.
        for role in ("user", "assistant"):
            present = [i for i, m in enumerate(messages) if m["role"] == role]
            if present and not any(message_text(messages[i]).strip() for i in present):
                i = present[0]
                key = "value" if "value" in turns[i] else "content"
                raise RowRejected("empty_content", f"{field}[{i}].{key} ({role} turn) is empty or whitespace only")
        return messages

    def _turn(self, turn: Any, field: str, i: int) -> dict[str, str]:
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RowRejected("wrong_type", f"{where} must be an object, got {_type_name(turn)}")
        # ShareGPT says from/value, OpenAI role/content; accept either spelling in both.
        role_key = "from" if "from" in turn else "role"
        content_key = "value" if "value" in turn else "content"
        if turn.get(role_key) is None:
            raise RowRejected("missing_field", f"{where} has no 'from' or 'role'")
        speaker = turn[role_key]
        if not isinstance(speaker, str):
            raise RowRejected("wrong_type", f"{where}.{role_key} must be text, got {_type_name(speaker)}")
        role = ROLE_ALIASES.get(speaker.strip().lower())
        if role is None:
            raise RowRejected(
                "unknown_role",
                f"{where}.{role_key} is {speaker!r}; known: {', '.join(sorted(ROLE_ALIASES))}",
            )
        calls = tool_calls_of(turn, speaker.strip().lower(), content_key, where)
        if content_key not in turn and not calls:
            raise RowRejected("missing_field", f"{where} has no 'value' or 'content'")
        if calls and (speaker.strip().lower() in CALL_SPEAKERS or turn.get(content_key) is None):
            content = ""  # the value was the call itself, or OpenAI's content: null beside tool_calls
        else:
            content = _content_text(turn[content_key], f"{where}.{content_key}")
        message: dict[str, Any] = {"role": role, "content": content}
        if calls:
            if role != "assistant":
                raise RowRejected("bad_tool_call", f"{where} is a {role} turn with tool calls (only assistant turns call tools)")
            message["tool_calls"] = calls
        if role == "tool":
            for key in ("tool_call_id", "name"):
                if isinstance(turn.get(key), str) and turn[key]:
                    message[key] = turn[key]
        return message

    def _with_system(
        self, row: dict[str, Any], messages: list[dict[str, str]]
    ) -> tuple[list[dict[str, str]], bool]:
        """Prepend the row's system prompt, unless the conversation already has one.

        Returns the messages and whether the system field was used (an unused one stays
        in meta so nothing is silently dropped)."""
        fm = self.field_map
        if not fm.system or row.get(fm.system) is None:
            return messages, False
        system = self._text(row, fm.system, required=False)
        if any(m["role"] == "system" for m in messages):
            return messages, False
        if not system.strip():
            return messages, True
        return [{"role": "system", "content": system}, *messages], True

    def _category(self, row: dict[str, Any]) -> str | None:
        name = self.field_map.category
        if not name or row.get(name) is None:
            return None
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowRejected("wrong_type", f"field '{name}' (category) must be text, got {_type_name(value)}")
        text = str(value).strip()
        return text or None

    def _text(self, row: dict[str, Any], name: str | None, *, required: bool) -> str:
        if name is None or row.get(name) is None:
            if required:
                raise RowRejected("missing_field", f"field '{name}' is missing")
            return ""
        return _scalar_text(row[name], f"field '{name}'")

    # -- checks every conversation passes

    @staticmethod
    def _check_conversation(messages: list[dict[str, str]]) -> None:
        roles = [m["role"] for m in messages]
        if "assistant" not in roles:
            raise RowRejected("no_assistant_turn", "the conversation has no assistant turn")
        if "user" not in roles:
            raise RowRejected("no_user_turn", "the conversation has no user turn")
        for i, m in enumerate(messages):
            if _LONE_SURROGATE.search(m["content"]):
                raise RowRejected("undecodable_text", f"turn {i} ({m['role']}) contains undecodable bytes")


def tool_calls_of(turn: dict[str, Any], speaker: str, content_key: str, where: str) -> list[dict[str, Any]]:
    """A turn's tool calls in OpenAI's shape with arguments as an object, or [] when it has none.

    Read from OpenAI's ``tool_calls`` (or legacy ``function_call``) field, or from the JSON value
    of a ShareGPT ``function_call`` turn ({"name", "arguments"} or a list of them)."""
    if speaker in CALL_SPEAKERS:
        raw = turn.get(content_key)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise RowRejected("bad_tool_call", f"{where}.{content_key} (a function_call turn) is not JSON") from None
        raw_calls = raw if isinstance(raw, list) else [raw]
        return [_tool_call(c, f"{where}.{content_key}") for c in raw_calls]
    if turn.get("tool_calls") is not None:
        raw_calls = turn["tool_calls"]
        if isinstance(raw_calls, str):
            raw_calls = _parse_json_text(raw_calls, f"{where}.tool_calls")
        if not isinstance(raw_calls, list):
            raise RowRejected("bad_tool_call", f"{where}.tool_calls must be a list, got {_type_name(raw_calls)}")
        return [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
    if turn.get("function_call") is not None:
        return [_tool_call(turn["function_call"], f"{where}.function_call")]
    return []


def _tool_call(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RowRejected("bad_tool_call", f"{where} must be an object, got {_type_name(raw)}")
    function = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowRejected("bad_tool_call", f"{where} has no function name")
    arguments = function.get("arguments", function.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise RowRejected("bad_tool_call", f"{where}: the arguments of {name!r} are not valid JSON") from None
    if not isinstance(arguments, dict):
        raise RowRejected("bad_tool_call", f"{where}: the arguments of {name!r} must be a JSON object")
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(raw.get("id"), str) and raw["id"]:
        call["id"] = raw["id"]
    return call


def normalize_tools(raw: Any) -> list[dict[str, Any]]:
    """The row's function schemas as OpenAI tools ({"type": "function", "function": {...}}).

    Accepts a list or its JSON text (LLaMA-Factory's sharegpt format stores a string), with or
    without the {"type": "function"} wrapper."""
    if isinstance(raw, str):
        if not raw.strip():
            return []
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RowRejected("bad_tool_call", "field 'tools' is text that is not JSON") from None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise RowRejected("bad_tool_call", f"field 'tools' must be a list of function schemas, got {_type_name(raw)}")
    tools = []
    for j, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) and isinstance(tool.get("function"), dict) else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowRejected("bad_tool_call", f"tools[{j}] has no function name")
        tools.append({"type": "function", "function": function})
    return tools


def _scalar_text(value: Any, where: str) -> str:
    """Text fields accept strings and plain numbers (``"answer": 4``); nothing else."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowRejected("wrong_type", f"{where} must be text, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowRejected("wrong_type", f"{where} must be text, got {value}")
    return str(value)


def _content_text(value: Any, where: str) -> str:
    """A turn's content: text, or OpenAI's list of parts when every part is text."""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else _type_name(part)
                raise RowRejected("wrong_type", f"{where}[{j}] is a non-text part ({kind})")
        return "\n".join(texts)
    if value is None:
        raise RowRejected("missing_field", f"{where} is null")
    return _scalar_text(value, where)


def _parse_json_text(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise RowRejected("wrong_type", f"field '{field}' is text that is not a JSON list of turns") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


# ----------------------------------------------------------------------------- parallel text

#: ISO 639-1 codes -> English names, for guessing ``{source_lang}``/``{target_lang}`` of
#: ``format: parallel`` from file suffixes (``train.en.gz`` -> English). Any other
#: language is given by name in ``source_lang``/``target_lang``.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "he": "Hebrew",
    "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


def language_name(value: str) -> str:
    """A configured language: a known code becomes its name (``de`` -> German), a name stays."""
    return LANGUAGE_NAMES.get(value.strip().lower(), value.strip())


class ParallelConverter:
    """Turns one aligned sentence pair into a user/assistant conversation.

    The user turn is the instruction template filled with the source sentence and the two
    language names; the assistant turn is the target sentence. Leading and trailing
    whitespace of each sentence (trailing spaces, a Windows ``\\r``) is dropped: it is noise
    in line-aligned corpora and would otherwise be taught to the model.
    """

    def __init__(self, template: str, source_lang: str | None, target_lang: str | None):
        self.template = template
        self.source_lang = source_lang
        self.target_lang = target_lang

    def convert(self, source: str, target: str, source_where: str, target_where: str) -> list[dict[str, str]]:
        source, target = source.strip(), target.strip()
        empty = [where for where, text in ((source_where, source), (target_where, target)) if not text]
        if empty:
            raise RowRejected("empty_content", f"empty line in {' and '.join(empty)}")
        for where, text in ((source_where, source), (target_where, target)):
            if _LONE_SURROGATE.search(text):
                raise RowRejected("undecodable_text", f"{where} holds bytes that are not valid text in the file's encoding")
        user = self.template.format(source=source, source_lang=self.source_lang, target_lang=self.target_lang)
        return [{"role": "user", "content": user}, {"role": "assistant", "content": target}]
