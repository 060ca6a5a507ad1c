"""The curation pipeline runner: steps in order, with all the bookkeeping done once here.

The runner does the bookkeeping once for every step: it times the step, checks that the
step neither lost nor invented records or turns, appends its removals and trims to the
ledger, and finally checks the stage invariants ``input_records == kept +
sum(removed_by_reason)`` (load rejections count as removals with step "load"; trims keep
their record) and ``turns_in == turns_kept + turns_removed``.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from curatune.curate.balance import Balance
from curatune.curate.base import (
    DROP,
    TRIM,
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
from curatune.curate.turns import RepairEmptyTurns, count_turns
from curatune.records import (
    LEDGER_COLUMNS,
    RECORD_COLUMNS,
    Record,
    with_ledger_defaults,
)

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
        row.update(
            step=step, reason=r.reason, detail=r.detail, duplicate_of=r.duplicate_of, cluster_id=r.cluster_id,
            action=r.action, turn=int(r.turn), span=r.span or "",
            kept_as=r.replacement.id if r.replacement is not None else None, eval_item=r.eval_item,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS + LEDGER_COLUMNS)


def _turns(records: list[Record]) -> int:
    return sum(len(r.messages) for r in records)


@dataclass
class _Tally:
    """Records and turns removed, per reason, over the whole run (drops and trims apart)."""

    dropped: Counter = field(default_factory=Counter)
    trimmed: Counter = field(default_factory=Counter)
    turns_removed: Counter = field(default_factory=Counter)

    def add(self, reason: str, action: str, turns: int) -> None:
        (self.dropped if action == DROP else self.trimmed)[reason] += 1
        self.turns_removed[reason] += turns

    def by_reason(self) -> dict[str, dict[str, int]]:
        reasons = sorted(set(self.dropped) | set(self.trimmed), key=lambda r: (-self.turns_removed[r], r))
        return {r: {"dropped": self.dropped[r], "trimmed": self.trimmed[r], "turns_removed": self.turns_removed[r]}
                for r in reasons}


@dataclass
class CurationResult:
    kept: list[Record]
    removed: pd.DataFrame  # RECORD_COLUMNS + LEDGER_COLUMNS, load rejections first
    report: dict[str, Any] = field(default_factory=dict)


class CurationPipeline:
    """Runs configured steps in order over records, keeping one ledger for all of them.

    Before the configured steps, empty turns are repaired (step ``repair``): a record the
    loader accepted with an empty user or assistant turn loses that exchange, not its
    whole conversation. Records and turns are both accounted for:
    ``input_records == kept + dropped`` and ``turns_in == turns_kept + turns_removed``.
    """

    def __init__(self, step_configs: list, context: CurateContext | None = None):
        self.step_configs = list(step_configs)
        self.context = context or CurateContext()

    def run(self, records: list[Record], load_rejected: pd.DataFrame | None = None) -> CurationResult:
        started = time.perf_counter()
        empty = pd.DataFrame(columns=RECORD_COLUMNS + LEDGER_COLUMNS)
        load_rejected = with_ledger_defaults(load_rejected if load_rejected is not None else empty)
        input_records = len(records) + len(load_rejected)
        tally = _Tally()
        load_turns = [count_turns(m) for m in load_rejected.get("messages", pd.Series(dtype=object))]
        turns_in = _turns(records) + sum(load_turns)
        for reason, action, turns in zip(load_rejected.get("reason", []), load_rejected.get("action", []), load_turns):
            tally.add(str(reason), str(action), turns)
        categories_before = category_counts(records)
        for category in load_rejected.get("category", pd.Series(dtype=object)):
            key = category if isinstance(category, str) else "(none)"
            categories_before[key] = categories_before.get(key, 0) + 1

        ledgers = [load_rejected] if len(load_rejected) else []
        steps_report: list[dict[str, Any]] = []
        if len(load_rejected):
            steps_report.append(
                {"name": "load", "input": input_records, "kept": len(records), "removed": len(load_rejected),
                 "trimmed": 0, "seconds": None, "removed_by_reason": _reason_counts(load_rejected)}
            )
        current = list(records)
        for step in [RepairEmptyTurns()] + [c for c in self.step_configs]:
            if not isinstance(step, Step):
                config = step
                if not config.enabled:
                    steps_report.append({"name": config.name, "enabled": False, "input": len(current),
                                         "kept": len(current), "removed": 0, "trimmed": 0, "seconds": 0.0,
                                         "removed_by_reason": {}})
                    continue
                step = build_step(config)
            t0 = time.perf_counter()
            result = step.run(current, self.context)
            seconds = time.perf_counter() - t0
            self._check_step(step.name, current, result)
            if step.name == RepairEmptyTurns.name and not result.removed:
                current = result.kept
                continue  # nothing to repair: no row in the report
            for r in result.removed:
                tally.add(r.reason, r.action, r.turns_removed)
            frame = ledger_frame(result.removed, step.name)
            if len(frame):
                ledgers.append(frame)
            drops = [r for r in result.removed if r.action == DROP]
            trims = [r for r in result.removed if r.action == TRIM]
            steps_report.append(
                {
                    "name": step.name, "enabled": True, "input": len(current), "kept": len(result.kept),
                    "removed": len(drops), "trimmed": len(trims),
                    "turns_in": _turns(current), "turns_removed": sum(r.turns_removed for r in result.removed),
                    "seconds": round(seconds, 3),
                    "records_per_second": round(len(current) / seconds, 1) if seconds > 0 else None,
                    "removed_by_reason": dict(Counter(r.reason for r in drops).most_common()),
                    "trimmed_by_reason": dict(Counter(r.reason for r in trims).most_common()),
                    **({"counters": result.counters} if result.counters else {}),
                }
            )
            current = result.kept

        removed = pd.concat(ledgers, ignore_index=True) if ledgers else empty
        removed_by_reason = _reason_counts(removed)
        dropped = removed[removed["action"] == DROP] if len(removed) else removed
        trimmed = removed[removed["action"] == TRIM] if len(removed) else removed
        turns_kept = _turns(current)
        turns_removed = sum(tally.turns_removed.values())
        kept_ids = {r.id for r in current}
        report = {
            "input_records": input_records,
            "kept": len(current),
            "removed": len(dropped),
            "removed_by_reason": removed_by_reason,
            "removed_by_step": dict(Counter(dropped["step"]).most_common()) if len(dropped) else {},
            "trimmed_records": len(trimmed),
            "kept_trimmed": int(sum(1 for k in trimmed.get("kept_as", []) if k in kept_ids)),
            "trimmed_by_reason": _reason_counts(removed, TRIM),
            "by_reason": tally.by_reason(),
            "turns_in": turns_in,
            "turns_kept": turns_kept,
            "turns_removed": turns_removed,
            "steps": steps_report,
            "categories_before": categories_before,
            "categories_after": category_counts(current),
            "seconds": round(time.perf_counter() - started, 3),
        }
        # The stage invariants, checked in code: nothing lost, nothing counted twice.
        if input_records != len(current) + sum(removed_by_reason.values()):
            raise RuntimeError(
                f"curate: accounting mismatch: {input_records} input records != {len(current)} kept + "
                f"{sum(removed_by_reason.values())} removed"
            )
        if turns_in != turns_kept + turns_removed:
            raise RuntimeError(
                f"curate: turn accounting mismatch: {turns_in} turns in != {turns_kept} kept + {turns_removed} removed"
            )
        return CurationResult(current, removed, report)

    @staticmethod
    def _check_step(name: str, before: list[Record], result: StepResult) -> None:
        """Every record in comes out once: kept, dropped, or trimmed (its shortened copy kept)."""
        replacements = Counter(id(r.replacement) for r in result.removed if r.replacement is not None)
        kept = Counter(id(r) for r in result.kept)
        problem = None
        if any(kept[key] != count for key, count in replacements.items()):
            problem = "a trimmed record is not among the kept records exactly once"
        elif Counter(id(r) for r in before) != (kept - replacements) + Counter(id(r.record) for r in result.removed):
            problem = "a record was lost, duplicated or invented"
        else:
            turns_in = _turns(before)
            turns_out = _turns(result.kept) + sum(r.turns_removed for r in result.removed)
            if turns_in != turns_out:
                problem = f"{turns_in} turns in but {turns_out} kept + removed"
        if problem:
            raise RuntimeError(
                f"curate step {name!r} broke accounting: {len(before)} records in, {len(result.kept)} kept + "
                f"{len(result.removed)} removed or trimmed ({problem})"
            )


def _reason_counts(frame: pd.DataFrame, action: str = DROP) -> dict[str, int]:
    """Ledger rows per reason for one action (``removed_by_reason`` counts drops: records gone)."""
    if not len(frame):
        return {}
    rows = frame[frame["action"] == action] if "action" in frame.columns else frame
    return {str(k): int(v) for k, v in rows["reason"].value_counts().items()}

