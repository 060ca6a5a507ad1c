"""Precision and recall of curation against a labels file of planted flaws.

Labels rows: ``{"id", "flaw", "of", "row"}`` (as written by curatune.data.demo): record
``id`` carries ``flaw``; for duplicates ``of`` is the original it copies.

Duplicates are judged as pairs: which copy a keep policy removes is a choice, not an
error, so a planted duplicate counts as found when either it or its original was
removed as a duplicate of the other (or of another member of the same planted group).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from curatune.errors import DataError
from curatune.jsonl import iter_jsonl

#: Which ledger reasons detect which planted flaw.
FLAW_REASONS: dict[str, set[str]] = {
    "exact_dup": {"exact_duplicate"},
    "near_dup": {"near_duplicate"},
    "semantic_dup": {"semantic_duplicate"},
    # Empty responses are usually rejected by the loader already (reason empty_content).
    "empty": {"empty_response", "empty_turn", "too_short", "empty_content"},
    "too_short": {"too_short", "empty_response", "empty_turn", "empty_content"},
    "too_long": {"too_long"},
    "truncated": {"truncated"},
    "boilerplate": {"boilerplate", "refusal"},
    "refusal": {"refusal", "boilerplate"},
    "echo": {"echo_prompt"},
    "echo_prompt": {"echo_prompt"},
    "repetition": {"repetition"},
    "repetitive": {"repetition"},
    "symbols": {"symbol_ratio"},
    "url_spam": {"url_ratio"},
    "wrong_language": {"wrong_language"},
    "contaminated": {"contaminated"},
}
DUP_FLAWS = {"exact_dup", "near_dup", "semantic_dup"}
DUP_REASONS = {"exact_duplicate", "near_duplicate", "semantic_duplicate"}


def read_labels(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: labels file not found")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, row in iter_jsonl(handle, str(path)):
            if not isinstance(row, dict) or "id" not in row or "flaw" not in row:
                raise DataError(f"{path}: line {line_no}: a label needs the fields 'id' and 'flaw'")
            rows.append(row)
    return rows


class _Groups:
    """Union-find over planted duplicate pairs: who is a duplicate of whom."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def same(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None or a not in self.parent or b not in self.parent:
            return False
        return self.find(a) == self.find(b)


def _row_of(source: str) -> tuple[str, int] | None:
    path, _, row = str(source).rpartition(":")
    return (path, int(row)) if path and row.isdigit() else None


class _Keys:
    """Identify records by their source position (file:row), falling back to the id.

    Ids are content hashes, so verbatim copies share one; positions never collide.
    """

    def __init__(self, inputs: list[tuple[str, str]]):
        self.by_id: dict[str, list[str]] = defaultdict(list)
        self.by_row: dict[int, list[str]] = defaultdict(list)
        for key, record_id in inputs:
            self.by_id[record_id].append(key)
            parsed = _row_of(key)
            if parsed:
                self.by_row[parsed[1]].append(key)

    def of_label(self, record_id: str | None, row: Any) -> str | None:
        if isinstance(row, int) and len(self.by_row.get(row, [])) == 1:
            return self.by_row[row][0]
        keys = self.by_id.get(record_id or "", [])
        return keys[0] if len(keys) == 1 else None


def detection_report(labels: list[dict[str, Any]], inputs: list[tuple[str, str]], removed: pd.DataFrame) -> dict[str, Any]:
    """{flaw: {labeled, found, recall, predicted, precision}} plus an overall line.

    ``inputs``: (source position, id) of every input record, load rejections included.
    """
    keys = _Keys(inputs)
    reason_of: dict[str, str] = {}
    partners_of: dict[str, list[str]] = {}
    for row in removed.itertuples(index=False):
        key = row.source if row.source in keys.by_row.get((_row_of(row.source) or ("", -1))[1], []) else row.id
        reason_of[key] = row.reason
        partner = row.duplicate_of if isinstance(row.duplicate_of, str) else None
        partners_of[key] = keys.by_id.get(partner, []) if partner else []

    groups = _Groups()
    by_flaw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    labeled_flaws: dict[str, set[str]] = defaultdict(set)
    missing = 0
    for label in labels:
        key = keys.of_label(label["id"], label.get("row"))
        if key is None:
            missing += 1
            continue
        label = {**label, "key": key, "of_key": keys.of_label(label.get("of"), label.get("of_row")) if label.get("of") else None}
        by_flaw[label["flaw"]].append(label)
        labeled_flaws[key].add(label["flaw"])
        if label["flaw"] in DUP_FLAWS and label["of_key"]:
            groups.union(key, label["of_key"])

    def same_group(key: str) -> bool:
        return any(groups.same(key, p) for p in partners_of.get(key, []))

    def dup_found(label: dict[str, Any], reasons: set[str]) -> bool:
        x, original = label["key"], label["of_key"]
        if reason_of.get(x) in reasons:
            return True
        # The original was removed in favour of this copy (or of another copy of it).
        return bool(original) and reason_of.get(original) in reasons and same_group(original)

    def correct(key: str, reason: str) -> bool:
        if reason in DUP_REASONS:
            return same_group(key) or bool(labeled_flaws.get(key, set()) & DUP_FLAWS)
        return any(reason in FLAW_REASONS.get(f, {f}) for f in labeled_flaws.get(key, ()))

    flaws: dict[str, Any] = {}
    for flaw, rows in sorted(by_flaw.items()):
        reasons = FLAW_REASONS.get(flaw, {flaw})
        if flaw in DUP_FLAWS:
            found = sum(dup_found(r, reasons) for r in rows)
        else:
            found = sum(reason_of.get(r["key"]) in reasons for r in rows)
        predicted = [k for k, reason in reason_of.items() if reason in reasons]
        right = sum(correct(k, reason_of[k]) for k in predicted)
        flaws[flaw] = {
            "labeled": len(rows),
            "found": int(found),
            "recall": round(found / len(rows), 4) if rows else None,
            "removed_by_any_step": int(sum(r["key"] in reason_of for r in rows)),
            "removed_as": sorted(reasons),
            "predicted": len(predicted),
            "precision": round(right / len(predicted), 4) if predicted else None,
        }
    dup_labels = {lab["key"]: lab for rows in by_flaw.values() for lab in rows if lab["flaw"] in DUP_FLAWS}

    def found_any(key: str) -> bool:
        return key in reason_of or (key in dup_labels and dup_found(dup_labels[key], DUP_REASONS))

    flawed = set(labeled_flaws)
    right_any = sum(1 for k, reason in reason_of.items() if k in flawed or correct(k, reason))
    overall = {
        "labeled": len(flawed),
        "removed": len(reason_of),
        "precision": round(right_any / len(reason_of), 4) if reason_of else None,
        "recall": round(sum(found_any(k) for k in flawed) / len(flawed), 4) if flawed else None,
    }
    return {"flaws": flaws, "overall": overall, "labels_not_matched": missing}
