"""CSV, TSV and JSON arrays are read as streams (curatune.data.loaders): the same rows, ledger,
warnings and errors as reading the whole file, without holding the file in memory."""
from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
from pathlib import Path

import pytest

from curatune.data import loaders
from curatune.data.loaders import (
    JsonDocumentReader,
    decode_text,
    load_path,
    parse_csv,
    read_bytes,
    read_file,
)
from curatune.errors import DataError

_OPEN = {"": open, ".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def write(path: Path, data: bytes) -> Path:
    with _OPEN[path.suffix if path.suffix in _OPEN else ""](path, "wb") as f:
        f.write(data)
    return path


def whole_file_read(path: Path, encoding: str | None = None) -> tuple[list, str, list[str]]:
    """What the whole-file readers make of a file: (rows, encoding, warnings)."""
    decoded = decode_text(read_bytes(str(path)), encoding, str(path))
    text = decoded.text.lstrip("\ufeff")
    if loaders.container_of(str(path)) in ("csv", "tsv"):
        delimiter = "\t" if loaders.container_of(str(path)) == "tsv" else ","
        return parse_csv(text, str(path), delimiter), decoded.encoding, list(decoded.warnings)
    reader = JsonDocumentReader(text, str(path), decoded.encoding)
    rows, _ = reader.read()
    return rows, decoded.encoding, list(decoded.warnings) + reader.warnings


def streamed_read(path: Path, encoding: str | None = None) -> tuple[list, str, list[str]]:
    read = read_file(str(path), encoding)
    assert not isinstance(read.rows, list), "expected a stream of rows"
    rows = list(read.rows)
    return rows, read.encoding, list(read.warnings)


def as_tuples(rows) -> list[tuple]:
    return [(r.position, r.value, r.raw_text, r.error) for r in rows]


def assert_same_as_whole_file(path: Path, encoding: str | None = None) -> list:
    rows, enc, warnings = streamed_read(path, encoding)
    expected_rows, expected_enc, expected_warnings = whole_file_read(path, encoding)
    assert as_tuples(rows) == as_tuples(expected_rows)
    assert (enc, warnings) == (expected_enc, expected_warnings)
    return rows


CSV = (
    'instruction,input,output\n'
    '"Add, please",1 2,3\n'
    '"Two\nlines",,"quoted ""word"""\r\n'
    '\n'
    'only,two\n'
    'Name a colour,,Blue\n'
)


@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2", ".xz"])
def test_csv_streams_the_same_rows_as_the_whole_file(tmp_path, suffix, monkeypatch):
    path = write(tmp_path / f"data.csv{suffix}", CSV.encode())
    rows = assert_same_as_whole_file(path)
    assert [r.position for r in rows] == ["1", "2", "3", "4"]
    assert rows[2].error[0] == "malformed_row"
    # Loading never reads the file whole.
    monkeypatch.setattr(loaders, "read_bytes", lambda *a: pytest.fail("read the whole file"))
    result = load_path(path)
    assert len(result.records) == 3 and len(result.rejected) == 1


def test_a_malformed_row_in_a_compressed_csv_is_one_ledger_row_naming_file_row_and_field(tmp_path):
    rows = ["instruction,output"] + [f"question {i},answer {i}" for i in range(5000)]
    rows[1234] = "question 1233,answer,extra field,more"
    rows[4000] = "question 3999,"  # an empty answer: the converter names the field
    path = write(tmp_path / "big.csv.gz", ("\n".join(rows) + "\n").encode())
    result = load_path(path)
    assert result.input_count == 5000 and len(result.records) == 4998
    ledger = result.rejected.set_index("reason")
    assert ledger.loc["malformed_row", "detail"] == f"{path}:1234: line 1235: 4 field(s), the header has 2"
    assert ledger.loc["malformed_row", "source"] == f"{path}:1234"
    empty = ledger.drop("malformed_row").iloc[0]
    assert empty["source"] == f"{path}:4000" and "'output'" in empty["detail"]


def test_tsv_with_a_bom_streams(tmp_path):
    path = write(tmp_path / "data.tsv", "\ufeffinstruction\toutput\nSay hi\tHi\n".encode("utf-8"))
    rows = assert_same_as_whole_file(path)
    assert rows[0].value == {"instruction": "Say hi", "output": "Hi"}


@pytest.mark.parametrize("name, data, encoding", [
    ("cp1252", "instruction,output\nCaf\u00e9?,Oui \u2013 s\u00fbr\n".encode("cp1252"), None),
    ("latin1", b"instruction,output\nx\x81y,z\n", None),  # 0x81 is not cp1252 either
    ("bad utf-8 lines", "instruction,output\nna\u00efve,ok\n".encode() + b"bad \xff byte,x\n", None),
    ("explicit", "instruction,output\nCaf\u00e9,oui\n".encode("cp1252"), "cp1252"),
])
def test_csv_encodings_are_decided_as_on_the_whole_file(tmp_path, name, data, encoding):
    path = write(tmp_path / "data.csv", data)
    assert_same_as_whole_file(path, encoding)


def test_a_file_that_fails_its_given_encoding_gives_the_whole_file_error(tmp_path):
    path = write(tmp_path / "data.csv", "instruction,output\nCaf\u00e9,oui\n".encode("cp1252"))
    with pytest.raises(DataError, match="not valid utf-8 text: byte 0xe9 .*line 2.*set `encoding: cp1252`"):
        load_path(path, encoding="utf-8")


def test_utf16_csv_is_still_read(tmp_path):
    path = write(tmp_path / "data.csv", "instruction,output\nHi,Hello\n".encode("utf-16"))
    result = load_path(path)
    assert [r.response for r in result.records] == ["Hello"]


def test_an_unclosed_quote_is_one_error_naming_the_row(tmp_path):
    path = write(tmp_path / "data.csv.gz", b'instruction,output\na,b\n"never closed,c\n')
    with pytest.raises(DataError, match=r"not valid CSV in the row starting at line 3"):
        load_path(path)


def test_a_truncated_compressed_csv_is_one_error(tmp_path):
    data = gzip.compress(CSV.encode() * 100)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot decompress"):
        load_path(path)


# ----------------------------------------------------------------------------- JSON arrays

RECORDS = [{"instruction": f"question {i} \u00e9", "input": "", "output": f"answer {i}", "n": 10 ** (i % 25)}
           for i in range(40)]


@pytest.fixture(params=[7, 64, 1 << 20])
def text_chunk(request, monkeypatch):
    """Tiny chunks make every record straddle reads and the buffer drop read text often."""
    monkeypatch.setattr(loaders, "_TEXT_CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_json_array_streams_the_same_rows(tmp_path, text_chunk, suffix):
    path = write(tmp_path / f"data.json{suffix}", json.dumps(RECORDS, ensure_ascii=False, indent=1).encode())
    rows = assert_same_as_whole_file(path)
    assert [r.value for r in rows] == RECORDS and rows[-1].position == "39"


@pytest.mark.parametrize("cut", [1, 17, 300, 1001, -2])
def test_a_cut_off_array_keeps_every_complete_record_with_one_warning(tmp_path, text_chunk, cut):
    text = json.dumps(RECORDS, ensure_ascii=False, indent=1)
    path = write(tmp_path / "data.json", text[: len(text) // 2 + cut].encode())
    rows, _, warnings = streamed_read(path)
    assert_same_as_whole_file(path)
    assert len(warnings) == 1 and "cut off" in warnings[0] and len(rows) > 0


@pytest.mark.parametrize("text", [
    '[{"instruction": "a", "output": "b"},]',  # trailing comma: tolerated
    '\ufeff  [ ]',
    '[{"instruction": "a", "output": "b"}] trailing text is ignored',
    '[1, "x", {"instruction": "a", "output": "b"}]',  # non-objects are rows the converter rejects
])
def test_json_array_edge_cases(tmp_path, text_chunk, text):
    assert_same_as_whole_file(write(tmp_path / "data.json", text.encode()))


@pytest.mark.parametrize("text", [
    '[{"instruction": "a", "output": "b"}\n\n {"instruction": "c"}]',  # missing comma
    '[{"instruction": "a",\n "output": "b"},\n {"instruction": tru, "x": 1}]',
    '[\n' + ',\n'.join(['{"instruction": "q", "output": "a"}'] * 30) + ',\n{"bad" 1}]',  # error after many drops
    '[' + '[' * 100000 + ']' * 100000 + ']',  # nested too deeply
    '[{"instruction": "a", "output": ' + '9' * 5000 + '}]',  # a number beyond the digit limit
])
def test_json_syntax_errors_name_the_same_line_column_and_byte(tmp_path, text_chunk, text):
    path = write(tmp_path / "data.json", text.encode())
    with pytest.raises(DataError) as whole:
        whole_file_read(path)
    with pytest.raises(DataError) as streamed:
        load_path(path)
    assert str(streamed.value) == str(whole.value)


def test_other_json_documents_still_load(tmp_path):
    objects = write(tmp_path / "objects.json", json.dumps({"train": RECORDS[:3]}).encode())
    lines = write(tmp_path / "lines.json", "\n".join(json.dumps(r) for r in RECORDS[:3]).encode())
    single = write(tmp_path / "single.json", json.dumps(RECORDS[0]).encode())
    assert [len(load_path(p).records) for p in (objects, lines, single)] == [3, 3, 1]


def test_a_jsonl_holding_one_array_streams(tmp_path):
    path = write(tmp_path / "data.jsonl.gz", json.dumps(RECORDS).encode())
    result = load_path(path)
    assert len(result.records) == len(RECORDS) and result.file_stats[0]["container"] == "json"


def test_csv_written_by_the_csv_module_round_trips(tmp_path):
    path = tmp_path / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "output"])
        for r in RECORDS:
            writer.writerow([r["instruction"] + '\n"quoted", and, commas', r["output"]])
    rows = assert_same_as_whole_file(path)
    assert len(rows) == len(RECORDS)
