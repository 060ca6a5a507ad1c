"""Loading files into records and the rejection ledger (curatune.data.loaders)."""
from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import pandas as pd
import pytest

from curatune.config import SourceConfig
from curatune.data import loaders
from curatune.data.loaders import LoadResult, check_accounting, load_path, load_sources
from curatune.errors import DataError
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record, frame_to_records

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def assert_accounted(result: LoadResult) -> None:
    assert result.input_count == len(result.records) + len(result.rejected)
    assert sum(s["rows"] for s in result.file_stats) == result.input_count
    assert list(result.rejected.columns) == RECORD_COLUMNS + LEDGER_COLUMNS
    assert (result.rejected["step"] == "load").all()
    for record in result.records:
        assert record.id == Record.make(record.messages).id
        assert record.messages[-1]["role"] == "assistant" or record.response


def reasons(result: LoadResult) -> dict[str, str]:
    """source position -> reason, e.g. {'3': 'wrong_type'}."""
    return {s.rsplit(":", 1)[1]: r for s, r in zip(result.rejected["source"], result.rejected["reason"])}


# ----------------------------------------------------------------------------- formats


def test_alpaca_json_array():
    result = load_path(FIXTURES / "alpaca.json")
    assert_accounted(result)
    assert len(result.records) == 3 and result.rejected.empty
    second = result.records[1]
    assert second.messages == [
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    assert second.meta == {"id": "a-2"}
    # JSON arrays count from 0.
    assert second.source == f"{FIXTURES / 'alpaca.json'}:1"
    assert result.records[2].category == "summarization"
    assert result.file_stats == [{
        "path": str(FIXTURES / "alpaca.json"), "container": "json", "format": "alpaca",
        "encoding": "utf-8", "rows": 3, "kept": 3, "rejected": 0,
    }]


def test_dolly_jsonl_counts_lines_from_one():
    result = load_path(FIXTURES / "dolly.jsonl")
    assert_accounted(result)
    assert result.file_stats[0]["format"] == "dolly"
    assert [r.category for r in result.records] == ["closed_qa", "classification"]
    assert result.records[0].source.endswith("dolly.jsonl:1")
    assert result.records[0].messages[0]["content"].endswith("commenced services on 31 August 2000.")
    assert result.records[1].messages[0]["content"] == "Which is a species of fish? Tope or Rope"


def test_prompt_completion():
    result = load_path(FIXTURES / "prompt_completion.jsonl")
    assert result.file_stats[0]["format"] == "prompt_completion"
    assert result.records[0].prompt == "Q: What is 2+2?\nA:" and result.records[0].response == " 4"


def test_sharegpt_with_system_roles_and_an_unknown_role():
    result = load_path(FIXTURES / "sharegpt.json")
    assert_accounted(result)
    assert result.file_stats[0]["format"] == "sharegpt"
    assert len(result.records) == 3
    first = result.records[0]
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.messages[0]["content"] == "You are terse."
    assert first.meta == {"id": "s1"}
    assert [m["role"] for m in result.records[1].messages] == ["system", "user", "assistant"]
    assert reasons(result) == {"3": "unknown_role"}
    detail = result.rejected["detail"].iloc[0]
    assert "sharegpt.json:3" in detail and "'narrator'" in detail and "conversations[1]" in detail


def test_openai_messages():
    result = load_path(FIXTURES / "openai.jsonl")
    assert_accounted(result)
    assert result.file_stats[0]["format"] == "openai"
    assert result.records[0].meta == {"tags": ["geo"]}
    assert result.records[1].messages[0]["content"] == "Part one.\nPart two."


def test_gpteacher():
    result = load_path(FIXTURES / "gpteacher.json")
    assert result.file_stats[0]["format"] == "gpteacher"
    assert result.records[1].prompt == "Explain the code.\n\nprint(1+1)"


def test_json_object_of_arrays():
    result = load_path(FIXTURES / "object_of_arrays.json")
    assert_accounted(result)
    assert [r.response for r in result.records] == ["Yes.", "No."]
    assert result.records[1].source.endswith("object_of_arrays.json:train[1]")
    assert any("version" in w for w in result.warnings)


def test_csv_with_quoted_commas_and_newlines():
    result = load_path(FIXTURES / "alpaca.csv")
    assert_accounted(result)
    assert [r.messages[0]["content"] for r in result.records] == ["Add the numbers.\n\n2, 3", "Write a line\nof poetry."]
    assert [r.category for r in result.records] == ["math", "poetry"]
    assert result.records[1].source.endswith("alpaca.csv:2")  # data rows count from 1
    assert result.file_stats[0]["container"] == "csv"


def test_tsv():
    result = load_path(FIXTURES / "alpaca.tsv")
    assert [r.response for r in result.records] == ["Paris", "cba"]
    assert result.file_stats[0]["container"] == "tsv"


def test_parquet_with_nested_messages(tmp_path):
    frame = pd.DataFrame({
        "messages": [
            [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}],
            [{"role": "user", "content": "q2"}],
        ],
        "topic": ["x", "y"],
    })
    path = tmp_path / "chats.parquet"
    frame.to_parquet(path)
    result = load_path(path, mapping={"category": "topic"})
    assert_accounted(result)
    assert result.file_stats[0]["format"] == "openai+mapping"
    assert result.records[0].category == "x" and result.records[0].response == "a1"
    assert reasons(result) == {"1": "no_assistant_turn"}  # Parquet rows count from 0


def test_compressed_jsonl(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "p", "completion": "c"}\n'))
    result = load_path(path, category="{file}")
    assert result.records[0].category == "data"


def test_json_lines_saved_as_json(tmp_path):
    path = tmp_path / "hub.json"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n')
    result = load_path(path)
    assert len(result.records) == 2 and result.file_stats[0]["container"] == "jsonl"


def test_single_record_json_file(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    assert len(load_path(path).records) == 1


# ----------------------------------------------------------------------------- mapping, format, category


def test_mapping_for_question_answer_data(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2\\n#### 2"}\n')
    with pytest.raises(DataError, match="cannot detect the record format"):
        load_path(path)
    result = load_path(path, mapping={"instruction": "question", "output": "answer"})
    assert result.records[0].messages == [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2\n#### 2"}]
    assert result.file_stats[0]["format"] == "mapping"


def test_forced_format_rejects_rows_that_do_not_fit():
    result = load_path(FIXTURES / "alpaca.json", format="gpteacher")
    assert len(result.records) == 0
    assert set(result.rejected["reason"]) == {"missing_field"}
    assert "field 'response' is missing" in result.rejected["detail"].iloc[0]


def test_category_for_every_record_with_file_stem(tmp_path):
    for name in ("task_a", "task_b"):
        (tmp_path / f"{name}.jsonl").write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p2", "completion": "c2"}\n')
    result = load_path(tmp_path, category="{file}")
    assert [r.category for r in result.records] == ["task_a", "task_a", "task_b", "task_b"]


def test_category_from_the_data_wins_over_the_source_category():
    result = load_path(FIXTURES / "dolly.jsonl", category="dolly")
    assert [r.category for r in result.records] == ["closed_qa", "classification"]


# ----------------------------------------------------------------------------- bad rows and files


def test_every_bad_instruction_row_is_rejected_with_reason():
    result = load_path(FIXTURES / "bad_rows.jsonl")
    assert_accounted(result)
    assert len(result.records) == 2 and result.records[1].response == "42"
    assert reasons(result) == {
        "2": "missing_field", "3": "wrong_type", "4": "empty_content", "5": "empty_content", "6": "missing_field",
    }
    details = dict(zip(result.rejected["source"].str.rsplit(":", n=1).str[1], result.rejected["detail"]))
    assert "bad_rows.jsonl:2: field 'output' is missing" in details["2"]
    assert "bad_rows.jsonl:6: field 'output' is null" in details["6"]
    assert "'instruction'" in details["3"]


def test_every_bad_chat_row_is_rejected_with_reason():
    result = load_path(FIXTURES / "bad_chats.jsonl")
    assert_accounted(result)
    assert len(result.records) == 1
    assert reasons(result) == {
        "1": "empty_conversation", "2": "no_assistant_turn", "3": "unknown_role", "4": "wrong_type",
        "5": "empty_content", "6": "missing_field", "8": "not_an_object",
    }
    details = dict(zip(result.rejected["reason"], result.rejected["detail"]))
    assert "bad_chats.jsonl:3: messages[1].role is 'narrator'" in details["unknown_role"]
    assert "bad_chats.jsonl:5: messages[1].content (assistant turn) is empty" in details["empty_content"]


def test_rejected_rows_keep_the_raw_row_and_a_content_id():
    result = load_path(FIXTURES / "bad_rows.jsonl")
    row = result.rejected.iloc[0]
    assert row["messages"] == [] and row["duplicate_of"] is None and row["cluster_id"] is None
    assert json.loads(row["meta"]) == {"instruction": "no output here", "input": ""}
    assert len(row["id"]) == 16 and result.rejected["id"].is_unique
    # The ledger has the record columns, so it round-trips through the record helpers.
    assert frame_to_records(result.rejected)[0].meta == {"instruction": "no output here", "input": ""}


def test_huge_rejected_rows_are_truncated_in_meta(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"prompt": "x" * 20_000, "completion": ""}) + "\n")
    meta = json.loads(load_path(path).rejected["meta"].iloc[0])
    assert len(meta["raw_text"]) == loaders.MAX_RAW_CHARS and meta["truncated_from_chars"] > 20_000


def test_jsonl_with_broken_lines_loads_the_rest():
    result = load_path(FIXTURES / "broken_lines.jsonl")
    assert_accounted(result)
    assert [r.response for r in result.records] == ["1", "3", "5"]
    assert reasons(result) == {"2": "invalid_json", "5": "invalid_json"}
    assert result.rejected["detail"].iloc[0].startswith(f"{FIXTURES / 'broken_lines.jsonl'}:2: not valid JSON at column")
    assert json.loads(result.rejected["meta"].iloc[0]) == {"raw_text": '{"prompt": "two", "completion": "2"'}


def test_truncated_json_array_keeps_complete_records(caplog):
    data = (FIXTURES / "truncated.json").read_bytes()
    with caplog.at_level(logging.WARNING, logger="curatune.data.loaders"):
        result = load_path(FIXTURES / "truncated.json")
    assert_accounted(result)
    assert [r.response for r in result.records] == [f"Answer {i} with é" for i in range(3)]
    (warning,) = result.warnings
    cut_at = data.rindex(b"{")
    assert f"{len(data) - cut_at} byte(s) after it could not be read" in warning
    assert f"byte offset {cut_at}" in warning and "3 complete record(s)" in warning
    assert "truncated.json" in caplog.text and "could not be read" in caplog.text


@pytest.mark.parametrize("cut", ['[{"a": "x"}, ', '[{"a": "x"}, {"a": tr', '[{"a": "x"}, {"a": 12', '[{"a": "x"}, {"a"', '[{"a": "x"}'])
def test_json_cut_anywhere_is_a_warning_not_an_error(tmp_path, cut):
    path = tmp_path / "cut.json"
    path.write_text(cut)
    result = load_path(path, mapping={"instruction": "a", "output": "a"})
    assert len(result.records) == 1 and result.input_count == 1
    assert "could not be read" in result.warnings[0]


def test_truncated_object_of_arrays(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('{"train": [{"prompt": "a", "completion": "b"}, {"prompt": "c", "comp')
    result = load_path(path)
    assert [r.response for r in result.records] == ["b"]
    assert result.records[0].source.endswith("cut.json:train[0]")
    assert "could not be read" in result.warnings[0]


def test_json_syntax_error_mid_file_is_one_data_error_with_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n {"prompt": "a", "completion": "b"},\n {"prompt": "c" "completion": "d"},\n {"prompt": "e", "completion": "f"}\n]\n')
    with pytest.raises(DataError) as info:
        load_path(path)
    message = str(info.value)
    offset = path.read_bytes().index(b'"completion": "d"')
    assert message.startswith(f"{path}: not valid JSON at line 3, column 17 (byte offset {offset}): Expecting ','")


def test_jsonl_where_no_line_parses_is_one_data_error(tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text('{\n  "prompt": "a",\n  "completion": "b"\n}\n')
    with pytest.raises(DataError, match=r"pretty\.jsonl: not JSON Lines: no line parses as JSON \(line 1, column 2"):
        load_path(path)


def test_csv_row_with_wrong_field_count_is_rejected(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("instruction,output\nq1,a1\nq2,a2,extra\nq3,a3,,\nq4\n")
    result = load_path(path)
    assert_accounted(result)
    assert [r.response for r in result.records] == ["a1", "a3"]
    assert reasons(result) == {"2": "malformed_row", "4": "malformed_row"}
    assert "line 3: 3 field(s), the header has 2" in result.rejected["detail"].iloc[0]


def test_csv_that_cannot_be_parsed_is_one_data_error(tmp_path):
    path = tmp_path / "unclosed.csv"
    path.write_text('instruction,output\nq1,a1\nq2,"never closed\nq3,a3\n')
    with pytest.raises(DataError, match=r"unclosed\.csv: not valid CSV in the row starting at line 3: unexpected end of data \(a quote"):
        load_path(path)


def test_unreadable_parquet_is_one_data_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        load_path(path)


def test_missing_path_and_unsupported_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_path(tmp_path / "nope.jsonl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="matches no data files.*notes.txt"):
        load_path(tmp_path)
    with pytest.raises(DataError, match="unsupported file type"):
        load_path(tmp_path / "notes.txt")


def test_bad_source_settings_are_data_errors():
    with pytest.raises(DataError, match="format = 'foo'"):
        load_path(FIXTURES / "alpaca.json", format="foo")
    with pytest.raises(DataError, match="unknown mapping key"):
        load_path(FIXTURES / "alpaca.json", mapping={"answer": "output"})


def test_empty_file_loads_nothing(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("  \n")
    result = load_path(path)
    assert result.input_count == 0 and result.warnings == [f"{path}: no rows (empty file)"]
    assert result.file_stats[0]["format"] is None


# ----------------------------------------------------------------------------- encodings

CP1252_CSV = "instruction,output\nTranslate “café”,Café — naïve résumé\nSay hi,Hi\n".encode("cp1252")


def test_cp1252_csv_is_detected_and_recorded(tmp_path):
    path = tmp_path / "legacy.csv"
    path.write_bytes(CP1252_CSV)
    result = load_path(path)
    assert_accounted(result)
    assert result.records[0].messages[0]["content"] == "Translate “café”"
    assert result.records[0].response == "Café — naïve résumé"
    assert result.file_stats[0]["encoding"] == "cp1252"
    assert any("decoded as cp1252" in w for w in result.warnings)


def test_explicit_encoding_is_used(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("instruction,output\nÀ bientôt?,Oui\n".encode("latin-1"))
    result = load_path(path, encoding="latin-1")
    assert result.records[0].prompt == "À bientôt?" and result.file_stats[0]["encoding"] == "latin-1"


def test_wrong_explicit_encoding_is_one_clear_error(tmp_path):
    path = tmp_path / "legacy.csv"
    path.write_bytes(CP1252_CSV)
    with pytest.raises(DataError) as info:
        load_path(path, encoding="utf-8")
    message = str(info.value)
    offset = CP1252_CSV.index(b"\x93")
    assert f"not valid utf-8 text: byte 0x93 at byte offset {offset} (line 2)" in message
    assert "encoding: cp1252" in message


def test_unknown_encoding_name(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"instruction,output\nq,a\n")
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        load_path(path, encoding="klingon")


def test_undecodable_bytes_in_a_utf8_file_reject_only_that_row(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"prompt": "Grüße", "completion": "ok"}, ensure_ascii=False).encode("utf-8"),
        b'{"prompt": "bad \xff\xfe bytes", "completion": "x"}',
        b'{"prompt": "fine", "completion": "y", "note": "\xc0"}',
        b'{"prompt": "last", "completion": "z"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_path(path)
    assert_accounted(result)
    assert [r.response for r in result.records] == ["ok", "z"]
    assert reasons(result) == {"2": "undecodable_text", "3": "undecodable_text"}
    details = list(result.rejected["detail"])
    assert "mixed.jsonl:2: field 'prompt' holds bytes that are not valid" in details[0] and "(utf-8)" in details[0]
    assert "field 'note'" in details[1]
    # The ledger must stay writable as Parquet (no lone surrogates in text columns).
    result.rejected.to_parquet(tmp_path / "ledger.parquet")
    assert any("not valid utf-8" in w for w in result.warnings)


def test_bom_and_utf16(tmp_path):
    text = "instruction,output\nÉtat?,Oui\n"
    (tmp_path / "bom.csv").write_bytes(text.encode("utf-8-sig"))
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))
    (tmp_path / "u16le.csv").write_bytes(text.encode("utf-16-le"))
    for name in ("bom.csv", "u16.csv", "u16le.csv"):
        result = load_path(tmp_path / name)
        assert result.records[0].prompt == "État?", name


# ----------------------------------------------------------------------------- sources, globs, invariant


def test_load_sources_concatenates_and_accounts():
    result = load_sources([
        SourceConfig(path=str(FIXTURES / "bad_rows.jsonl")),
        {"path": str(FIXTURES / "broken_lines.jsonl")},
        SourceConfig(path=str(FIXTURES / "truncated.json")),
    ])
    assert_accounted(result)
    assert result.input_count == 7 + 5 + 3
    assert len(result.records) == 2 + 3 + 3
    assert result.rejected_by_reason == {"missing_field": 2, "wrong_type": 1, "empty_content": 2, "invalid_json": 2}
    assert "15 rows from 3 file(s): 8 loaded, 7 rejected" in result.summary()


def test_glob_and_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jsonl").write_text('{"prompt": "a", "completion": "1"}\n')
    (tmp_path / "sub" / "b.jsonl").write_text('{"prompt": "b", "completion": "2"}\n')
    (tmp_path / "README.md").write_text("not data")
    assert [r.prompt for r in load_path(tmp_path).records] == ["a", "b"]
    assert [r.prompt for r in load_path(str(tmp_path / "*.jsonl")).records] == ["a"]
    assert [r.prompt for r in load_path(str(tmp_path / "**" / "*.jsonl")).records] == ["a", "b"]


def test_progress_bar_over_many_files(tmp_path, monkeypatch):
    for i in range(loaders.PROGRESS_MIN_FILES):
        (tmp_path / f"f{i:02d}.jsonl").write_text('{"prompt": "p%d", "completion": "c"}\n' % i)
    seen = {}
    real = loaders.tqdm

    def spy(iterable, **kwargs):
        seen.update(kwargs, n=len(iterable))
        return real(iterable, **kwargs)

    monkeypatch.setattr(loaders, "tqdm", spy)
    result = load_path(tmp_path)
    assert len(result.records) == loaders.PROGRESS_MIN_FILES
    assert seen["n"] == loaders.PROGRESS_MIN_FILES and seen["unit"] == "file"


def test_accounting_violation_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="5 rows read but 3 records \\+ 1 rejections"):
        check_accounting(5, 3, 1, "x")
    with pytest.raises(RuntimeError, match="accounting mismatch"):
        LoadResult(records=[], rejected=loaders.empty_ledger(), input_count=1)


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_dataset_offline_fails_fast_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    # The libraries read the variable at import; make sure they see it even if imported earlier.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_path("hf:curatune-test/does-not-exist:default@validation")
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "hf:curatune-test/does-not-exist" in message
    assert "Hugging Face dataset 'curatune-test/does-not-exist' (config default), split validation" in message
    assert "HF_HUB_OFFLINE" in message and "Traceback" not in message


def test_hf_path_syntax_is_checked():
    with pytest.raises(DataError, match="expected hf:org/name"):
        load_path("hf:")
