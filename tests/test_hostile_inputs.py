"""Generated hostile inputs: each family must end in a clean exit (status 2, one message naming
the path, row or field, no traceback) or in ledger rows, and records in = kept + removed.

Families: deep nesting, huge numbers, encodings, symbolic links (loops, self-reference,
dangling), unreadable folders and files, compression bombs, YAML bombs.

Unreadable paths are simulated by making ``os.scandir`` / ``open`` raise PermissionError
for one path: the tests run as root in CI containers, where ``chmod 000`` does not stop reads.
"""
from __future__ import annotations

import bz2
import errno
import gzip
import io
import json
import lzma
import os
import tracemalloc
from pathlib import Path

import pytest
from hostile import (
    FAST_CURATE,
    assert_accounting,
    assert_clean_error,
    good_rows,
    run_cli,
    write_jsonl,
)

from curatune.config import load_config
from curatune.data.loaders import load_path
from curatune.errors import ConfigError, DataError
from curatune.safe_yaml import MAX_EXPANDED_NODES

DEPTH = 100_000  # far past Python's recursion limit
YAML_DEPTH = 5_000  # past the recursion limit too; PyYAML's scanner is slow on deeper ones
HUGE_INT = "9" * 5000  # past Python's 4300-digit int-string limit


def _nothing_written(run: Path) -> bool:
    """No manifest and no stage output; only the stage's lock file may exist (see curatune.runlock)."""
    return not run.exists() or {p.name for p in run.iterdir()} <= {".lock-curate"}


def loaded_ok(result) -> None:
    assert result.input_count == len(result.records) + len(result.rejected)


# ----------------------------------------------------------------------------- nesting, huge numbers


BAD_ROWS = {
    "deep_list": "[" * DEPTH + "]" * DEPTH,
    "deep_object": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "deep_unclosed": "[" * DEPTH,
    "huge_int": '{"prompt": "p", "completion": "c", "n": ' + HUGE_INT + "}",
    "huge_negative_int": "-" + HUGE_INT,
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_one_bad_row_is_one_invalid_json_ledger_row(tmp_path, kind):
    path = write_jsonl(tmp_path / "data.jsonl", good_rows(3, "ok"), [BAD_ROWS[kind]])
    result = load_path(path)
    loaded_ok(result)
    assert len(result.records) == 3
    assert result.rejected["reason"].tolist() == ["invalid_json"]
    detail = result.rejected["detail"].iloc[0]
    assert detail.startswith(f"{path}:4: ")
    assert len(result.rejected["meta"].iloc[0]) < 10_000  # the raw row is kept, cut short


@pytest.mark.parametrize("kind", ["deep_list", "huge_int"])
def test_bad_value_inside_a_json_document_names_file_and_position(tmp_path, capsys, kind):
    path = tmp_path / "data.json"
    path.write_text("[" + json.dumps(good_rows(1, "ok")[0]) + ", " + BAD_ROWS[kind] + "]")
    with pytest.raises(DataError, match=r"data\.json: not valid JSON at line 1, column \d+"):
        load_path(path)
    result = run_cli(["curate", "--input", path, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, str(path), "line 1")


def test_curate_counts_every_row_of_a_file_with_bad_rows(tmp_path, capsys):
    bad = [BAD_ROWS["deep_list"], BAD_ROWS["huge_int"], "not json"]
    path = write_jsonl(tmp_path / "in" / "mixed.jsonl", good_rows(4, "mixed"), bad)
    result = run_cli(["curate", "--input", path, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert result.code == 0, result.err
    report = assert_accounting(tmp_path / "run")
    assert report["input_records"] == 7
    assert report["removed_by_reason"] == {"invalid_json": 3}


# ----------------------------------------------------------------------------- encodings


ENCODED = {
    "latin-1": lambda text: text.encode("latin-1"),
    "utf-16-bom": lambda text: text.encode("utf-16"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),
    "cp1252": lambda text: text.encode("cp1252"),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
@pytest.mark.parametrize("compression", ["", ".gz", ".xz"])
def test_legacy_encodings_load_every_row(tmp_path, encoding, compression):
    rows = [{"prompt": f"Café {i} crème brûlée", "completion": f"Ça va {i}"} for i in range(3)]
    data = ENCODED[encoding]("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    path = tmp_path / f"data.jsonl{compression}"
    path.write_bytes({"": lambda b: b, ".gz": gzip.compress, ".xz": lzma.compress}[compression](data))
    result = load_path(path)
    loaded_ok(result)
    assert [r.prompt for r in result.records] == [r["prompt"] for r in rows]


def test_bytes_that_are_no_text_are_counted_not_lost(tmp_path):
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in good_rows(3, "ünïcode")]
    lines.insert(1, b'{"prompt": "bad \xff\xfe bytes", "completion": "x"}')
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = load_path(path)
    loaded_ok(result)
    assert len(result.records) == 3
    assert result.rejected["reason"].tolist() == ["undecodable_text"]
    assert result.rejected["source"].tolist() == [f"{path}:2"]


def test_random_binary_named_jsonl_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "noise.jsonl"
    path.write_bytes(bytes(range(256)) * 64)
    result = run_cli(["curate", "--input", path, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, str(path))


# ----------------------------------------------------------------------------- symbolic links


@pytest.fixture
def linked_tree(tmp_path) -> Path:
    """in/top.jsonl (3), in/sub/s.jsonl (3), in/linked -> ../elsewhere (3 rows), a loop back to in/,
    a link to a file already read, and a self-loop that is not data."""
    root = tmp_path / "in"
    write_jsonl(root / "top.jsonl", good_rows(3, "top"))
    write_jsonl(root / "sub" / "s.jsonl", good_rows(3, "sub"))
    write_jsonl(tmp_path / "elsewhere" / "e.jsonl", good_rows(3, "elsewhere"))
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "again.jsonl").symlink_to(root / "top.jsonl")
    (root / "selfloop").symlink_to(root / "selfloop")
    return root


def test_folder_walk_follows_links_and_reads_each_file_once(linked_tree, tmp_path, capsys):
    result = load_path(linked_tree)
    loaded_ok(result)
    assert result.input_count == 9
    sources = {Path(r.source.rsplit(":", 1)[0]).name for r in result.records}
    assert sources == {"top.jsonl", "s.jsonl", "e.jsonl"}
    cli = run_cli(["curate", "--input", linked_tree, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert cli.code == 0, cli.err
    assert assert_accounting(tmp_path / "run")["input_records"] == 9


def test_a_data_link_that_loops_or_dangles_is_named(linked_tree, tmp_path, capsys):
    (linked_tree / "gone.jsonl").symlink_to(tmp_path / "missing.jsonl")
    (linked_tree / "self.jsonl").symlink_to(linked_tree / "self.jsonl")
    result = run_cli(["curate", "--input", linked_tree, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    message = assert_clean_error(result, "gone.jsonl", "self.jsonl", "2 path(s)")
    assert "does not exist" in message and "loop" in message
    assert _nothing_written(tmp_path / "run")  # nothing written before the sources check


@pytest.mark.parametrize("link", ["self", "pair"])
def test_input_that_is_a_link_loop_is_a_clear_error(tmp_path, capsys, link):
    path = tmp_path / "loop"
    if link == "self":
        path.symlink_to(path)
    else:
        path.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(path)
    result = run_cli(["curate", "--input", path, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert "loop" in assert_clean_error(result, str(path))


def test_missing_source_writes_nothing(tmp_path, capsys):
    result = run_cli(["curate", "--input", tmp_path / "nope.jsonl", "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, "nope.jsonl", "no such file")
    assert _nothing_written(tmp_path / "run")


def test_run_dir_inside_the_input_folder_is_not_read_as_data(tmp_path, capsys):
    root = tmp_path / "in"
    write_jsonl(root / "a.jsonl", good_rows(5, "a"))
    for attempt in range(2):
        result = run_cli(["curate", "--input", root, "--out", root / "run", "--force", *FAST_CURATE], capsys)
        assert result.code == 0, result.err
        assert assert_accounting(root / "run")["input_records"] == 5, attempt


# ----------------------------------------------------------------------------- unreadable folders and files


def _deny(monkeypatch, function_name: str, denied: Path) -> None:
    """Make os.<function_name>(denied) fail as it would for a folder/file without permission."""
    real = getattr(os, function_name) if function_name != "open" else io.open

    def guarded(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and Path(os.fspath(path)) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    if function_name == "open":
        monkeypatch.setattr("builtins.open", guarded)
    else:
        monkeypatch.setattr(os, function_name, guarded)


def test_unreadable_sub_folder_is_named_not_skipped(tmp_path, capsys, monkeypatch):
    root = tmp_path / "in"
    write_jsonl(root / "top.jsonl", good_rows(3, "top"))
    write_jsonl(root / "sub" / "s.jsonl", good_rows(3, "sub"))
    _deny(monkeypatch, "scandir", root / "sub")
    with pytest.raises(DataError, match="Permission denied"):
        load_path(root)
    result = run_cli(["curate", "--input", root, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, str(root / "sub"), "Permission denied")


def test_unreadable_file_is_named(tmp_path, capsys, monkeypatch):
    root = tmp_path / "in"
    write_jsonl(root / "top.jsonl", good_rows(3, "top"))
    secret = write_jsonl(root / "secret.jsonl", good_rows(3, "secret"))
    _deny(monkeypatch, "open", secret)
    result = run_cli(["curate", "--input", root, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, str(secret), "Permission denied")


# ----------------------------------------------------------------------------- compression bombs


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("compress,suffix", [(gzip.compress, ".gz"), (bz2.compress, ".bz2"), (lzma.compress, ".xz")])
def test_newline_bomb_streams_in_bounded_memory(tmp_path, compress, suffix):
    """5 MB of newlines (a few KB compressed) around 3 records: whole-file decompression,
    decoding and splitting held > 100 MB; streaming holds a chunk and the records."""
    newlines = b"\n" * 5_000_000
    body = newlines + b"\n".join(json.dumps(r).encode() for r in good_rows(3, "bomb")) + b"\n" + newlines
    path = tmp_path / f"bomb.jsonl{suffix}"
    path.write_bytes(compress(body))
    assert path.stat().st_size < 100_000
    results = []
    peak = _peak_bytes(lambda: results.append(load_path(path)))
    loaded_ok(results[0])
    assert len(results[0].records) == 3
    assert results[0].records[0].source == f"{path}:5000001"  # line numbers still count the blank lines
    assert peak < 32_000_000, f"peak {peak / 1e6:.1f} MB"  # whole-file reading: > 100 MB


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_corrupt_or_truncated_archives_are_named(tmp_path, capsys, suffix):
    data = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix](
        b"\n".join(json.dumps(r).encode() for r in good_rows(200, "cut")))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[: len(data) // 2])
    result = run_cli(["curate", "--input", path, "--out", tmp_path / "run", *FAST_CURATE], capsys)
    assert_clean_error(result, str(path))


# ----------------------------------------------------------------------------- YAML bombs and hostile configs


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


HOSTILE_CONFIGS = {
    "billion_laughs": (billion_laughs().encode(), "expand to more than"),
    "recursive_alias": (b"name: &x [*x]\n", "recursive"),
    "deep_nesting": (b"name: " + b"[" * YAML_DEPTH + b"]" * YAML_DEPTH + b"\n", "nested too deeply"),
    "huge_int": (b"train:\n  seeds: [" + HUGE_INT.encode() + b"]\n", "too long"),
    "not_utf8": ("name: caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    "binary": (bytes(range(256)), "not UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_CONFIGS))
def test_hostile_config_file_is_one_config_error(tmp_path, capsys, kind):
    data, expected = HOSTILE_CONFIGS[kind]
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    peak = _peak_bytes(lambda: pytest.raises(ConfigError, load_config, path))
    assert peak < 200_000_000
    for command in (["config", "check", path], ["curate", path, "--out", tmp_path / "run"]):
        message = assert_clean_error(run_cli(command, capsys), str(path))
        assert expected in message


@pytest.mark.parametrize("value,expected", [
    ("&a [1,2,3,4,5,6,7,8,9]", None),
    ("[" * YAML_DEPTH, "nested too deeply"),
    (HUGE_INT, "too long"),
], ids=["small_alias", "deep_nesting", "huge_int"])
def test_hostile_set_values(capsys, value, expected):
    if expected is None:  # aliases inside a small value are fine
        assert load_config(None, [f"train.seeds={value}"]).train.seeds == list(range(1, 10))
        return
    result = run_cli(["config", "check", "--set", f"train.seeds={value}", os.devnull], capsys)
    assert expected in assert_clean_error(result, "--set train.seeds")


def test_alias_bomb_through_set_is_refused_before_expanding(capsys):
    bomb = "{" + billion_laughs().replace("\n", ", ") + "}"
    assert "expand to more than" in assert_clean_error(run_cli(["config", "check", "--set", f"train={bomb}", os.devnull], capsys))
    assert MAX_EXPANDED_NODES < 9**9
