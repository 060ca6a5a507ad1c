"""What the analysis reads: eval/scores.parquet checked row by row, per-item sample values,
which suites are task or general suites with their headline metrics, and a fast score lookup."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from curatune.errors import ConfigError, DataError
from curatune.evaluate.analysis.config import AnalysisConfig
from curatune.evaluate.metrics import DEFINITIONAL_BASE, PRIMARY_PREFERENCE, MetricTable
from curatune.rundir import BASE, SAMPLE_TEXT_COLUMNS, SCORE_COLUMNS, RunDir


def load_scores(path: Path) -> pd.DataFrame:
    """Read and check eval/scores.parquet; a problem names the file, row and column."""
    if not path.exists():
        raise DataError(f"{path}: not found; run `curatune evaluate CONFIG` first")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (expected {SCORE_COLUMNS})")
    if frame.empty:
        raise DataError(f"{path}: no rows; the evaluation produced no scores")
    frame = frame[SCORE_COLUMNS].copy()
    for column in ("cell", "method", "stage", "suite", "metric"):
        frame[column] = frame[column].astype(str)
    for column in ("size", "seed", "value", "n_items"):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row}, column {column}: {frame[column].iloc[row]!r} is not a number")
        frame[column] = numeric
    frame["size"] = frame["size"].fillna(0).astype(int)
    frame["seed"] = frame["seed"].fillna(0).astype(int)
    bad_stage = ~frame["stage"].isin(["base", "early", "final"])
    if bad_stage.any():
        row = int(np.flatnonzero(bad_stage.to_numpy())[0])
        raise DataError(f"{path}: row {row}, column stage: {frame['stage'].iloc[row]!r} is not base, early or final")
    key = ["cell", "stage", "suite", "metric"]
    duplicated = frame.duplicated(key)
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        values = ", ".join(f"{k}={frame[k].iloc[row]}" for k in key)
        raise DataError(f"{path}: row {row} repeats the score for {values}")
    return frame


class SampleStore:
    """Per-example metric values from eval/samples, loaded lazily and cached per file."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self._frames: dict[tuple[str, str, str], pd.DataFrame | None] = {}
        self.files_read = 0

    def values(self, suite: str, cell: str, stage: str, metric: str) -> pd.Series | None:
        """Item values indexed by example_id, or None when the file or column is absent."""
        key = (suite, cell, stage)
        if key not in self._frames:
            self._frames[key] = self._load(suite, cell, stage)
        frame = self._frames[key]
        if frame is None or metric not in frame.columns:
            return None
        values = pd.to_numeric(frame[metric], errors="coerce")
        values.index = frame["example_id"].astype(str)
        values = values[~values.index.duplicated()].dropna()
        return values if len(values) else None

    def _load(self, suite: str, cell: str, stage: str) -> pd.DataFrame | None:
        path = self.run_dir.sample_file(suite, cell, stage)
        if not path.exists():
            return None
        try:
            # Skip the text columns: prompts and outputs can be most of the file.
            names = pq.read_schema(path).names
            frame = pd.read_parquet(path, columns=[c for c in names if c not in SAMPLE_TEXT_COLUMNS])
        except Exception as exc:
            warnings.warn(f"{path}: unreadable, item bootstrap skips it ({exc})", stacklevel=2)
            return None
        if "example_id" not in frame.columns:
            return None
        self.files_read += 1
        return frame


@dataclass
class SuiteRoles:
    """Which suites are task suites, each suite's headline metric, and metrics left out."""

    task: list[str]
    general: list[str]
    primary: dict[str, str]
    metrics: dict[str, list[str]]  # suite -> analysed metrics (known direction), sorted
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, scores: pd.DataFrame, config: AnalysisConfig, table: MetricTable) -> "SuiteRoles":
        suites = sorted(scores["suite"].unique())
        notes: list[str] = []
        metrics: dict[str, list[str]] = {}
        for suite in suites:
            present = sorted(scores.loc[scores["suite"] == suite, "metric"].unique())
            unknown = [m for m in present if not table.known(m)]
            if unknown:
                notes.append(
                    f"suite {suite}: metrics {unknown} have no known direction and are left out "
                    "(set evaluate.analysis.metric_directions)"
                )
            metrics[suite] = [m for m in present if table.known(m)]
        task = [s for s in config.task_suites if s in suites]
        if not task:
            raise ConfigError(
                f"evaluate.analysis.task_suites = {config.task_suites}: none of these suites is in "
                f"eval/scores.parquet (suites there: {suites})"
            )
        general = [s for s in suites if s not in task]
        primary: dict[str, str] = {}
        for suite in suites:
            chosen = config.primary_metrics.get(suite)
            if chosen is not None:
                if chosen not in metrics[suite]:
                    raise ConfigError(
                        f"evaluate.analysis.primary_metrics.{suite} = {chosen!r}: suite {suite} has "
                        f"metrics {metrics[suite]} with a known direction"
                    )
                primary[suite] = chosen
                continue
            ranked = [m for m in PRIMARY_PREFERENCE if m in metrics[suite]] + metrics[suite]
            if ranked:
                primary[suite] = ranked[0]
            else:
                notes.append(f"suite {suite}: no metric with a known direction; left out")
        task = [s for s in task if s in primary]
        general = [s for s in general if s in primary]
        if not task:
            raise ConfigError(f"task suites {config.task_suites} have no metric with a known direction")
        return cls(task, general, primary, metrics, notes)


class ScoreIndex:
    """Fast lookup of one score: (cell, stage, suite, metric) -> value."""

    def __init__(self, scores: pd.DataFrame):
        self.scores = scores
        self._values = {
            (r.cell, r.stage, r.suite, r.metric): float(r.value)
            for r in scores.itertuples(index=False)
            if pd.notna(r.value)
        }
        cells = scores[scores["stage"] != "base"][["cell", "method", "size", "seed"]].drop_duplicates("cell")
        self.cells = cells.sort_values(["method", "size", "seed"]).to_dict("records")

    def get(self, cell: str, stage: str, suite: str, metric: str) -> float | None:
        return self._values.get((cell, stage, suite, metric))

    def base(self, suite: str, metric: str) -> float | None:
        value = self._values.get((BASE, "base", suite, metric))
        if value is None:  # a base cell scored under another key, or a definitional value
            rows = self.scores[
                (self.scores["stage"] == "base") & (self.scores["suite"] == suite) & (self.scores["metric"] == metric)
            ]["value"].dropna()
            if len(rows):
                return float(rows.iloc[0])
            return DEFINITIONAL_BASE.get(metric)
        return value

    def base_cell(self) -> str:
        cells = self.scores.loc[self.scores["stage"] == "base", "cell"].unique()
        return str(cells[0]) if len(cells) else BASE
