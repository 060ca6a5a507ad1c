"""Format detection and row conversion (curatune.data.formats), without files."""
from __future__ import annotations

import pytest

from curatune.data.formats import (
    PRESETS,
    FieldMap,
    RowConverter,
    RowRejected,
    detect_row_format,
    resolve_field_map,
)
from curatune.errors import DataError


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"instruction", "input", "output"}, "alpaca"),
        ({"instruction", "context", "response", "category"}, "dolly"),
        ({"instruction", "input", "response"}, "gpteacher"),
        ({"prompt", "completion"}, "prompt_completion"),
        ({"conversations", "id"}, "sharegpt"),
        ({"messages"}, "openai"),
        ({"messages", "instruction", "output"}, "openai"),
        ({"question", "answer"}, None),
    ],
)
def test_detect_row_format(keys, expected):
    assert detect_row_format(keys) == expected


def convert(fmt: str, row: dict, **mapping):
    name, field_map = resolve_field_map(fmt, mapping, [row], "test")
    return RowConverter(field_map, name).convert(row)


def rejection(fmt: str, row, **mapping) -> RowRejected:
    name, field_map = resolve_field_map(fmt, mapping, [row] if isinstance(row, dict) else [], "test")
    with pytest.raises(RowRejected) as info:
        RowConverter(field_map, name).convert(row)
    return info.value


def test_alpaca_joins_instruction_and_input_and_keeps_other_fields_in_meta():
    out = convert("auto", {"instruction": "Translate.", "input": "Hallo", "output": "Hello", "id": 7})
    assert out.messages == [
        {"role": "user", "content": "Translate.\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert out.meta == {"id": 7}


def test_empty_input_is_not_appended_and_system_field_becomes_a_system_turn():
    out = convert("alpaca", {"system": "Be brief.", "instruction": "Hi", "input": "  ", "output": "Hello"})
    assert [m["role"] for m in out.messages] == ["system", "user", "assistant"]
    assert out.messages[1]["content"] == "Hi"


def test_dolly_uses_context_and_category():
    out = convert("auto", {"instruction": "When?", "context": "In 2000.", "response": "2000", "category": "closed_qa"})
    assert out.messages[0]["content"] == "When?\n\nIn 2000."
    assert out.category == "closed_qa"
    assert out.meta == {}


def test_sharegpt_role_names_map_to_three_roles():
    turns = [
        {"from": "system", "value": "s"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
        {"from": "user", "value": "c"}, {"from": "chatgpt", "value": "d"}, {"from": "human", "value": "e"},
        {"from": "bing", "value": "f"}, {"from": "human", "value": "g"}, {"from": "bard", "value": "h"},
        {"from": "human", "value": "i"}, {"from": "model", "value": "j"}, {"from": "human", "value": "k"},
        {"from": "assistant", "value": "l"},
    ]
    out = convert("sharegpt", {"conversations": turns})
    assert [m["role"] for m in out.messages] == [
        "system", "user", "assistant", "user", "assistant", "user", "assistant",
        "user", "assistant", "user", "assistant", "user", "assistant",
    ]


def test_sharegpt_unknown_role_is_rejected_naming_the_role():
    exc = rejection("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "narrator", "value": "x"}, {"from": "gpt", "value": "a"}]})
    assert exc.reason == "unknown_role"
    assert "narrator" in exc.message and "conversations[1]" in exc.message


def test_sharegpt_function_call_that_is_not_json_is_rejected_naming_the_turn():
    # function_call is a known speaker now (tool calling); its value must be the call as JSON.
    exc = rejection("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "x"}, {"from": "gpt", "value": "a"}]})
    assert exc.reason == "bad_tool_call"
    assert "conversations[1].value" in exc.message and "not JSON" in exc.message


def test_openai_content_parts_are_joined():
    out = convert("openai", {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "ok"},
    ]})
    assert out.messages[0]["content"] == "one\ntwo"


def test_openai_image_part_is_wrong_type():
    exc = rejection("openai", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "assistant", "content": "ok"},
    ]})
    assert exc.reason == "wrong_type" and "image_url" in exc.message


def test_messages_stored_as_json_text_are_parsed():
    out = convert("openai", {"messages": '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'})
    assert [m["content"] for m in out.messages] == ["q", "a"]


@pytest.mark.parametrize(
    "fmt, row, reason, field",
    [
        ("alpaca", {"instruction": "q", "input": ""}, "missing_field", "output"),
        ("alpaca", {"instruction": "q", "output": None}, "missing_field", "output"),
        ("alpaca", {"instruction": {"a": 1}, "output": "x"}, "wrong_type", "instruction"),
        ("alpaca", {"instruction": "q", "output": True}, "wrong_type", "output"),
        ("alpaca", {"instruction": " \n", "output": "x"}, "empty_content", "instruction"),
        ("alpaca", {"instruction": "q", "output": "\t"}, "empty_content", "output"),
        ("openai", {"messages": []}, "empty_conversation", "messages"),
        ("openai", {"messages": {"role": "user"}}, "wrong_type", "messages"),
        ("openai", {"messages": [{"role": "user", "content": "q"}]}, "no_assistant_turn", "assistant"),
        ("openai", {"messages": [{"role": "assistant", "content": "a"}]}, "no_user_turn", "user"),
        ("openai", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}, "empty_content", "assistant"),
        ("openai", {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}, "empty_content", "user"),
        ("openai", {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}, "missing_field", "messages[0]"),
        ("openai", {"messages": ["q", "a"]}, "wrong_type", "messages[0]"),
        ("sharegpt", {"conversations": [{"from": 3, "value": "q"}]}, "wrong_type", "conversations[0].from"),
        ("sharegpt", {"id": 1}, "missing_field", "conversations"),
    ],
)
def test_bad_rows_are_rejected_with_reason_and_field(fmt, row, reason, field):
    exc = rejection(fmt, row)
    assert exc.reason == reason
    assert field in exc.message


def test_not_an_object():
    _, field_map = resolve_field_map("alpaca", {}, [], "test")
    with pytest.raises(RowRejected) as info:
        RowConverter(field_map).convert(["a", "b"])
    assert info.value.reason == "not_an_object"


def test_numbers_are_accepted_as_text():
    out = convert("auto", {"question": "2+2?", "answer": 4}, instruction="question", output="answer")
    assert out.messages[1]["content"] == "4"


def test_complete_mapping_overrides_detection():
    row = {"question": "q", "answer": "a", "instruction": "ignored", "output": "ignored"}
    name, field_map = resolve_field_map("auto", {"instruction": "question", "output": "answer"}, [row], "t")
    assert name == "mapping"
    out = RowConverter(field_map, name).convert(row)
    assert [m["content"] for m in out.messages] == ["q", "a"]
    assert out.meta == {"instruction": "ignored", "output": "ignored"}


def test_partial_mapping_is_laid_over_the_detected_format():
    row = {"instruction": "q", "input": "i", "output": "a", "topic": "t"}
    name, field_map = resolve_field_map("auto", {"category": "topic"}, [row], "t")
    assert name == "alpaca+mapping"
    assert RowConverter(field_map, name).convert(row).category == "t"


def test_empty_mapping_value_switches_a_field_off():
    row = {"instruction": "q", "context": "c", "response": "a", "category": "x"}
    name, field_map = resolve_field_map("auto", {"category": ""}, [row], "t")
    out = RowConverter(field_map, name).convert(row)
    assert out.category is None and out.meta == {"category": "x"}


def test_forced_format_ignores_detection():
    name, field_map = resolve_field_map("gpteacher", {}, [{"prompt": "p", "completion": "c"}], "t")
    assert name == "gpteacher" and field_map == PRESETS["gpteacher"]


def test_detection_is_a_vote_of_the_first_rows():
    sample = [{"prompt": "p", "completion": "c"}] * 3 + [{"instruction": "i", "output": "o"}]
    assert resolve_field_map("auto", {}, sample, "t")[0] == "prompt_completion"


def test_undetectable_fields_raise_one_clear_error():
    with pytest.raises(DataError, match=r"f\.jsonl: cannot detect the record format from the fields answer, question"):
        resolve_field_map("auto", {}, [{"question": "q", "answer": "a"}], "f.jsonl")


def test_unknown_mapping_key_is_a_data_error():
    with pytest.raises(DataError, match="unknown mapping key.*response"):
        resolve_field_map("auto", {"response": "x"}, [{}], "f")


def test_field_map_kind():
    assert FieldMap(instruction="a").kind is None
    assert FieldMap(instruction="a", output="b").kind == "instruction"
    assert FieldMap(conversations="c").kind == "conversations"
