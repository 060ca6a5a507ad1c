"""The curation invariants of a report.json, stated for records and for turns.

records: in = kept + dropped. A trimmed record is counted among the kept (its clean prefix is
kept); the turns it lost are ledger rows with action "trim", so the ledger holds more rows than
records dropped and ``in == kept + len(removed.parquet)`` does not hold once anything is trimmed.
turns (messages): in = kept + removed, the removed turns of drops and trims together.

The curate stage checks both in code (:mod:`curatune.curate.pipeline`); readers of a finished
run (``curatune report``, the app) show them from the report and say when they do not hold.
"""
from __future__ import annotations

from typing import Any


def curate_accounting(report: dict[str, Any]) -> dict[str, Any]:
    """``{"records": {in, kept, dropped, trimmed, kept_trimmed, holds}, "turns": {in, kept, removed, holds}}``;
    ``turns`` only when the report counts turns; ``holds`` is None when a count is missing."""
    dropped = sum(int(v) for v in (report.get("removed_by_reason") or {}).values())
    records: dict[str, Any] = {
        "in": report.get("input_records"), "kept": report.get("kept"), "dropped": dropped,
        "trimmed": int(report.get("trimmed_records") or 0),  # trims performed (a record may be trimmed twice)
        "kept_trimmed": int(report.get("kept_trimmed") or 0),  # kept records that are a trimmed conversation
    }
    records["holds"] = None if None in (records["in"], records["kept"]) else records["in"] == records["kept"] + dropped
    out: dict[str, Any] = {"records": records}
    if report.get("turns_in") is not None:
        turns: dict[str, Any] = {"in": report.get("turns_in"), "kept": report.get("turns_kept"),
                                 "removed": report.get("turns_removed")}
        turns["holds"] = None if None in turns.values() else turns["in"] == turns["kept"] + turns["removed"]
        out["turns"] = turns
    return out
