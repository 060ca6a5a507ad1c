"""Reading run-directory files that may be damaged: say which file, what is wrong, how to repair.

Writes are atomic, so curatune itself never leaves a half-written file; damage comes from
outside (a disk error, a copy cut short, a hand edit, a deleted folder). Each reader here
turns "cannot parse" into one :class:`DamagedRunError` naming the file and the repair:
re-run the stage that writes it, or delete the damaged unit (one cell folder) so that the
next run redoes only that unit.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from curatune.errors import CuratuneError

#: How to repair each kind of run file (the stage that rewrites it).
REPAIR = {
    "manifest.json": "it holds only metadata (config, versions, timestamps): delete it and re-run the command, "
                     "which writes a new one",
    "kept.parquet": "re-run `curatune curate CONFIG --force` to rewrite the curated data",
    "removed.parquet": "re-run `curatune curate CONFIG --force` to rewrite the curated data",
    "report.json": "re-run `curatune curate CONFIG --force` to rewrite the curated data",
    "heldout.parquet": "the sweep's held-out split is damaged: restore it from a copy, or start the sweep in a "
                       "new run_dir (its cells were trained without these records)",
    "pool.parquet": "restore it from a copy, or start the sweep in a new run_dir",
    "subsets.parquet": "restore it from a copy, or start the sweep in a new run_dir",
    "plan.json": "restore it from a copy, or start the sweep in a new run_dir",
}


class DamagedRunError(CuratuneError):
    """A run-directory file exists but cannot be read."""


def repair_hint(path: Path) -> str:
    return REPAIR.get(Path(path).name, "re-run the stage that writes it")


def read_run_json(path: str | Path, repair: str | None = None) -> Any:
    """A JSON file of the run directory; damaged -> DamagedRunError (missing -> FileNotFoundError)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise DamagedRunError(
            f"{path} is damaged (not valid JSON: {_first_line(exc)}); {repair or repair_hint(path)}"
        ) from None


def read_run_parquet(path: str | Path, repair: str | None = None) -> pd.DataFrame:
    """A Parquet file of the run directory; damaged or truncated -> DamagedRunError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedRunError(
            f"{path} is damaged or truncated ({_first_line(exc)}); {repair or repair_hint(path)}"
        ) from None


def damaged_done_marker(cell_dir: Path) -> str | None:
    """Why the cell's done.json does not count (exists but unreadable, or not an object), or None."""
    path = Path(cell_dir) / "done.json"
    if not path.exists():
        return None
    try:
        done = read_run_json(path)
    except DamagedRunError as exc:
        return str(exc).split(";")[0]
    if not isinstance(done, dict):
        return f"{path} is damaged (not a JSON object)"
    return None


def cell_repair_hint(cell_dir: Path) -> str:
    return f"delete the cell folder {cell_dir} and re-run `curatune sweep CONFIG` to retrain only this cell"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
