"""Read raw instruction data from files, folders, globs or the Hugging Face hub into records.

``load_sources(sources) -> LoadResult`` is the one entry point the pipeline uses;
``load_path(path, ...)`` is the same for a single path. Every raw row ends up either as a
:class:`~curatune.records.Record` or as a row of the rejection ledger (step ``"load"``)
with a short reason and a detail naming file, row and field, and that accounting is
checked in code: ``input_count == len(records) + len(rejected)``.

Reading is split in small pieces, each with one job:

* :func:`expand_path` turns a path, folder or glob into data files;
* :func:`decode_text` turns bytes into text and says which encoding it used;
* :class:`JsonDocumentReader`, :func:`parse_jsonl`, :func:`parse_csv`, ... turn text into
  :class:`RawRow` objects (parsed value or a parse error, plus the position);
* :class:`FileLoader` picks the format (:mod:`curatune.data.formats`) and converts rows;
* :class:`ParallelLoader` reads ``format: parallel`` (two aligned plain-text files, one
  sentence per line) into translation records.

Row positions in ``source`` ("<file>:<row>"): text formats read line by line (JSONL,
CSV, TSV, parallel text) count from 1 like an editor (JSONL and parallel text: the line
number; CSV/TSV: the data row, header excluded); indexed containers (JSON arrays, Parquet, Hugging Face) count from 0
like Python, and arrays inside a JSON object are written ``key[index]``.
"""
from __future__ import annotations

import bz2
import codecs
import csv
import errno
import glob
import gzip
import hashlib
import io
import itertools
import json
import logging
import lzma
import os
import re
import string
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError
from tqdm.auto import tqdm

from curatune.config import SourceConfig, format_validation_error
from curatune.data.formats import (
    DETECTION_SAMPLE,
    LANGUAGE_NAMES,
    ParallelConverter,
    RowConverter,
    RowRejected,
    detect_row_format,
    has_lone_surrogate,
    language_name,
    resolve_field_map,
)
from curatune.errors import DataError
from curatune.records import (
    LEDGER_COLUMNS,
    LEDGER_DEFAULTS,
    RECORD_COLUMNS,
    Record,
    standard_json,
)

logger = logging.getLogger(__name__)

LEDGER_STEP = "load"
#: Raw rows kept in the ledger's ``meta`` are cut to this many characters.
MAX_RAW_CHARS = 4096
#: A progress bar over files appears from this many files on.
PROGRESS_MIN_FILES = 10

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_COMPRESSION = tuple(_OPENERS)
_CONTAINERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
               ".parquet": "parquet", ".pq": "parquet"}
_HF_PATH = re.compile(r"^hf:(?P<name>[^:@\s]+)(?::(?P<config>[^@\s]+))?(?:@(?P<split>\S+))?$")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Long answers (code, essays) exceed csv's 128 KiB default field limit; raise it once.
csv.field_size_limit(2**31 - 1)


# ============================================================================= results


@dataclass
class LoadResult:
    """What loading produced: records, the rejection ledger, and how each file went."""

    records: list[Record]
    #: Ledger rows: RECORD_COLUMNS + LEDGER_COLUMNS, step "load", messages [], meta = raw row JSON.
    rejected: pd.DataFrame
    input_count: int
    warnings: list[str] = field(default_factory=list)
    #: One dict per file: path, container, format, encoding, rows, kept, rejected.
    file_stats: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_accounting(self.input_count, len(self.records), len(self.rejected), "load")

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        if self.rejected.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().items()}

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
        text = f"{self.input_count} rows from {len(self.file_stats)} file(s): {len(self.records)} loaded, {len(self.rejected)} rejected"
        return text + (f" ({reasons})" if reasons else "")


def check_accounting(input_count: int, kept: int, rejected: int, where: str) -> None:
    """Rows in = records + rejections, or a bug: fail loudly instead of losing rows."""
    if input_count != kept + rejected:
        raise RuntimeError(
            f"{where}: accounting mismatch: {input_count} rows read but {kept} records + "
            f"{rejected} rejections = {kept + rejected}"
        )


def empty_ledger() -> pd.DataFrame:
    return pd.DataFrame(columns=RECORD_COLUMNS + LEDGER_COLUMNS)


# ============================================================================= public API


def load_sources(sources: Iterable[SourceConfig | dict[str, Any]]) -> LoadResult:
    """Load every source in order and concatenate their records and ledgers."""
    records: list[Record] = []
    ledger: list[dict[str, Any]] = []
    warnings: list[str] = []
    stats: list[dict[str, Any]] = []
    input_count = 0
    for source in sources:
        result = _SourceLoader(_as_source(source)).load()
        records += result.records
        ledger += result.ledger
        warnings += result.warnings
        stats += result.stats
        input_count += result.input_count
    rejected = pd.DataFrame(ledger, columns=RECORD_COLUMNS + LEDGER_COLUMNS) if ledger else empty_ledger()
    return LoadResult(records, rejected, input_count, warnings, stats)


def load_path(
    path: str | os.PathLike,
    format: str = "auto",
    mapping: dict[str, str] | None = None,
    category: str | None = None,
    encoding: str | None = None,
    **parallel: Any,
) -> LoadResult:
    """Load one file, folder, glob or ``hf:org/name[:config][@split]``.

    ``format="parallel"`` takes the settings of that format as keywords: ``target_path``
    (required), ``source_lang``, ``target_lang``, ``instruction``.
    """
    source = {"path": str(path), "format": format, "mapping": dict(mapping or {}), "category": category,
              "encoding": encoding}
    source.update({k: (str(v) if k == "target_path" and v is not None else v) for k, v in parallel.items()})
    return load_sources([source])


def _as_source(source: SourceConfig | dict[str, Any]) -> SourceConfig:
    if isinstance(source, SourceConfig):
        return source
    try:
        return SourceConfig.model_validate(source)
    except ValidationError as exc:
        raise DataError(format_validation_error(exc, f"data source {source.get('path', '')}")) from None


# ============================================================================= finding files


def expand_path(path: str) -> tuple[list[str], list[str]]:
    """A path, folder (recursive) or glob -> (data files sorted, files skipped as not data)."""
    if path.startswith("hf:"):
        return [path], []
    expanded = os.path.expanduser(path)
    p = Path(expanded)
    if p.is_file():
        return [str(p)], []
    if p.is_dir():
        walk = FolderWalk(expanded)
        walk.run()
        walk.raise_if_unreadable(path)
        for note in walk.notes:
            logger.warning(note)
        candidates = sorted(walk.files)
    elif glob.has_magic(expanded):
        candidates = sorted(f for f in glob.glob(expanded, recursive=True) if os.path.isfile(f))
    elif os.path.islink(expanded):
        raise DataError(f"{path}: a symbolic link that leads nowhere readable ({_link_problem(expanded)})")
    else:
        raise DataError(f"{path}: no such file or folder")
    files = [f for f in candidates if container_of(f) is not None]
    skipped = [f for f in candidates if container_of(f) is None]
    if not files:
        raise DataError(
            f"{path}: matches no data files (.jsonl .json .csv .tsv .parquet, optionally .gz/.bz2/.xz)"
            + (f"; found only {', '.join(Path(f).name for f in skipped[:5])}" if skipped else "")
        )
    return files, skipped


def _link_problem(path: str) -> str:
    """Why a symbolic link cannot be followed: a loop (ELOOP) or a missing target."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it points to itself, or into a loop of links"
        return f"its target {os.readlink(path)!r} does not exist" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
    return "unknown problem"


def is_curatune_run_dir(path: str) -> bool:
    """A run directory (manifest.json beside config.yaml) holds curatune's own output, not input data."""
    return os.path.isfile(os.path.join(path, "manifest.json")) and os.path.isfile(os.path.join(path, "config.yaml"))


class FolderWalk:
    """Every file under a folder, following symbolic links, each real folder and file once.

    ``Path.rglob`` neither enters linked folders nor says when it cannot read one; this
    walk follows links (a link back to a folder already read, a loop, is skipped with a
    note, since its files are read through the other path), and collects every folder or
    data file it cannot read so that the caller can refuse to load a partial folder
    silently. Names starting with "." and curatune run directories inside the folder are
    skipped (with a note for run directories).
    """

    def __init__(self, root: str):
        self.root = root
        self.files: list[str] = []
        self.unreadable: list[tuple[str, str]] = []  # (path, why)
        self.notes: list[str] = []
        self._seen_dirs: set[tuple[int, int]] = set()
        self._seen_files: set[tuple[int, int]] = set()

    def run(self) -> None:
        self._seen_dirs.add(_identity(os.stat(self.root)))
        pending = [self.root]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                self.unreadable.append((folder, f"cannot list the folder: {exc.strerror or exc}"))
                continue
            # reversed: the stack then visits sub-folders in name order
            for entry in reversed(entries):
                if not entry.name.startswith("."):
                    self._visit(entry, pending)

    def _visit(self, entry: os.DirEntry, pending: list[str]) -> None:
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow links
            info = entry.stat() if (is_dir or is_file) else None
        except OSError as exc:
            if entry.is_symlink():
                self._broken_link(entry)
            else:
                self.unreadable.append((entry.path, exc.strerror or str(exc)))
            return
        if is_dir:
            if is_curatune_run_dir(entry.path):
                self.notes.append(f"{entry.path}: a curatune run directory inside the input folder; not read as data")
                return
            identity = _identity(info)
            if identity in self._seen_dirs:
                self.notes.append(f"{entry.path}: a link to a folder already read (a loop or a second path); skipped")
                return
            self._seen_dirs.add(identity)
            pending.append(entry.path)
        elif is_file:
            identity = _identity(info)
            if identity in self._seen_files:
                self.notes.append(f"{entry.path}: the same file as one already read (a link); skipped")
                return
            self._seen_files.add(identity)
            self.files.append(entry.path)
        elif entry.is_symlink():
            self._broken_link(entry)

    def _broken_link(self, entry: os.DirEntry) -> None:
        """A link that loops or leads nowhere: an error when its name says data, else a note."""
        problem = f"a symbolic link that cannot be followed: {_link_problem(entry.path)}"
        if container_of(entry.name) is not None:
            self.unreadable.append((entry.path, problem))
        else:
            self.notes.append(f"{entry.path}: {problem}; not a data file name, skipped")

    def raise_if_unreadable(self, label: str) -> None:
        if not self.unreadable:
            return
        shown = "\n  ".join(f"{path}: {why}" for path, why in self.unreadable[:20])
        more = f"\n  ... and {len(self.unreadable) - 20} more" if len(self.unreadable) > 20 else ""
        raise DataError(
            f"{label}: {len(self.unreadable)} path(s) inside cannot be read, so loading the folder would "
            f"silently lose their records:\n  {shown}{more}\nFix their permissions or links, or point the "
            "source at the readable parts."
        )


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def container_of(path: str) -> str | None:
    """'jsonl', 'json', 'csv', 'tsv', 'parquet' from the file name, or None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    return _CONTAINERS.get(suffixes[-1]) if suffixes else None


def file_stem(path: str) -> str:
    """Name without data and compression suffixes: 'a/b/task.jsonl.gz' -> 'task'."""
    if path.startswith("hf:"):
        match = _HF_PATH.match(path)
        return (match["name"] if match else path[3:]).rsplit("/", 1)[-1]
    name = Path(path).name
    for _ in range(2):
        root, ext = os.path.splitext(name)
        if ext.lower() in _COMPRESSION or ext.lower() in _CONTAINERS:
            name = root
    return name


# ============================================================================= decoding


@dataclass
class DecodedText:
    text: str
    encoding: str
    warnings: list[str] = field(default_factory=list)


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: Tried in order when the text is not UTF-8; latin-1 decodes any byte, so it is last.
_LEGACY_ENCODINGS = ("cp1252", "latin-1")


def decode_text(data: bytes, encoding: str | None, where: str) -> DecodedText:
    """Bytes -> text with the given encoding, or the detected one.

    Detection: a byte-order mark wins; then UTF-8; a file that is mostly valid UTF-8
    (some lines with real non-ASCII UTF-8) keeps UTF-8 and its few bad bytes become
    lone surrogates (rows holding them are rejected as ``undecodable_text``); otherwise
    the file is legacy-encoded and decoded as cp1252, or latin-1.

    With an explicit encoding, bad bytes in a file that otherwise decodes are handled the
    same way; a file where nothing non-ASCII decodes raises one DataError with the
    byte offset and the encoding detection would pick.
    """
    if encoding is None:
        encoding = _encoding_from_bom(data) or _utf16_without_bom(data)
    if encoding is not None:
        return _decode_with(data, encoding, where)
    try:
        return DecodedText(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as exc:
        first_error = exc
    text = data.decode("utf-8", "surrogateescape")
    if _shows_real_non_ascii(text):
        return DecodedText(text, "utf-8", [_bad_bytes_warning(text, "utf-8", where, first_error)])
    for legacy in _LEGACY_ENCODINGS:
        try:
            text = data.decode(legacy)
        except UnicodeDecodeError:
            continue
        return DecodedText(
            text, legacy, [f"{where}: not UTF-8; decoded as {legacy} (set `encoding:` to choose another)"]
        )
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def _decode_with(data: bytes, encoding: str, where: str) -> DecodedText:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"{where}: unknown encoding {encoding!r}") from None
    try:
        return DecodedText(data.decode(encoding), encoding)
    except UnicodeDecodeError as exc:
        first_error = exc
    try:
        text = data.decode(encoding, "surrogateescape")
    except UnicodeDecodeError:
        text = ""
    if text and _shows_real_non_ascii(text):
        return DecodedText(text, encoding, [_bad_bytes_warning(text, encoding, where, first_error)])
    start = first_error.start
    line = data.count(b"\n", 0, start) + 1
    guess = decode_text(data, None, where).encoding
    hint = (
        f"; it decodes as {guess}: set `encoding: {guess}` or leave `encoding` unset to detect it"
        if guess.replace("-", "").lower() != encoding.replace("-", "").lower()
        else ""
    )
    raise DataError(
        f"{where}: not valid {encoding} text: byte 0x{data[start]:02x} at byte offset {start} "
        f"(line {line}) cannot be decoded{hint}"
    )


def _encoding_from_bom(data: bytes) -> str | None:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    return None


def _utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 text of mostly ASCII has a zero in every other byte."""
    head = data[:4096]
    if len(head) < 8 or head.count(0) < len(head) // 3:
        return None
    even_zeros, odd_zeros = head[0::2].count(0), head[1::2].count(0)
    if odd_zeros > 0.9 * len(head[1::2]):
        return "utf-16-le"
    if even_zeros > 0.9 * len(head[0::2]):
        return "utf-16-be"
    return None


def _shows_real_non_ascii(text: str) -> bool:
    """Does some line hold non-ASCII text that decoded cleanly (proof of the encoding)?"""
    return any(not line.isascii() and not _LONE_SURROGATE.search(line) for line in text.split("\n"))


def _bad_bytes_warning(text: str, encoding: str, where: str, first_error: UnicodeDecodeError) -> str:
    bad_lines = sum(1 for line in text.split("\n") if _LONE_SURROGATE.search(line))
    return (
        f"{where}: {bad_lines} line(s) hold bytes that are not valid {encoding} (first at byte offset "
        f"{first_error.start}); rows holding them are rejected as undecodable_text"
    )


# ============================================================================= parsing


@dataclass
class RawRow:
    """One row as read: the parsed value, or the reason it could not be parsed."""

    position: str
    value: Any = None
    #: The text of a row that did not parse (parsed rows are re-serialized only if rejected).
    raw_text: str | None = None
    error: tuple[str, str] | None = None  # (reason, message)


@dataclass
class FileRead:
    #: A list, or an iterator that reads the file as it is consumed (read ``warnings`` after it).
    rows: Iterable[RawRow]
    container: str
    encoding: str | None
    warnings: list[str] = field(default_factory=list)


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def parse_jsonl(text: str, where: str) -> list[RawRow]:
    """One JSON value per line; a broken line is one ``invalid_json`` row, not a failed file."""
    # Split on \n only: str.splitlines would also split on U+2028 inside JSON strings.
    return parse_jsonl_lines(enumerate(text.split("\n"), start=1), where)


def parse_jsonl_lines(numbered_lines: Iterable[tuple[int, str]], where: str) -> list[RawRow]:
    """:func:`parse_jsonl` over (line number, line) pairs (blank lines may be left out)."""
    rows: list[RawRow] = []
    first_error: str | None = None
    valid = 0
    for number, line in numbered_lines:
        stripped = line.strip()
        if not stripped:
            continue
        try:
            value = json.loads(stripped)
        except ValueError as exc:  # JSONDecodeError, and int('9' * 5000) beyond Python's digit limit
            message = _json_error(exc)
            summary = f"line {number}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) \
                else f"line {number}: {message}"
        except RecursionError:
            message = "not valid JSON: nested too deeply to read (thousands of levels of [ or {)"
            summary = f"line {number}: {message}"
        else:
            valid += 1
            rows.append(RawRow(str(number), value))
            continue
        first_error = first_error or summary
        rows.append(RawRow(str(number), None, stripped, ("invalid_json", message)))
    if rows and valid == 0 and first_error is not None:
        raise DataError(f"{where}: not JSON Lines: no line parses as JSON ({first_error})")
    return rows


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at column {exc.colno}: {exc.msg}"
    text = str(exc)
    if "digits" in text:  # Python's int-string conversion limit (CVE-2020-10735)
        return "a number has too many digits to read (" + text.split(";")[0] + ")"
    return f"not valid JSON: {text[:200]}"


class JsonDocumentReader:
    """A .json file: an array of records, an object of arrays, one record, or JSON Lines.

    Arrays are read element by element with ``JSONDecoder.raw_decode`` so that an array
    cut off mid-file still yields every complete record before the cut; the unread tail
    is reported as a warning with its size in bytes.
    """

    def __init__(self, text: str, where: str, encoding: str):
        self.text = text
        self.where = where
        self.encoding = encoding
        self.decoder = json.JSONDecoder()
        self.warnings: list[str] = []

    def read(self) -> tuple[list[RawRow], str]:
        text = self.text
        pos = self._skip(0)
        if pos >= len(text):
            return [], "json"
        if text[pos] == "[":
            rows, _ = self._array(pos, key=None)
            return rows, "json"
        try:
            value, end = self._raw_decode(pos)
        except json.JSONDecodeError as exc:
            if text[pos] == "{" and self._cut_off(exc):
                return self._object_of_arrays(pos), "json"
            jsonl = self._as_json_lines()
            if jsonl is not None:
                return jsonl, "jsonl"
            raise self._syntax_error(exc) from None
        if self._skip(end) < len(text):
            jsonl = self._as_json_lines()
            if jsonl is not None:
                return jsonl, "jsonl"
            raise self._error_at(self._skip(end), "extra data after the first JSON value")
        if not isinstance(value, dict):
            raise DataError(
                f"{self.where}: the top level is {type(value).__name__}; expected an array of records, "
                "an object of arrays, or one record per line"
            )
        if detect_row_format(value) is None and any(_is_array_of_objects(v) for v in value.values()):
            return self._rows_of_parsed_object(value), "json"
        return [RawRow("0", value)], "json"

    # -- arrays, element by element

    def _array(self, pos: int, key: str | None) -> tuple[list[RawRow], int | None]:
        """Rows of the array starting at ``pos``; returns (rows, end) or (rows, None) if cut off."""
        text, rows = self.text, []
        pos = self._skip(pos + 1)
        if pos < len(text) and text[pos] == "]":
            return rows, pos + 1
        while True:
            if pos >= len(text):
                self._report_cut(pos, len(rows))
                return rows, None
            decoded = self._decode_at(pos, len(rows))
            if decoded is None:
                return rows, None
            value, end = decoded
            label = str(len(rows)) if key is None else f"{key}[{len(rows)}]"
            rows.append(RawRow(label, value))
            pos = self._skip(end)
            if pos >= len(text):
                self._report_cut(pos, len(rows))
                return rows, None
            if text[pos] == "]":
                return rows, pos + 1
            if text[pos] != ",":
                raise self._error_at(pos, "expected ',' or ']' after an array element")
            pos = self._skip(pos + 1)
            if pos < len(text) and text[pos] == "]":  # tolerate a trailing comma
                return rows, pos + 1

    def _object_of_arrays(self, pos: int) -> list[RawRow]:
        """{"train": [...], ...} that is cut off: read key by key, arrays element by element."""
        text, rows = self.text, []
        pos = self._skip(pos + 1)
        while pos < len(text) and text[pos] != "}":
            decoded = self._decode_at(pos, len(rows))
            if decoded is None:
                return rows
            key, pos = decoded
            pos = self._skip(pos)
            if pos >= len(text):
                self._report_cut(pos, len(rows))
                return rows
            if text[pos] != ":" or not isinstance(key, str):
                raise self._error_at(pos, "expected a \"key\": value pair")
            pos = self._skip(pos + 1)
            if pos < len(text) and text[pos] == "[":
                array_rows, end = self._array(pos, key=str(key))
                rows += array_rows
                if end is None:
                    return rows
                pos = end
            else:
                decoded = self._decode_at(pos, len(rows))
                if decoded is None:
                    return rows
                pos = decoded[1]
            pos = self._skip(pos)
            if pos < len(text) and text[pos] == ",":
                pos = self._skip(pos + 1)
        if pos >= len(text):
            self._report_cut(pos, len(rows))
        return rows

    def _rows_of_parsed_object(self, value: dict[str, Any]) -> list[RawRow]:
        arrays = {k: v for k, v in value.items() if _is_array_of_objects(v)}
        ignored = [k for k in value if k not in arrays]
        if ignored:
            self.warnings.append(f"{self.where}: ignored key(s) that are not arrays of records: {', '.join(ignored)}")
        if len(arrays) > 1:
            self.warnings.append(
                f"{self.where}: loaded the arrays {', '.join(arrays)} together (source shows key[index]); "
                "split the file to load only one"
            )
        rows = []
        for key, items in arrays.items():
            rows += [RawRow(f"{key}[{i}]", item) for i, item in enumerate(items)]
        return rows

    def _as_json_lines(self) -> list[RawRow] | None:
        """JSON Lines saved as .json (common on the hub) when most lines are objects."""
        lines = [line for line in self.text.split("\n") if line.strip()]
        if len(lines) < 2:
            return None
        try:
            rows = parse_jsonl(self.text, self.where)
        except DataError:
            return None
        objects = sum(isinstance(r.value, dict) for r in rows)
        return rows if objects * 2 >= len(lines) else None

    # -- positions and errors

    def _decode_at(self, pos: int, complete: int) -> tuple[Any, int] | None:
        """One JSON value at ``pos`` and where it ends; None, with the cut reported, when the
        text ends inside it (``complete`` rows were read before)."""
        try:
            return self._raw_decode(pos)
        except json.JSONDecodeError as exc:
            if self._cut_off(exc):
                self._report_cut(pos, complete)
                return None
            raise self._syntax_error(exc) from None

    def _raw_decode(self, pos: int) -> tuple[Any, int]:
        """``raw_decode``; a value nested too deeply or a number too long is a DataError at ``pos``:
        inside one JSON document there is no next line to go on reading from."""
        try:
            return self.decoder.raw_decode(self.text, pos)
        except json.JSONDecodeError:
            raise
        except ValueError as exc:
            raise self._error_at(pos, _json_error(exc)) from None
        except RecursionError:
            raise self._error_at(pos, "the value starting here is nested too deeply to read") from None

    def _skip(self, pos: int) -> int:
        return _WHITESPACE.match(self.text, pos).end()  # type: ignore[union-attr]

    def _cut_off(self, exc: json.JSONDecodeError) -> bool:
        """Did parsing fail because the text ended, rather than on bad syntax?"""
        if exc.msg.startswith("Unterminated string"):
            return True  # the scanner reached the end of the text inside a string
        rest = self.text[exc.pos:].strip()
        return rest == "" or any(word.startswith(rest) for word in ("true", "false", "null"))

    def _byte_offset(self, pos: int) -> int:
        return len(_encode(self.text[:pos], self.encoding))

    def _report_cut(self, pos: int, complete: int) -> None:
        unread = len(_encode(self.text[pos:], self.encoding))
        line = self.text.count("\n", 0, pos) + 1
        self.warnings.append(
            f"{self.where}: the JSON is cut off at line {line} (byte offset {self._byte_offset(pos)}): "
            f"loaded the {complete} complete record(s) of that array before the cut; "
            f"{unread} byte(s) after it could not be read"
        )

    def _syntax_error(self, exc: json.JSONDecodeError) -> DataError:
        return DataError(
            f"{self.where}: not valid JSON at line {exc.lineno}, column {exc.colno} "
            f"(byte offset {self._byte_offset(exc.pos)}): {exc.msg}"
        )

    def _error_at(self, pos: int, message: str) -> DataError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return DataError(
            f"{self.where}: not valid JSON at line {line}, column {column} "
            f"(byte offset {self._byte_offset(pos)}): {message}"
        )


def _is_array_of_objects(value: Any) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def _encode(text: str, encoding: str) -> bytes:
    try:
        return text.encode(encoding, "surrogateescape")
    except (UnicodeEncodeError, LookupError):
        return text.encode("utf-8", "surrogatepass")


def parse_csv(text: str, where: str, delimiter: str) -> list[RawRow]:
    """Rows of a CSV/TSV with a header line; all values stay text."""
    return list(iter_csv_rows(io.StringIO(text, newline=""), where, delimiter))


def iter_csv_rows(lines: Iterable[str], where: str, delimiter: str) -> Iterator[RawRow]:
    """:func:`parse_csv` over lines read one at a time (a file opened with ``newline=""``)."""
    # strict: an unclosed quote raises instead of silently swallowing the rest of the file.
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    number = 0  # data rows so far (blank lines are not rows)
    row_start_line = 1  # a row may span lines (quoted newlines); report where it starts
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [name.strip() or f"column_{i + 1}" for i, name in enumerate(header)]
        duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
        if duplicates:
            raise DataError(f"{where}: line 1: the header repeats the column(s) {', '.join(duplicates)}")
        row_start_line = reader.line_num + 1
        for fields in reader:
            line, row_start_line = row_start_line, reader.line_num + 1
            if not fields or (len(fields) == 1 and not fields[0].strip() and len(header) > 1):
                continue  # blank line
            number += 1
            while len(fields) > len(header) and fields[-1] == "":
                fields = fields[:-1]  # trailing delimiters
            if len(fields) != len(header):
                message = f"line {line}: {len(fields)} field(s), the header has {len(header)}"
                yield RawRow(str(number), None, delimiter.join(fields), ("malformed_row", message))
                continue
            yield RawRow(str(number), dict(zip(header, fields)))
    except csv.Error as exc:
        kind = "TSV" if delimiter == "\t" else "CSV"
        hint = " (a quote that is never closed?)" if "end of data" in str(exc) else ""
        raise DataError(f"{where}: not valid {kind} in the row starting at line {row_start_line}: {exc}{hint}") from None


def read_parquet(source: str | io.BytesIO, where: str) -> list[RawRow]:
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({exc})") from None
    return [RawRow(str(i), row) for i, row in enumerate(table.to_pylist())]


def read_hf(path: str) -> FileRead:
    """``hf:org/name[:config][@split]`` through ``datasets.load_dataset`` (split defaults to train)."""
    match = _HF_PATH.match(path)
    if not match:
        raise DataError(f"{path}: expected hf:org/name[:config][@split], e.g. hf:databricks/databricks-dolly-15k@train")
    name, config, split = match["name"], match["config"], match["split"] or "train"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: loading from the Hugging Face hub needs the `datasets` package") from None
    what = f"Hugging Face dataset '{name}'" + (f" (config {config})" if config else "") + f", split {split}"
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # network, offline mode, missing repo, auth, bad config: all the user's environment
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise DataError(
            f"{path}: could not load the {what}: {type(exc).__name__}: {reason}. "
            "Without access to the hub (or with HF_HUB_OFFLINE=1) only datasets already in the local "
            "cache load; otherwise download the files and point `path:` at them."
        ) from None
    if not hasattr(dataset, "to_list"):
        raise DataError(f"{path}: the {what} is not a single table; name a split with @split")
    rows = [RawRow(str(i), row) for i, row in enumerate(dataset.to_list())]
    return FileRead(rows, "hf", None)


def read_file(path: str, encoding: str | None) -> FileRead:
    """Any supported file -> raw rows, container name and encoding used."""
    if path.startswith("hf:"):
        return read_hf(path)
    container = container_of(path)
    if container is None:
        raise DataError(
            f"{path}: unsupported file type; expected .jsonl .json .csv .tsv .parquet (optionally .gz/.bz2/.xz)"
            + _PARALLEL_HINT
        )
    if container == "jsonl":
        streamed = read_jsonl_streaming(path, encoding)
        if streamed is not None:
            return streamed
    if container in ("csv", "tsv", "json", "jsonl"):
        # Read as a stream when the encoding allows: rows come one at a time, not the file
        # whole in memory (bytes, then text, then rows).
        decoding = detect_stream_decoding(path, encoding)
        if decoding is not None and container in ("csv", "tsv"):
            rows = stream_csv(path, decoding, "\t" if container == "tsv" else ",")
            return FileRead(rows, container, decoding.encoding, list(decoding.warnings))
        if decoding is not None:  # a JSON array (a .jsonl holding one array, too)
            streamed = stream_json_array(path, decoding)
            if streamed is not None:
                streamed.warnings[:0] = decoding.warnings
                return streamed
    data = read_bytes(path)
    if container == "parquet":
        return FileRead(read_parquet(io.BytesIO(data), path), "parquet", None)
    decoded = decode_text(data, encoding, path)
    del data  # the text is all that is needed from here; don't hold both
    text = decoded.text.lstrip("\ufeff")
    warnings = list(decoded.warnings)
    if container in ("csv", "tsv"):
        rows = parse_csv(text, path, "\t" if container == "tsv" else ",")
    elif container == "jsonl" and not text.lstrip().startswith("["):
        rows = parse_jsonl(text, path)
    else:  # .json, or a .jsonl that holds one array
        reader = JsonDocumentReader(text, path, decoded.encoding)
        rows, container = reader.read()
        warnings += reader.warnings
    return FileRead(rows, container, decoded.encoding, warnings)


def read_jsonl_streaming(path: str, encoding: str | None) -> FileRead | None:
    """JSON Lines read line by line through the decompressor, keeping only non-blank lines.

    Memory then follows the records, not the file: a .jsonl.gz of a gigabyte of newlines
    (a few MB compressed) costs nothing, where decompressing it whole, decoding it and
    splitting it into lines took gigabytes. Returns None when the whole-file reader must
    do it instead: text in an encoding whose newline is not the byte 0x0a (UTF-16/32), or a
    .jsonl that holds one JSON array. Encoding detection (:func:`decode_text`) sees every
    non-blank line, so it decides as it would on the whole file.
    """
    numbers: list[int] = []
    lines: list[bytes] = []
    with _open_data_file(path) as stream:
        head = _peek(stream)
        if not _newline_is_one_byte(head, encoding):
            return None
        try:
            for number, line in non_blank_lines(stream):
                if not lines and line.lstrip().removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"["):
                    return None  # one JSON array in a .jsonl file
                numbers.append(number)
                lines.append(line.rstrip(b"\r"))
        except _DECOMPRESSION_ERRORS as exc:
            raise DataError(f"{path}: cannot decompress the {Path(path).suffix} file ({exc})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    joined = b"\n".join(lines)
    del lines
    try:
        decoded = decode_text(joined, encoding, path)
    except DataError:
        return None  # the whole-file reader gives the error with the file's own line numbers
    del joined
    texts = decoded.text.split("\n") if numbers else []
    decoded.text = ""
    if len(texts) != len(numbers):
        return None  # an encoding that turned some other byte into a newline: read it whole
    if texts:
        texts[0] = texts[0].lstrip("\ufeff")
    rows = parse_jsonl_lines(zip(numbers, texts), path)
    return FileRead(rows, "jsonl", decoded.encoding, list(decoded.warnings))


#: A line holding something other than ASCII whitespace (the newline itself not included).
_NON_BLANK_LINE = re.compile(rb"[^\n]*[^ \t\r\n\x0b\x0c][^\n]*")
_CHUNK = 1 << 20


def non_blank_lines(stream: io.BufferedIOBase) -> Iterable[tuple[int, bytes]]:
    """(line number from 1, line without its newline) for every line that is not blank.

    Reads 1 MB chunks and finds non-blank lines with one regular expression, so runs of
    blank lines cost C-speed scanning, not a Python object each; a line longer than a chunk
    is gathered piece by piece and joined once."""
    pieces: list[bytes] = []  # the unfinished last line, in pieces
    first_line = 1  # number of the first line that starts in the pending text
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        end = chunk.rfind(b"\n") + 1
        if end == 0:
            pieces.append(chunk)
            continue
        text = b"".join(pieces) + chunk[:end] if pieces else chunk[:end]
        pieces = [chunk[end:]] if end < len(chunk) else []
        number, scanned = first_line, 0
        for match in _NON_BLANK_LINE.finditer(text):
            number += text.count(b"\n", scanned, match.start())
            scanned = match.start()
            yield number, match.group()
        first_line += text.count(b"\n")
    rest = b"".join(pieces)
    if rest.strip():
        yield first_line, rest


def _newline_is_one_byte(head: bytes, encoding: str | None) -> bool:
    """Can lines be split on the byte 0x0a? Not in UTF-16/32 (detected or given)."""
    if encoding is None:
        detected = _encoding_from_bom(head) or _utf16_without_bom(head)
        return detected in (None, "utf-8-sig")
    try:
        return "a\n".encode(encoding) == b"a\n"
    except (LookupError, UnicodeError):
        return False  # the whole-file reader names the unknown encoding


def _peek(stream: io.BufferedIOBase, size: int = 4096) -> bytes:
    try:
        return stream.peek(size)[:size]  # type: ignore[attr-defined]
    except _DECOMPRESSION_ERRORS + (OSError,):
        return b""  # the read that follows raises the same error with its message


# ============================================================================= streaming CSV, TSV and JSON arrays


@dataclass
class StreamDecoding:
    """How to decode a file as a stream: what :func:`decode_text` would decide on the whole."""

    codec: str  # for io.TextIOWrapper
    errors: str  # "strict", or "surrogateescape" when bad bytes become lone surrogates (rows rejected)
    encoding: str  # the name reported in file stats (decode_text's)
    warnings: list[str] = field(default_factory=list)


def detect_stream_decoding(path: str, encoding: str | None) -> StreamDecoding | None:
    """:func:`decode_text`'s choice of encoding, made over the file in 1 MB pieces cut at newlines
    instead of on the whole file in memory (a compressed file is decompressed once for this).

    Each piece decodes on its own: a newline byte never sits inside a character in UTF-8 or
    a single-byte encoding. Returns None when the whole-file reader must decide: a file whose
    newline is not the byte 0x0a (UTF-16/32), or text that fails in the given encoding (its
    error names the line and the encoding that would work, which needs the whole text).
    """
    with _open_data_file(path) as stream:
        head = _peek(stream)
        if not _newline_is_one_byte(head, encoding):
            return None
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise DataError(f"{path}: unknown encoding {encoding!r}") from None
        codec = encoding or _encoding_from_bom(head) or "utf-8"
        scan = _EncodingScan(codec, try_legacy=encoding is None and codec == "utf-8")
        try:
            for piece in _newline_pieces(stream):
                scan.add(piece)
        except _DECOMPRESSION_ERRORS as exc:
            raise DataError(f"{path}: cannot decompress the {Path(path).suffix} file ({exc})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if scan.first_error is None:
        return StreamDecoding(codec, "strict", codec)
    if scan.clean_non_ascii:  # mostly valid: keep it, reject the rows holding bad bytes
        warning = (f"{path}: {scan.bad_lines} line(s) hold bytes that are not valid {codec} (first at byte "
                   f"offset {scan.first_error}); rows holding them are rejected as undecodable_text")
        return StreamDecoding(codec, "surrogateescape", codec, [warning])
    if not scan.try_legacy:
        return None  # the whole-file reader raises the error with the line and a hint
    legacy = "cp1252" if scan.cp1252_ok else "latin-1"
    return StreamDecoding(legacy, "strict", legacy,
                          [f"{path}: not UTF-8; decoded as {legacy} (set `encoding:` to choose another)"])


class _EncodingScan:
    """Tallies, piece by piece, what decode_text looks at: the first bad byte, how many lines
    hold bad bytes, whether some non-ASCII line decodes cleanly, and whether cp1252 would do."""

    def __init__(self, codec: str, try_legacy: bool):
        self.codec = codec
        self.try_legacy = try_legacy
        self.offset = 0  # bytes before the current piece
        self.first_error: int | None = None
        self.bad_lines = 0
        self.clean_non_ascii = False
        self.cp1252_ok = True

    def add(self, piece: bytes) -> None:
        try:
            piece.decode(self.codec)
        except UnicodeDecodeError as exc:
            self._bad_piece(piece, exc)
        else:
            self.clean_non_ascii = self.clean_non_ascii or not piece.isascii()
        self.offset += len(piece)

    def _bad_piece(self, piece: bytes, exc: UnicodeDecodeError) -> None:
        if self.first_error is None:
            self.first_error = self.offset + exc.start
        for line in piece.split(b"\n"):
            try:
                line.decode(self.codec)
            except UnicodeDecodeError:
                self.bad_lines += 1
            else:
                self.clean_non_ascii = self.clean_non_ascii or not line.isascii()
        if self.try_legacy and self.cp1252_ok:
            try:
                piece.decode("cp1252")
            except UnicodeDecodeError:
                self.cp1252_ok = False


def _newline_pieces(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """The stream in pieces of about 1 MB that end just after a newline (the last piece: at the end)."""
    rest = b""
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        chunk = rest + chunk if rest else chunk
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            rest = chunk  # a line longer than the chunk: gather more
            continue
        rest = chunk[cut:]
        yield chunk[:cut]
    if rest:
        yield rest


def open_text_stream(path: str, decoding: StreamDecoding) -> io.TextIOWrapper:
    """The file's text, decoded as it is read (``newline=""``: line ends left as they are, for csv)."""
    return io.TextIOWrapper(_open_data_file(path), encoding=decoding.codec, errors=decoding.errors, newline="")


def _without_leading_bom(lines: Iterable[str]) -> Iterator[str]:
    """The lines, the first without byte-order marks (the whole-file reader strips them too)."""
    lines = iter(lines)
    first = next(lines, None)
    if first is None:
        return
    yield first.lstrip("\ufeff")
    yield from lines


def stream_csv(path: str, decoding: StreamDecoding, delimiter: str) -> Iterator[RawRow]:
    """CSV/TSV rows read from the file as they are consumed: memory holds one row, not the file."""
    with open_text_stream(path, decoding) as text:
        yield from iter_csv_rows(_without_leading_bom(text), path, delimiter)


#: Characters of text read at a time from a streamed JSON array.
_TEXT_CHUNK = 1 << 20


class JsonArrayStream:
    """A JSON document whose top level is an array, read record by record from a text stream.

    Same rows, warnings and errors as :class:`JsonDocumentReader` on the whole text (row
    labels count from 0, a trailing comma is tolerated, an array cut off mid-file yields
    every complete record and one warning, a syntax error is one DataError with line,
    column and byte offset), but only the unread part of the text around the current
    record is held. A record longer than what is buffered is decoded again after reading
    more, reading twice as much each time.
    """

    def __init__(self, text: io.TextIOBase, where: str, encoding: str):
        self.stream = text
        self.where = where
        self.encoding = encoding
        self.decoder = json.JSONDecoder()
        self.warnings: list[str] = []
        self.buffer = ""
        self.eof = False
        # Where the buffer starts in the file: bytes, line number, characters since that line began.
        self.base_bytes = 0
        self.base_line = 1
        self.base_column = 0

    def starts_with_array(self) -> bool:
        """Is the first non-blank character '['? (reads the first chunk; BOMs skipped)"""
        self._more(_TEXT_CHUNK)
        self.buffer = self.buffer.lstrip("\ufeff")
        pos = self._skip(0)
        return pos < len(self.buffer) and self.buffer[pos] == "["

    def rows(self) -> Iterator[RawRow]:
        pos = self._skip(self._skip(0) + 1)  # after the '['
        if pos < len(self.buffer) and self.buffer[pos] == "]":
            return
        count = 0
        while True:
            if pos >= len(self.buffer):
                self._report_cut(pos, count)
                return
            decoded = self._decode_at(pos, count)
            if decoded is None:
                return
            value, end = decoded
            yield RawRow(str(count), value)
            count += 1
            pos = self._drop_read(self._skip(end))
            if pos >= len(self.buffer):
                self._report_cut(pos, count)
                return
            if self.buffer[pos] == "]":
                return
            if self.buffer[pos] != ",":
                raise self._error_at(pos, "expected ',' or ']' after an array element")
            pos = self._skip(pos + 1)
            if pos < len(self.buffer) and self.buffer[pos] == "]":  # tolerate a trailing comma
                return

    # -- reading

    def _more(self, chars: int) -> bool:
        """Append about ``chars`` characters to the buffer; False at the end of the text."""
        if self.eof:
            return False
        try:
            piece = self.stream.read(chars)
        except (_DECOMPRESSION_ERRORS + (UnicodeDecodeError,)) as exc:
            raise DataError(f"{self.where}: cannot read the file ({exc})") from None
        if not piece:
            self.eof = True
            return False
        self.buffer += piece
        return True

    def _skip(self, pos: int) -> int:
        """Past whitespace, reading more when the buffer ends in it."""
        while True:
            pos = _WHITESPACE.match(self.buffer, pos).end()  # type: ignore[union-attr]
            if pos < len(self.buffer) or not self._more(_TEXT_CHUNK):
                return pos

    def _drop_read(self, pos: int) -> int:
        """Forget the text before ``pos`` (keeping the counts that locate errors); the new pos."""
        if pos < _TEXT_CHUNK:
            return pos
        dropped = self.buffer[:pos]
        self.base_bytes += len(_encode(dropped, self.encoding))
        newlines = dropped.count("\n")
        if newlines:
            self.base_line += newlines
            self.base_column = len(dropped) - dropped.rfind("\n") - 1
        else:
            self.base_column += len(dropped)
        self.buffer = self.buffer[pos:]
        return 0

    def _decode_at(self, pos: int, complete: int) -> tuple[Any, int] | None:
        """One JSON value at ``pos``, reading more while the text ends inside it; None (cut
        reported) when the file ends inside it."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, pos)
            except json.JSONDecodeError as exc:
                if self._cut_off(exc) and self._more(max(_TEXT_CHUNK, len(self.buffer) - pos)):
                    continue
                if self._cut_off(exc):
                    self._report_cut(pos, complete)
                    return None
                raise self._error_at(exc.pos, exc.msg) from None
            except ValueError as exc:
                raise self._error_at(pos, _json_error(exc)) from None
            except RecursionError:
                raise self._error_at(pos, "the value starting here is nested too deeply to read") from None
            # A number may go on past the end of the buffer ("12" of "12345"): read on first.
            if end >= len(self.buffer) and self._more(_TEXT_CHUNK):
                continue
            return value, end

    def _cut_off(self, exc: json.JSONDecodeError) -> bool:
        if exc.msg.startswith("Unterminated string"):
            return True
        rest = self.buffer[exc.pos:].strip()
        return rest == "" or any(word.startswith(rest) for word in ("true", "false", "null"))

    # -- positions in the whole file

    def _location(self, pos: int) -> tuple[int, int, int]:
        """(line, column, byte offset) of buffer position ``pos`` in the file."""
        line = self.base_line + self.buffer.count("\n", 0, pos)
        last_newline = self.buffer.rfind("\n", 0, pos)
        column = pos - last_newline if last_newline >= 0 else self.base_column + pos + 1
        return line, column, self.base_bytes + len(_encode(self.buffer[:pos], self.encoding))

    def _report_cut(self, pos: int, complete: int) -> None:
        while self._more(_TEXT_CHUNK):
            pass  # the cut is at the end of the file; count what follows it
        line, _, offset = self._location(pos)
        unread = len(_encode(self.buffer[pos:], self.encoding))
        self.warnings.append(
            f"{self.where}: the JSON is cut off at line {line} (byte offset {offset}): "
            f"loaded the {complete} complete record(s) of that array before the cut; "
            f"{unread} byte(s) after it could not be read"
        )

    def _error_at(self, pos: int, message: str) -> DataError:
        line, column, offset = self._location(pos)
        return DataError(f"{self.where}: not valid JSON at line {line}, column {column} (byte offset {offset}): {message}")


def stream_json_array(path: str, decoding: StreamDecoding) -> FileRead | None:
    """A JSON file (or a .jsonl holding one array) whose top level is an array, as a stream of
    rows; None when the top level is something else (the whole-file reader handles it)."""
    text = open_text_stream(path, decoding)
    reader = JsonArrayStream(text, path, decoding.encoding)
    try:
        is_array = reader.starts_with_array()
    except BaseException:
        text.close()
        raise
    if not is_array:
        text.close()
        return None

    def rows() -> Iterator[RawRow]:
        with text:
            yield from reader.rows()

    # reader.warnings is the list the FileRead holds: a cut found while reading shows up in it.
    return FileRead(rows(), "json", decoding.encoding, reader.warnings)


_DECOMPRESSION_ERRORS = (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile)


def _open_data_file(path: str) -> io.BufferedIOBase:
    """A binary stream of the file's content, decompressing .gz, .bz2 and .xz on the fly."""
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    try:
        return opener(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def read_bytes(path: str) -> bytes:
    """A file's bytes, decompressed when it ends in .gz, .bz2 or .xz."""
    with _open_data_file(path) as stream:
        try:
            return stream.read()
        except (_DECOMPRESSION_ERRORS + (ValueError,)) as exc:
            raise DataError(f"{path}: cannot decompress the {Path(path).suffix} file ({exc})") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


_PARALLEL_HINT = (
    "; for aligned plain-text files (one sentence per line, e.g. train.en + train.de) set "
    "`format: parallel` and `target_path:` (see docs/data.md)"
)


# ============================================================================= converting


@dataclass
class _Loaded:
    records: list[Record] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    input_count: int = 0


class FileLoader:
    """One file: read it, pick its format from its first rows, convert or reject each row."""

    def __init__(self, source: SourceConfig, path: str):
        self.source = source
        self.path = path
        self.default_category = (
            source.category.replace("{file}", file_stem(path)) if source.category else None
        )

    def load(self, into: _Loaded) -> None:
        read = read_file(self.path, self.source.encoding)
        # Rows may come from a stream (CSV, TSV, JSON arrays): the format is detected on the
        # first rows, then each row becomes a record or a ledger row as it is read.
        rows = iter(read.rows)
        head = list(itertools.islice(rows, DETECTION_SAMPLE * 4))
        converter, format_name = self._converter(head)
        count = kept = rejected = 0
        for raw in itertools.chain(head, rows):
            count += 1
            try:
                into.records.append(self._record(raw, converter))
                kept += 1
            except RowRejected as exc:
                into.ledger.append(self._ledger_row(raw, exc.reason, exc.message, read.encoding))
                rejected += 1
        check_accounting(count, kept, rejected, self.path)
        into.input_count += count
        into.warnings += read.warnings  # after the rows: a streaming reader adds its warnings as it reads
        if not count:
            into.warnings.append(f"{self.path}: no rows (empty file)")
        into.stats.append({
            "path": self.path, "container": read.container, "format": format_name,
            "encoding": read.encoding, "rows": count, "kept": kept, "rejected": rejected,
        })

    def _converter(self, rows: list[RawRow]) -> tuple[RowConverter | None, str | None]:
        sample = [r.value for r in rows if r.error is None and isinstance(r.value, dict)]
        if not sample:
            return None, None  # nothing to detect from: every row is rejected on its own
        name, field_map = resolve_field_map(self.source.format, self.source.mapping, sample, self.path)
        return RowConverter(field_map, name), name

    def _record(self, raw: RawRow, converter: RowConverter | None) -> Record:
        if raw.error is not None:
            raise RowRejected(*raw.error)
        if converter is None:
            raise RowRejected("not_an_object", f"expected an object ({{...}}), got {type(raw.value).__name__}")
        bad_field = _undecodable_field(raw.value)
        if bad_field is not None:
            raise RowRejected("undecodable_text", f"field '{bad_field}' holds bytes that are not valid text in the file's encoding")
        converted = converter.convert(raw.value)
        return Record.make(
            converted.messages,
            category=converted.category or self.default_category,
            source=f"{self.path}:{raw.position}",
            meta=converted.meta,
        )

    def _ledger_row(self, raw: RawRow, reason: str, message: str, encoding: str | None) -> dict[str, Any]:
        raw_text = raw.raw_text if raw.raw_text is not None else _dumps(raw.value)
        if reason == "undecodable_text" and encoding:
            message = f"{message} ({encoding})"
        return {
            "id": hashlib.sha1(raw_text.encode("utf-8", "surrogatepass")).hexdigest()[:16],
            "messages": [],
            "category": self.default_category,
            "source": f"{self.path}:{raw.position}",
            "meta": _raw_meta(raw, raw_text),
            "step": LEDGER_STEP,
            "reason": reason,
            "detail": f"{self.path}:{raw.position}: {message}",
            "duplicate_of": None,
            "cluster_id": None,
            **LEDGER_DEFAULTS,
        }


class _SourceLoader:
    """One SourceConfig: expand its path into files and load each, with a progress bar if many."""

    def __init__(self, source: SourceConfig):
        self.source = source

    def load(self) -> _Loaded:
        if self.source.format == "parallel":
            out = _Loaded()
            ParallelLoader(self.source).load(out)
            for warning in out.warnings:
                logger.warning(warning)
            return out
        files, skipped = expand_path(self.source.path)
        if skipped:
            logger.info("%s: skipped %d non-data file(s): %s", self.source.path, len(skipped),
                        ", ".join(Path(f).name for f in skipped[:10]))
        out = _Loaded()
        for path in _progress(files, self.source.path):
            FileLoader(self.source, path).load(out)
        for warning in out.warnings:
            logger.warning(warning)
        logger.info("%s: %d rows, %d loaded, %d rejected", self.source.path, out.input_count,
                    len(out.records), len(out.ledger))
        return out


class ParallelLoader:
    """``format: parallel``: two aligned plain-text files -> one translation record per line.

    Line i of ``path`` (source language) and line i of ``target_path`` (target language)
    make one record: user = the instruction template filled with the source sentence,
    assistant = the target sentence, ``source`` = ``"<path>:<i>"`` (lines count from 1).
    Files of different lengths are not aligned: one DataError naming both files and both
    counts, since no pairing of their lines can be trusted. A pair with an empty side is
    rejected (``empty_content``) and keeps its line, so the rest stay aligned.
    """

    def __init__(self, source: SourceConfig):
        self.source = source
        self.path = _single_file(source.path, "path")
        self.target_path = _single_file(source.target_path or "", "target_path")
        self.default_category = (
            source.category.replace("{file}", parallel_stem(self.path)) if source.category else None
        )

    def load(self, into: _Loaded) -> None:
        source_lines, source_encoding, warnings = self._lines(self.path)
        target_lines, target_encoding, target_warnings = self._lines(self.target_path)
        warnings += self._drop_unpaired_blank_tail(source_lines, target_lines)
        if len(source_lines) != len(target_lines):
            raise DataError(
                f"{self.path} and {self.target_path} are not aligned: {self.path} has {len(source_lines)} "
                f"line(s), {self.target_path} has {len(target_lines)}; format: parallel needs the same "
                "number of lines in both (line i of target_path translating line i of path)"
            )
        converter = self._converter()
        kept = rejected = 0
        for number, (source_text, target_text) in enumerate(zip(source_lines, target_lines), start=1):
            position = f"{self.path}:{number}"
            try:
                messages = converter.convert(source_text, target_text, f"{self.path} line {number} (source)",
                                             f"{self.target_path} line {number} (target)")
            except RowRejected as exc:
                into.ledger.append(self._ledger_row(position, source_text, target_text, exc))
                rejected += 1
                continue
            into.records.append(Record.make(messages, category=self.default_category, source=position))
            kept += 1
        check_accounting(len(source_lines), kept, rejected, self.path)
        into.input_count += len(source_lines)
        into.warnings += warnings + target_warnings
        if not source_lines:
            into.warnings.append(f"{self.path}: no lines (empty file)")
        into.stats.append({
            "path": self.path, "target_path": self.target_path, "container": "text", "format": "parallel",
            "encoding": source_encoding, "target_encoding": target_encoding,
            "rows": len(source_lines), "kept": kept, "rejected": rejected,
        })

    def _converter(self) -> ParallelConverter:
        template = self.source.parallel_instruction()
        uses = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        source_lang = self._language(self.source.source_lang, self.path, "source_lang", "source_lang" in uses)
        target_lang = self._language(self.source.target_lang, self.target_path, "target_lang", "target_lang" in uses)
        return ParallelConverter(template, source_lang, target_lang)

    @staticmethod
    def _language(configured: str | None, path: str, key: str, needed: bool) -> str | None:
        if configured:
            return language_name(configured)
        code = language_code_of(path)
        if code is not None:
            return LANGUAGE_NAMES[code]
        if needed:
            raise DataError(
                f"{path}: cannot tell the language from the file name (expected a suffix such as .en or .de); "
                f"set `{key}:` (a name such as German, or a code such as de)"
            )
        return None

    def _lines(self, path: str) -> tuple[list[str], str, list[str]]:
        decoded = decode_text(read_bytes(path), self.source.encoding, path)
        text = decoded.text.removeprefix("\ufeff")
        # Split on \n only: str.splitlines would also split on U+2028 and friends inside a
        # sentence and silently shift the alignment. A final newline ends the last line.
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines, decoded.encoding, list(decoded.warnings)

    def _drop_unpaired_blank_tail(self, source_lines: list[str], target_lines: list[str]) -> list[str]:
        """Drop blank lines at the end of one file that pair with nothing (an editor's extra
        newline), in place, so two otherwise aligned files stay aligned; returns warnings.
        Blank lines that do have a partner line are rejected like any empty line."""
        warnings = []
        for lines, other, path in ((source_lines, target_lines, self.path),
                                   (target_lines, source_lines, self.target_path)):
            extra = lines[len(other):]
            if extra and all(not line.strip() for line in extra):
                del lines[len(other):]
                warnings.append(f"{path}: ignored {len(extra)} blank line(s) at the end of the file (no partner line)")
        return warnings

    def _ledger_row(self, position: str, source_text: str, target_text: str, exc: RowRejected) -> dict[str, Any]:
        raw_text = f"{source_text}\t{target_text}"
        raw = RawRow(position.rsplit(":", 1)[1], {"source": source_text, "target": target_text})
        return {
            "id": hashlib.sha1(raw_text.encode("utf-8", "surrogatepass")).hexdigest()[:16],
            "messages": [],
            "category": self.default_category,
            "source": position,
            "meta": _raw_meta(raw, raw_text),
            "step": LEDGER_STEP,
            "reason": exc.reason,
            "detail": f"{position}: {_safe(exc.message)}",
            "duplicate_of": None,
            "cluster_id": None,
            **LEDGER_DEFAULTS,
        }


def _single_file(path: str, key: str) -> str:
    """format: parallel pairs exactly two files; a folder or glob has no single line order."""
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        return expanded
    if os.path.isdir(expanded) or glob.has_magic(expanded):
        raise DataError(
            f"{path}: format: parallel needs one file for `{key}` (a folder or glob has no single line "
            "order); add one source per file pair"
        )
    raise DataError(f"{path}: no such file (`{key}` of a format: parallel source)")


def language_code_of(path: str) -> str | None:
    """The language code in a file name's suffixes: 'train.de.gz' -> 'de', 'a.en.txt' -> 'en'."""
    suffixes = [s.lower().lstrip(".") for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in ("gz", "bz2", "xz", "txt"):
        suffixes.pop()
    return suffixes[-1] if suffixes and suffixes[-1] in LANGUAGE_NAMES else None


def parallel_stem(path: str) -> str:
    """'{file}' of a parallel source: the name without compression, .txt and language suffixes."""
    name = Path(path).name
    while True:
        root, ext = os.path.splitext(name)
        ext = ext.lower().lstrip(".")
        if not root or not (ext in ("gz", "bz2", "xz", "txt") or ext in LANGUAGE_NAMES):
            return name
        name = root


def _progress(files: list[str], label: str) -> Iterable[str]:
    if len(files) < PROGRESS_MIN_FILES:
        return files

    # disable=None: the bar shows on a terminal and stays out of logs and captured output.
    return tqdm(files, desc=f"loading {Path(label).name or label}", unit="file", disable=None)


def _undecodable_field(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    for key, value in row.items():
        if has_lone_surrogate(key) or has_lone_surrogate(value):
            return _safe(str(key))
    return None


def _dumps(value: Any) -> str:
    try:
        return standard_json(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _raw_meta(raw: RawRow, raw_text: str) -> str:
    """The raw row as JSON for the ledger: the parsed row, or its text when it did not parse."""
    meta = _dumps(raw.value) if raw.error is None and raw.value is not None else json.dumps({"raw_text": raw_text}, ensure_ascii=False)
    if len(meta) > MAX_RAW_CHARS:
        meta = json.dumps({"raw_text": raw_text[:MAX_RAW_CHARS], "truncated_from_chars": len(raw_text)}, ensure_ascii=False)
    if _LONE_SURROGATE.search(meta):
        meta = json.dumps(json.loads(meta), ensure_ascii=True)  # \udcxx escapes keep it valid UTF-8
    return meta


def _safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _LONE_SURROGATE.search(text) else text
