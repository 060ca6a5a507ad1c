"""The curation pipeline runner: steps in order, with all the bookkeeping done once here.

The runner does the bookkeeping once for every step: it times the step, checks that the
step neither lost nor invented records, appends its removals to the ledger, and finally
checks the stage invariant ``input_records == kept + sum(removed_by_reason)`` (load
rejections count as removals with step "load").
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from curatune.curate.balance import Balance
from curatune.curate.base import (
    CurateContext,
    Removal,
    Step,
    StepResult,
    category_counts,
)
from curatune.curate.config import STEP_NAMES, StepConfig
from curatune.curate.decontaminate import Decontaminate
from curatune.curate.dedup import ExactDedup, NearDupDedup, SemanticDedup
from curatune.curate.language import LanguageFilter
from curatune.curate.model_score import ModelScore
from curatune.curate.quality import QualityFilter
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record

STEP_CLASSES: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (ExactDedup, NearDupDedup, SemanticDedup, QualityFilter, LanguageFilter, ModelScore, Decontaminate, Balance)
}
# Every configurable step has its class: a new step is added to both lists or fails here.
assert set(STEP_CLASSES) == set(STEP_NAMES), sorted(set(STEP_CLASSES) ^ set(STEP_NAMES))


def build_step(config: StepConfig) -> Step:
    return STEP_CLASSES[config.name](config)


def ledger_frame(removals: list[Removal], step: str) -> pd.DataFrame:
    rows = []
    for r in removals:
        row = r.record.to_row()
        row.update(step=step, reason=r.reason, detail=r.detail, duplicate_of=r.duplicate_of, cluster_id=r.cluster_id)
        rows.append(row)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS + LEDGER_COLUMNS)


@dataclass
class CurationResult:
    kept: list[Record]
    removed: pd.DataFrame  # RECORD_COLUMNS + LEDGER_COLUMNS, load rejections first
    report: dict[str, Any] = field(default_factory=dict)


class CurationPipeline:
    """Runs configured steps in order over records, keeping one ledger for all of them."""

    def __init__(self, step_configs: list, context: CurateContext | None = None):
        self.step_configs = list(step_configs)
        self.context = context or CurateContext()

    def run(self, records: list[Record], load_rejected: pd.DataFrame | None = None) -> CurationResult:
        started = time.perf_counter()
        load_rejected = load_rejected if load_rejected is not None else pd.DataFrame(columns=RECORD_COLUMNS + LEDGER_COLUMNS)
        input_records = len(records) + len(load_rejected)
        categories_before = category_counts(records)
        for category in load_rejected.get("category", pd.Series(dtype=object)):
            key = category if isinstance(category, str) else "(none)"
            categories_before[key] = categories_before.get(key, 0) + 1

        ledgers = [load_rejected] if len(load_rejected) else []
        steps_report: list[dict[str, Any]] = []
        if len(load_rejected):
            steps_report.append(
                {"name": "load", "input": input_records, "kept": len(records), "removed": len(load_rejected),
                 "seconds": None, "removed_by_reason": _reason_counts(load_rejected)}
            )
        current = list(records)
        for config in self.step_configs:
            if not config.enabled:
                steps_report.append({"name": config.name, "enabled": False, "input": len(current), "kept": len(current),
                                     "removed": 0, "seconds": 0.0, "removed_by_reason": {}})
                continue
            step = build_step(config)
            t0 = time.perf_counter()
            result = step.run(current, self.context)
            seconds = time.perf_counter() - t0
            self._check_step(step.name, current, result)
            frame = ledger_frame(result.removed, step.name)
            if len(frame):
                ledgers.append(frame)
            steps_report.append(
                {
                    "name": step.name, "enabled": True, "input": len(current), "kept": len(result.kept),
                    "removed": len(result.removed), "seconds": round(seconds, 3),
                    "records_per_second": round(len(current) / seconds, 1) if seconds > 0 else None,
                    "removed_by_reason": dict(Counter(r.reason for r in result.removed).most_common()),
                    **({"counters": result.counters} if result.counters else {}),
                }
            )
            current = result.kept

        removed = pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame(columns=RECORD_COLUMNS + LEDGER_COLUMNS)
        removed_by_reason = _reason_counts(removed)
        report = {
            "input_records": input_records,
            "kept": len(current),
            "removed": len(removed),
            "removed_by_reason": removed_by_reason,
            "removed_by_step": dict(Counter(removed["step"]).most_common()) if len(removed) else {},
            "steps": steps_report,
            "categories_before": categories_before,
            "categories_after": category_counts(current),
            "seconds": round(time.perf_counter() - started, 3),
        }
        # The stage invariant, checked in code: nothing lost, nothing counted twice.
        if input_records != len(current) + sum(removed_by_reason.values()):
            raise RuntimeError(
                f"curate: accounting mismatch: {input_records} input records != {len(current)} kept + "
                f"{sum(removed_by_reason.values())} removed"
            )
        return CurationResult(current, removed, report)

    @staticmethod
    def _check_step(name: str, before: list[Record], result: StepResult) -> None:
        ids_before = Counter(id(r) for r in before)
        ids_after = Counter(id(r) for r in result.kept) + Counter(id(r.record) for r in result.removed)
        if ids_before != ids_after:
            raise RuntimeError(
                f"curate step {name!r} broke accounting: {len(before)} records in, {len(result.kept)} kept + "
                f"{len(result.removed)} removed (a record was lost, duplicated or invented)"
            )


def _reason_counts(frame: pd.DataFrame) -> dict[str, int]:
    if not len(frame):
        return {}
    return {str(k): int(v) for k, v in frame["reason"].value_counts().items()}

