"""Reading run directories for the app: plain functions, no page rendering.

The app only reads what stages wrote (the run-directory contract in
:mod:`curatune.rundir`); it never computes what a stage should have written. Every file
read is cached with ``st.cache_data`` keyed on the file's modification time and size, so
a rerun re-reads only files that changed (a sweep still running shows new cells as they
land) and 100+ cells stay cheap. Missing files give ``None``; unreadable files raise
:class:`RunFileError` naming the file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import streamlit as st

from curatune.app.diffview import conversation_text
from curatune.app.discovery import (  # noqa: F401
    RUNS_ENV,
    RunRef,
    expand_run_paths,
    looks_like_run,
    paths_from_env,
)
from curatune.app.discovery import discover_runs as _discover_runs
from curatune.curate.audit import normalize_ledger
from curatune.errors import CuratuneError
from curatune.evaluate.analysis.lr_selection import stands_for
from curatune.records import with_ledger_defaults
from curatune.rundir import (  # noqa: F401  (CELL_STATUSES is re-exported for the views)
    CELL_STATUSES,
    DONE,
    FAILED,
    LOG,
    CellId,
    RunDir,
    cell_key,
    cell_status,
    is_merged_method,
    not_planned_folders,
    parse_cell_key,
    plan_cell_keys,
    plan_lr,
)


class RunFileError(CuratuneError):
    """A file of the run directory exists but cannot be read."""


# ----------------------------------------------------------------------------- cached readers


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size), or None when absent: the cache key of a file's content."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (stat.st_mtime_ns, stat.st_size)


@st.cache_data(show_spinner=False, max_entries=512)
def _read_json_cached(path: str, stamp: tuple[int, int]) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"could not read {path}: {exc}") from exc


@st.cache_data(show_spinner=False, max_entries=512)
def _read_parquet_cached(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise RunFileError(f"could not read {path}: {type(exc).__name__}: {exc}") from exc


@st.cache_data(show_spinner=False, max_entries=64)
def _read_text_cached(path: str, stamp: tuple[int, int]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RunFileError(f"could not read {path}: {exc}") from exc


@st.cache_data(show_spinner=False, max_entries=16)
def _ledger_with_text(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    frame = _read_parquet_cached(path, stamp).reset_index(drop=True)
    _require_columns(frame, ("id", "messages", "reason", "step"), Path(path))
    for column in ("detail", "duplicate_of", "category", "source"):
        if column not in frame.columns:
            frame[column] = None
    frame = with_ledger_defaults(frame)  # action/turn/span/kept_as/eval_item; an older ledger reads as drops
    frame["text"] = frame["messages"].map(conversation_text) if "messages" in frame.columns else ""
    return frame


# The audit reads the ledger and the kept records on every click. st.cache_data hands out a
# copy (unpickling ~50 MB, 1-2 s, for 7,000 chat records), so these two are shared as is
# (st.cache_resource): callers must not modify them.
@st.cache_resource(show_spinner=False, max_entries=8)
def _audit_ledger(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise RunFileError(f"could not read {path}: {type(exc).__name__}: {exc}") from exc
    return normalize_ledger(frame, Path(path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _kept_shared(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise RunFileError(f"could not read {path}: {type(exc).__name__}: {exc}") from exc
    _require_columns(frame, ("id",), Path(path))
    return frame


@st.cache_data(show_spinner=False, max_entries=16)
def _kept_ids(path: str, stamp: tuple[int, int]) -> pd.Series:
    try:
        return pd.read_parquet(path, columns=["id"])["id"].astype(str)
    except Exception as exc:
        raise RunFileError(f"could not read the ids of {path}: {type(exc).__name__}: {exc}") from exc


def read_json(path: Path) -> Any | None:
    stamp = file_stamp(path)
    return None if stamp is None else _read_json_cached(str(path), stamp)


def discover_runs(paths: Iterable[Path]) -> list[RunRef]:
    """:func:`curatune.app.discovery.discover_runs` with cached manifest reads."""
    return _discover_runs(paths, read_manifest=read_json)


def read_parquet(path: Path) -> pd.DataFrame | None:
    stamp = file_stamp(path)
    return None if stamp is None else _read_parquet_cached(str(path), stamp)


def read_text(path: Path) -> str | None:
    stamp = file_stamp(path)
    return None if stamp is None else _read_text_cached(str(path), stamp)


# ----------------------------------------------------------------------------- cells


def _last_json_line(path: Path) -> dict | None:
    """The last complete line of a JSONL log (the writer may be mid-line)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _marker(path: Path, stamp: tuple[int, int]) -> dict:
    """A done.json/failed.json; one damaged marker must not hide the other cells."""
    try:
        info = _read_json_cached(str(path), stamp)
    except RunFileError as exc:
        return {"_unreadable": str(exc), "error": str(exc)}
    return info if isinstance(info, dict) else {}


@st.cache_data(show_spinner=False, max_entries=32)
def _cell_rows(cells: tuple[tuple[str, int, int, float | None, str], ...], stamps: tuple) -> list[dict]:
    rows = []
    for (method, size, seed, lr, path), (done, failed, log, _started) in zip(cells, stamps):
        folder = Path(path)
        status = cell_status(folder)
        row: dict[str, Any] = {
            "cell": cell_key(method, size, seed, lr), "method": method, "size": size, "seed": seed, "lr": lr,
            "status": "pending", "wall_seconds": None, "steps": None, "final_loss": None,
            "train_examples": None, "tokens_per_second": None, "trainable_parameters": None,
            "weights_bytes": None, "validation_loss": None, "error": "", "traceback": "",
            "last_activity": None, "path": path,
        }
        if status == "done":
            info = _marker(folder / DONE, done)
            row["status"] = "done"
            for key in ("wall_seconds", "steps", "final_loss", "train_examples", "tokens_per_second",
                        "trainable_parameters", "weights_bytes", "validation_loss"):
                row[key] = info.get(key)
            row["error"] = info.get("_unreadable", "")
        elif status == "failed":
            info = _marker(folder / FAILED, failed)
            row["status"] = "failed"
            row["error"] = str(info.get("error") or "failed (no error message recorded)")
            row["traceback"] = str(info.get("traceback") or "")
        elif status == "running":
            row["status"] = "running"
            last = _last_json_line(folder / LOG) if log else None
            if last and "step" in last:
                row["steps"] = last.get("step")
        newest = max((s[0] for s in (done, failed, log) if s), default=None)
        if newest:
            row["last_activity"] = datetime.fromtimestamp(newest / 1e9, tz=timezone.utc)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class MissingPart:
    what: str
    path: Path
    produced_by: str


class RunData:
    """Read-only, cached view of one run directory."""

    def __init__(self, root: str | os.PathLike, label: str | None = None):
        self.dir = RunDir(Path(root))
        self.label = label or self.dir.root.name

    @property
    def root(self) -> Path:
        return self.dir.root

    # -- raw files
    def manifest(self) -> dict | None:
        return _as_dict(read_json(self.dir.manifest), self.dir.manifest)

    def config_text(self) -> str | None:
        return read_text(self.dir.config)

    def curate_report(self) -> dict | None:
        return _as_dict(read_json(self.dir.curate_report), self.dir.curate_report)

    def kept(self) -> pd.DataFrame | None:
        return read_parquet(self.dir.kept)

    def removed(self) -> pd.DataFrame | None:
        return read_parquet(self.dir.removed)

    def removed_with_text(self) -> pd.DataFrame | None:
        """The removal ledger plus a ``text`` column (the conversation as plain text), cached."""
        stamp = file_stamp(self.dir.removed)
        return None if stamp is None else _ledger_with_text(str(self.dir.removed), stamp)

    def audit_ledger(self) -> pd.DataFrame | None:
        """The removal ledger with the audit's optional columns (action, turn, span, kept_as) filled in.

        Shared between reruns, not copied: do not modify it."""
        stamp = file_stamp(self.dir.removed)
        return None if stamp is None else _audit_ledger(str(self.dir.removed), stamp)

    def audit_kept(self) -> pd.DataFrame | None:
        """kept.parquet for the audit, shared between reruns, not copied: do not modify it."""
        stamp = file_stamp(self.dir.kept)
        return None if stamp is None else _kept_shared(str(self.dir.kept), stamp)

    def kept_ids(self) -> pd.Series | None:
        stamp = file_stamp(self.dir.kept)
        return None if stamp is None else _kept_ids(str(self.dir.kept), stamp)

    def plan(self) -> dict | None:
        return _as_dict(read_json(self.dir.plan), self.dir.plan)

    def heldout(self) -> pd.DataFrame | None:
        return read_parquet(self.dir.heldout)

    def subsets(self) -> pd.DataFrame | None:
        return read_parquet(self.dir.subsets)

    def scores(self) -> pd.DataFrame | None:
        frame = read_parquet(self.dir.scores)
        if frame is None:
            return None
        _require_columns(frame, ("cell", "method", "size", "seed", "stage", "suite", "metric", "value"), self.dir.scores)
        return frame

    def analysis(self) -> dict | None:
        return _as_dict(read_json(self.dir.analysis), self.dir.analysis)

    def saturation_curves(self) -> pd.DataFrame | None:
        frame = read_parquet(self.dir.saturation_curves)
        if frame is not None:
            _require_columns(frame, ("method", "suite", "metric", "size", "fit"), self.dir.saturation_curves)
        return frame

    # -- derived views (reshaping only)
    def name(self) -> str:
        manifest = self.manifest() or {}
        return str((manifest.get("config") or {}).get("name") or self.label)

    def cells(self) -> pd.DataFrame:
        """Every sweep cell with its status and timings: the plan's cells and merged cells on disk
        (every cell folder on disk while there is no plan yet). Folders the plan no longer lists
        (an earlier grid's rates or sizes) are left out: :meth:`not_planned` names them."""
        planned: dict[CellId, Path] = {}
        plan = self.plan() or {}
        for cell in plan.get("cells") or []:
            try:
                key = CellId(str(cell["method"]), int(cell["size"]), int(cell["seed"]), plan_lr(cell))
            except (KeyError, TypeError, ValueError) as exc:
                raise RunFileError(f"{self.dir.plan}: a cell lacks method/size/seed ({cell!r})") from exc
            path = Path(cell["path"]) if cell.get("path") else self.dir.cell(*key)
            planned[key] = path if path.is_absolute() else self.root / path
        outside = set(not_planned_folders(self.dir, [cell_key(*key) for key in planned]))
        for key, folder in self.dir.cell_folders():  # cells on disk but not (yet) in a plan
            if cell_key(*key) not in outside:  # not a folder the plan no longer lists
                planned.setdefault(key, folder)
        # sorted with a missing lr first (None does not compare with floats)
        ordered = sorted(planned.items(), key=lambda kv: (kv[0].method, kv[0].size, kv[0].seed, kv[0].lr or 0.0))
        cells = tuple((m, n, s, lr, str(p)) for (m, n, s, lr), p in ordered)
        # The cache key of each cell's row: the stamps of every file its status is read from.
        stamps = tuple(
            (file_stamp(Path(p) / DONE), file_stamp(Path(p) / FAILED), file_stamp(Path(p) / LOG), Path(p).is_dir())
            for *_, p in cells
        )
        frame = pd.DataFrame(_cell_rows(cells, stamps), columns=[
            "cell", "method", "size", "seed", "lr", "status", "wall_seconds", "steps", "final_loss",
            "train_examples", "tokens_per_second", "trainable_parameters", "weights_bytes", "validation_loss",
            "error", "traceback", "last_activity", "path"])
        for column in ("lr", "wall_seconds", "steps", "final_loss", "train_examples", "tokens_per_second",
                       "trainable_parameters", "weights_bytes", "validation_loss"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        return frame

    def not_planned(self) -> list[str]:
        """Keys of cell folders on disk that the plan no longer lists (none without a plan)."""
        try:
            planned = plan_cell_keys(self.plan() or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFileError(f"{self.dir.plan}: a cell lacks method/size/seed ({exc})") from exc
        return not_planned_folders(self.dir, planned)

    def sample_files(self) -> pd.DataFrame:
        """Index of eval/samples/<suite>/<cell>__<stage>.parquet files."""
        rows = []
        for suite, cell, stage, file in self.dir.sample_files():
            parsed = parse_cell_key(cell)
            method, size, seed = parsed[:3] if parsed else (cell, 0, 0)  # the base model: ("base", 0, 0)
            rows.append({"suite": suite, "cell": cell, "stage": stage, "method": method,
                         "size": size, "seed": seed, "path": str(file)})
        return pd.DataFrame(rows, columns=["suite", "cell", "stage", "method", "size", "seed", "path"])

    def samples(self, path: str | Path) -> pd.DataFrame | None:
        return read_parquet(Path(path))

    def missing(self) -> list[MissingPart]:
        parts = [
            ("run manifest", self.dir.manifest, "any stage (`curatune run` or `curatune curate`)"),
            ("curation report", self.dir.curate_report, "the curate stage"),
            ("sweep plan", self.dir.plan, "the sweep stage"),
            ("evaluation scores", self.dir.scores, "the evaluate stage"),
            ("analysis", self.dir.analysis, "the analysis step of the evaluate stage"),
        ]
        return [MissingPart(w, p, by) for w, p, by in parts if not p.exists()]

    def is_foreign(self) -> bool:
        return not looks_like_run(self.root)


def _as_dict(obj: Any, path: Path) -> dict | None:
    if obj is None or isinstance(obj, dict):
        return obj
    raise RunFileError(f"{path}: expected a JSON object, found {type(obj).__name__}")


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RunFileError(f"{path}: missing column(s) {', '.join(missing)}")


# ----------------------------------------------------------------------------- analysis.json views


def learning_forgetting_frame(analysis: dict | None) -> pd.DataFrame:
    """analysis.json learning_forgetting rows (one per cell and stage) as a flat table.

    Nested dicts become dotted columns: ``learning.<suite>.<metric>`` (gain in the metric's
    units), ``forgetting.<suite>`` (drop on the suite's primary metric),
    ``forgetting_metric.<suite>`` (which metric), ...; ``task_gain`` and ``general_drop``
    are the analysis' averages in points.
    """
    rows = (analysis or {}).get("learning_forgetting") or []
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return pd.DataFrame()
    frame = pd.json_normalize(rows, sep=".")
    if "cell" in frame.columns:
        parsed = frame["cell"].map(lambda c: parse_cell_key(str(c)))
        for i, name in enumerate(("method", "size", "seed")):
            values = parsed.map(lambda p, i=i: p[i] if p else None)
            frame[name] = frame[name].fillna(values) if name in frame.columns else values
    elif {"method", "size", "seed"} <= set(frame.columns):
        frame["cell"] = [cell_key(m, n, s) for m, n, s in zip(frame["method"], frame["size"], frame["seed"])]
    else:
        return pd.DataFrame()
    frame["method"] = frame["method"].astype(str)
    for column in ("task_gain", "general_drop", "size", *prefixed_columns(frame, "learning"),
                   *prefixed_columns(frame, "forgetting")):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def prefixed_columns(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Columns ``<prefix>.<...>`` of a flattened table (per-suite or per-metric values)."""
    return [c for c in frame.columns if c.startswith(prefix + ".")]


def compared_cells(analysis: dict | None, cells: pd.Series) -> pd.Series:
    """Which of ``cells`` the pages that compare methods or sizes show, as the analysis does: in a
    learning-rate grid run (analysis.json lr_selection) the selected rate's cells and cells without
    a rate; grid cells of other rates, listed or from an earlier grid, are left out."""
    selection = (analysis or {}).get("lr_selection") or {}
    if not selection.get("active"):
        return pd.Series(True, index=cells.index)
    selected = set(selection.get("selected_cells") or [])
    return cells.map(lambda cell: stands_for(str(cell), selected)).astype(bool)


def pareto_points(analysis: dict | None) -> pd.DataFrame:
    """analysis.json ``pareto``: (method, size) points averaged over seeds, the frontier marked.

    Columns: method, size, task_gain, general_drop, on_frontier, n_seeds. Older or partial
    files that list only cell keys give those keys in ``cell`` (coordinates left empty).
    """
    rows = []
    for item in (analysis or {}).get("pareto") or []:
        if isinstance(item, str):
            rows.append({"cell": item, "on_frontier": True})
        elif isinstance(item, dict):
            flat = {k: v for k, v in item.items() if not isinstance(v, (dict, list))}
            flat.update({f"forgetting.{suite}": v for suite, v in (item.get("forgetting") or {}).items()})
            rows.append({"on_frontier": True, **flat})
    frame = pd.DataFrame(rows)
    for column in ("cell", "method", "size", "task_gain", "general_drop", "on_frontier", "n_seeds"):
        if column not in frame.columns:
            frame[column] = None
    for column in ("task_gain", "general_drop", "size", *prefixed_columns(frame, "forgetting")):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["on_frontier"] = frame["on_frontier"].fillna(False).astype(bool)
    return frame


def frontier_x_column(points: pd.DataFrame) -> str:
    """The column the Pareto frontier measured forgetting with: ``general_drop``, or
    ``forgetting.<suite>`` when the analysis fell back to one suite (the retention probe alone)."""
    axes = points["frontier_axis"].dropna().unique() if "frontier_axis" in points.columns else []
    axis = str(axes[0]) if len(axes) else "general_drop"
    return "general_drop" if axis == "general_drop" else f"forgetting.{axis}"


SATURATION_COLUMNS = [
    "method", "suite", "metric", "direction", "model", "formula", "params", "r2", "epsilon",
    "saturation_point", "saturation_point_lo", "saturation_point_hi", "saturation_extrapolated",
    "worse_than_base_sizes", "worse_than_base_confident", "base_value", "status", "note",
    "saturation_verdict", "saturation_text", "epsilon_text",
]


def saturation_frame(analysis: dict | None) -> pd.DataFrame:
    """analysis.json ``saturation``: one fitted curve per (method, suite, metric)."""
    rows = [r for r in (analysis or {}).get("saturation") or [] if isinstance(r, dict)]
    frame = pd.DataFrame(rows)
    for column in SATURATION_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame


def analysis_suites(analysis: dict | None) -> dict:
    """analysis.json ``suites``: task and general suites, primary metric of each, directions."""
    suites = (analysis or {}).get("suites")
    return suites if isinstance(suites, dict) else {}


def analysis_warnings(analysis: dict | None) -> list[str]:
    notes = (analysis or {}).get("warnings") or []
    return [str(n) for n in notes] if isinstance(notes, list) else [str(notes)]


def early_vs_final_frame(analysis: dict | None) -> pd.DataFrame:
    """analysis.json ``early_vs_final.metrics``: rank agreement of early and final checkpoints."""
    block = (analysis or {}).get("early_vs_final") or {}
    rows = block.get("metrics") if isinstance(block, dict) else None
    rows = [r for r in rows or [] if isinstance(r, dict)]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- samples


def samples_table(parts: dict[str, pd.DataFrame], metric_columns: list[str]) -> pd.DataFrame:
    """Join per-model sample files on example_id into one wide table.

    ``parts`` maps a model label ("base", "n50", ...) to its samples frame; the result has
    example_id, prompt, reference, then ``output[<label>]`` and ``<metric>[<label>]`` columns.
    """
    texts, wide = [], None
    for label, frame in parts.items():
        if frame is None or "example_id" not in frame.columns:
            continue
        rename = {"output": f"output[{label}]"} if "output" in frame.columns else {}
        rename.update({m: f"{m}[{label}]" for m in metric_columns if m in frame.columns})
        part = frame[["example_id", *rename]].drop_duplicates("example_id").rename(columns=rename)
        wide = part if wide is None else wide.merge(part, on="example_id", how="outer")
        texts.append(frame[["example_id"] + [c for c in ("prompt", "reference") if c in frame.columns]])
    if wide is None:
        return pd.DataFrame(columns=["example_id", "prompt", "reference"])
    text = pd.concat(texts, ignore_index=True).groupby("example_id", sort=False).first().reset_index()
    wide = text.merge(wide, on="example_id", how="right")
    for column in ("prompt", "reference"):
        if column not in wide.columns:
            wide[column] = ""
        wide[column] = wide[column].fillna("").astype(str)
    return wide.reset_index(drop=True)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Per-example metric columns of a samples file: every float column."""
    skip = {"example_id", "prompt", "reference", "output"}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
