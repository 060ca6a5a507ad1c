"""The one reader of JSON Lines that users hand to curatune (labels, evaluation items, prompts).

Run files that curatune appends to (training logs) are read tolerantly by
:func:`curatune.rundir.read_jsonl`; data the user wrote is read strictly, so a broken line
is reported with its file and line number instead of being skipped.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from curatune.errors import DataError


def iter_jsonl(lines: Iterable[str], where: str) -> Iterator[tuple[int, Any]]:
    """(1-based line number, value) of every non-blank line; a line that is not JSON raises
    a DataError naming ``where`` (the file) and the line."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, deep nesting
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise DataError(f"{where}: line {line_no}: not valid JSON ({reason})") from None
