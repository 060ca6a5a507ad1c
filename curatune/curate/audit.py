"""Audit: measure how often each curation rule is right, on the user's own data.

A person reads a seeded random sample of the records each rule removed or trimmed (and a
sample of kept records) and marks each one right or wrong. From those labels every rule
gets a precision (share of its removals that were right) with a Wilson 95% interval, and a
projection of how many good records it lost. For the kept sample the same numbers say how
clean the kept data is.

Labels are keyed by content: the record id (a hash of the conversation, see
:func:`curatune.records.content_id`) plus the reason. A re-run of curation that removes the
same record for the same reason finds its label again; a label whose record is no longer
removed for that reason is "stale" and counts nowhere.

The labels file (``RUN_DIR/audit/labels.jsonl``, also the format of hand labels kept in
``bench/labels/``) holds one JSON object per line::

    {"id": "3f2a...", "reason": "repetition", "verdict": "wrong", "note": "list answer", "labelled_at": "..."}

Ledger columns added by turn-level curation (``action``, ``turn``, ``span``, ``kept_as``)
are optional here: an older ledger reads as whole-record drops with nothing highlighted.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow.parquet as pq

from curatune.errors import CuratuneError, DataError
from curatune.records import with_ledger_defaults
from curatune.rundir import RunDir, atomic_write_text

#: The pseudo-reason of the kept sample: "right" = rightly kept (clean), "wrong" = should have gone.
KEPT = "kept"
VERDICTS = ("right", "wrong")
LABEL_FIELDS = ("id", "reason", "verdict", "note", "labelled_at")
CONFIDENCE = 0.95


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Label:
    id: str
    reason: str
    verdict: str  # "right" | "wrong"
    note: str = ""
    labelled_at: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.reason)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_label(obj: Any, where: str) -> Label:
    """A label from one parsed JSON line; ``where`` ("FILE, line N") goes into the error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    for name in ("id", "reason", "verdict"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise DataError(f"{where}: field '{name}' is missing or not a non-empty string")
    if obj["verdict"] not in VERDICTS:
        raise DataError(f"{where}: field 'verdict' is {obj['verdict']!r}; expected 'right' or 'wrong'")
    note = obj.get("note")
    return Label(obj["id"], obj["reason"], obj["verdict"], "" if note is None else str(note),
                 str(obj.get("labelled_at") or ""))


def read_labels(path: str | Path) -> dict[tuple[str, str], Label]:
    """Labels by (id, reason); a later line replaces an earlier one. A missing file has none."""
    path = Path(path)
    if not path.exists():
        return {}
    labels: dict[tuple[str, str], Label] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the labels file: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        label = parse_label(obj, f"{path}, line {number}")
        labels.pop(label.key, None)  # re-insert, so the file keeps the order of the latest answers
        labels[label.key] = label
    return labels


def write_labels(path: str | Path, labels: Iterable[Label]) -> None:
    try:
        atomic_write_text(path, "".join(label.to_json() + "\n" for label in labels))
    except OSError as exc:  # a read-only run directory, a full disk
        raise CuratuneError(f"{path}: cannot write the labels: {exc.strerror or exc}") from exc


class LabelStore:
    """The audit labels of one run directory, written whole and atomically on every answer.

    Each write re-reads the file first, so the terminal flow and the app can label the same
    run one after the other without losing each other's answers.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, run: RunDir) -> "LabelStore":
        return cls(run.audit_labels)

    def load(self) -> dict[tuple[str, str], Label]:
        return read_labels(self.path)

    def put(self, record_id: str, reason: str, verdict: str, note: str = "") -> Label:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
        label = Label(record_id, reason, verdict, note.strip(), now())
        labels = self.load()
        labels.pop(label.key, None)
        labels[label.key] = label
        write_labels(self.path, labels.values())
        return label

    def merge(self, incoming: dict[tuple[str, str], Label]) -> dict[str, int]:
        """Import labels (e.g. hand labels from bench/labels/); incoming ones win."""
        labels = self.load()
        counts = {"added": 0, "replaced": 0, "unchanged": 0}
        for key, label in incoming.items():
            old = labels.get(key)
            if old is None:
                counts["added"] += 1
            elif (old.verdict, old.note) == (label.verdict, label.note):
                counts["unchanged"] += 1
                continue
            else:
                counts["replaced"] += 1
            labels[key] = label
        write_labels(self.path, labels.values())
        return counts


# ----------------------------------------------------------------------------- ledger


def normalize_ledger(frame: pd.DataFrame, path: str | Path = "removed.parquet") -> pd.DataFrame:
    """The removal ledger with every optional audit column present and typed.

    Old ledgers lack ``action``/``turn``/``span``/``kept_as``: they read as whole-record drops.
    """
    missing = [c for c in ("id", "reason") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; is it a curatune removal ledger?")
    frame = with_ledger_defaults(frame.reset_index(drop=True))
    frame["id"] = frame["id"].astype(str)
    frame["reason"] = frame["reason"].astype(str)
    return frame


def _columns_present(path: Path, wanted: Iterable[str]) -> list[str]:
    names = set(pq.read_schema(path).names)
    return [c for c in wanted if c in names]


def read_ledger(path: str | Path, *, full: bool = True) -> pd.DataFrame:
    """curate/removed.parquet, normalized; ``full=False`` reads only what counting needs."""
    path = Path(path)
    try:
        columns = None if full else _columns_present(path, ("id", "reason", "action"))
        frame = pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise DataError(f"{path}: cannot read the removal ledger: {type(exc).__name__}: {exc}") from exc
    return normalize_ledger(frame, path)


def read_kept(path: str | Path, *, full: bool = True) -> pd.DataFrame:
    path = Path(path)
    try:
        frame = pd.read_parquet(path, columns=None if full else ["id"])
    except Exception as exc:
        raise DataError(f"{path}: cannot read the kept records: {type(exc).__name__}: {exc}") from exc
    if "id" not in frame.columns:
        raise DataError(f"{path}: missing column 'id'")
    frame = frame.reset_index(drop=True)
    frame["id"] = frame["id"].astype(str)
    return frame


# ----------------------------------------------------------------------------- sampling


def sample_rank(seed: int, reason: str, record_id: str) -> str:
    """A record's place in a rule's sample: a hash, so the order ignores the ledger's row order.

    A re-run that removes mostly the same records gives mostly the same sample, so labels
    already given are reused rather than a fresh sample being drawn.
    """
    return hashlib.sha256(f"{seed}\0{reason}\0{record_id}".encode("utf-8")).hexdigest()


@dataclass
class AuditItem:
    """One sampled record as the auditor sees it."""

    reason: str
    id: str
    action: str            # "drop" | "trim" | "keep"
    turn: int              # first removed/flagged message, -1 = whole record
    span: str              # exact text to highlight, "" = none
    messages: list[dict[str, str]]
    step: str = ""
    detail: str = ""
    source: str = ""
    category: str | None = None
    meta: str = ""
    kept_as: str | None = None
    duplicate_of: str | None = None
    rank: int = 0          # 1-based position in the rule's sample

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.reason)

    def cut(self, index: int) -> bool:
        """Whether message ``index`` was cut off by a trim."""
        return self.action == "trim" and self.turn >= 0 and index >= self.turn

    def flagged(self, index: int) -> bool:
        """Whether message ``index`` is the one the rule judged (see :func:`flagged_message`)."""
        return index == flagged_message(self)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    out = []
    for m in list(value):
        if isinstance(m, dict):
            out.append({"role": str(m.get("role", "?")), "content": _text(m.get("content"))})
    return out


def _item(row: dict[str, Any], reason: str, action: str, rank: int) -> AuditItem:
    category = row.get("category")
    return AuditItem(
        reason=reason, id=str(row["id"]), action=action, turn=int(row.get("turn", -1)),
        span=_text(row.get("span")), messages=_messages(row.get("messages")), step=_text(row.get("step")),
        detail=_text(row.get("detail")), source=_text(row.get("source")),
        category=category if isinstance(category, str) else None, meta=_text(row.get("meta")),
        kept_as=row.get("kept_as") if isinstance(row.get("kept_as"), str) else None,
        duplicate_of=row.get("duplicate_of") if isinstance(row.get("duplicate_of"), str) and row.get("duplicate_of") else None,
        rank=rank,
    )


def _ranked(frame: pd.DataFrame, reason: str, seed: int, n: int) -> pd.DataFrame:
    """The first ``n`` distinct ids of ``frame`` in sample order (exact duplicates share an id)."""
    distinct = frame.drop_duplicates("id")
    order = distinct["id"].map(lambda i: sample_rank(seed, reason, i))
    return distinct.assign(_rank=order).sort_values("_rank", kind="stable").head(max(0, n))


def rule_order(removed: pd.DataFrame) -> list[str]:
    """Rules by how many rows they removed (most first), then by name."""
    counts = removed["reason"].value_counts()
    return sorted(counts.index, key=lambda r: (-int(counts[r]), r))


def build_sample(
    removed: pd.DataFrame, kept: pd.DataFrame | None, *, rules: Iterable[str] | None = None, n: int = 25,
    seed: int = 0, n_kept: int = 60,
) -> dict[str, list[AuditItem]]:
    """A seeded sample per rule: ``n`` removed/trimmed records each, ``n_kept`` kept ones under "kept".

    ``removed`` must be normalized (:func:`normalize_ledger`). ``rules`` limits the rules
    (include "kept" to get the kept sample when others are named).
    """
    wanted = None if rules is None else set(rules)
    sample: dict[str, list[AuditItem]] = {}
    for reason in rule_order(removed):
        if wanted is not None and reason not in wanted:
            continue
        chosen = _ranked(removed[removed["reason"] == reason], reason, seed, n)
        sample[reason] = [_item(row, reason, row["action"], i + 1) for i, row in enumerate(chosen.to_dict("records"))]
    if kept is not None and n_kept > 0 and (wanted is None or KEPT in wanted):
        chosen = _ranked(kept, KEPT, seed, n_kept)
        sample[KEPT] = [_item({**row, "turn": -1}, KEPT, "keep", i + 1) for i, row in enumerate(chosen.to_dict("records"))]
    return sample


# ----------------------------------------------------------------------------- precision


def wilson(right: int, labelled: int) -> tuple[float, float] | None:
    """Wilson score interval (95%) of right/labelled, from statsmodels; None without labels."""
    if labelled <= 0:
        return None
    # statsmodels (with scipy.stats) takes over a second to import; `curatune report` loads this module.
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(right, labelled, alpha=1 - CONFIDENCE, method="wilson")
    return float(lo), float(hi)


@dataclass
class Projection:
    """Projected good records lost among ``total`` rows: exact on the labelled rows, estimated on the rest."""

    total: int
    estimate: float | None
    low: float | None
    high: float | None


def project(total: int, labelled_rows: int, wrong_rows: int, precision: float | None,
            interval: tuple[float, float] | None) -> Projection:
    """(1 - precision) x total, with the interval carried through.

    The labelled rows are known (``wrong_rows`` of them were wrongly removed), so only the
    unlabelled rest is projected: ``wrong_rows + (1 - p) x (total - labelled_rows)``. Its point
    equals (1 - p) x total when the labelled rows are the sample's; its interval narrows to
    the exact count when every row is labelled.
    """
    if precision is None or interval is None:
        return Projection(total, None, None, None)
    rest = max(0, total - labelled_rows)
    return Projection(total, wrong_rows + (1 - precision) * rest, wrong_rows + (1 - interval[1]) * rest,
                      wrong_rows + (1 - interval[0]) * rest)


@dataclass
class RuleAudit:
    """One rule's audit numbers (or the kept sample's, with reason "kept")."""

    reason: str
    dropped: int                 # ledger rows dropped whole (for "kept": kept records)
    trimmed: int                 # ledger rows trimmed
    labelled: int = 0            # distinct records labelled
    right: int = 0
    precision: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    lost: Projection | None = None   # good records dropped (for "kept": flawed records kept)
    cut: Projection | None = None    # good records trimmed

    @property
    def audited(self) -> bool:
        return self.labelled > 0

    @property
    def wrong(self) -> int:
        return self.labelled - self.right

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("lost", "cut")}
        out["wrong"] = self.wrong
        out["audited"] = self.audited
        for name in ("lost", "cut"):
            p = getattr(self, name)
            out[name] = p.estimate if p else None
            out[f"{name}_low"] = p.low if p else None
            out[f"{name}_high"] = p.high if p else None
        return out


    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RuleAudit":
        """Back from :meth:`to_dict` (report.json consumers redraw the table from it)."""
        audit = cls(**{k: d.get(k) for k in ("reason", "dropped", "trimmed", "labelled", "right", "precision",
                                              "ci_low", "ci_high")})
        if audit.precision is not None:
            audit.lost = Projection(audit.dropped, d.get("lost"), d.get("lost_low"), d.get("lost_high"))
            audit.cut = Projection(audit.trimmed, d.get("cut"), d.get("cut_low"), d.get("cut_high"))
        return audit


def _audit_rows(reason: str, rows: Iterable[tuple[str, str]], labels: dict[tuple[str, str], Label]) -> RuleAudit:
    """Numbers for one rule from its ledger rows, (id, action) pairs, and the labels.

    Plain loops: a few thousand rows per rule, and the app recomputes this on every click.
    """
    count = {"drop": 0, "trim": 0}
    labelled_rows = {"drop": 0, "trim": 0}
    wrong_rows = {"drop": 0, "trim": 0}
    verdicts: dict[str, str] = {}  # by distinct id: exact duplicates share one label
    for record_id, action in rows:
        kind = "trim" if action == "trim" else "drop"
        count[kind] += 1
        label = labels.get((record_id, reason))
        if label is not None:
            labelled_rows[kind] += 1
            wrong_rows[kind] += label.verdict == "wrong"
            verdicts[record_id] = label.verdict
    right = sum(1 for v in verdicts.values() if v == "right")
    audit = RuleAudit(reason, count["drop"], count["trim"], len(verdicts), right)
    interval = wilson(right, len(verdicts))
    if interval is None:
        return audit
    audit.precision = right / len(verdicts)
    audit.ci_low, audit.ci_high = interval
    audit.lost = project(count["drop"], labelled_rows["drop"], wrong_rows["drop"], audit.precision, interval)
    audit.cut = project(count["trim"], labelled_rows["trim"], wrong_rows["trim"], audit.precision, interval)
    return audit


@dataclass
class AuditSummary:
    rules: list[RuleAudit]
    kept: RuleAudit | None
    labels: int                       # labels in the file
    stale: int                        # labels matching no current record for their reason
    labels_path: str = ""
    confidence: float = CONFIDENCE
    notes: list[str] = field(default_factory=list)

    @property
    def audited(self) -> bool:
        return any(r.audited for r in self.rules) or bool(self.kept and self.kept.audited)

    def rule(self, reason: str) -> RuleAudit | None:
        if reason == KEPT:
            return self.kept
        return next((r for r in self.rules if r.reason == reason), None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AuditSummary":
        return cls([RuleAudit.from_dict(r) for r in d.get("rules") or []],
                   RuleAudit.from_dict(d["kept"]) if d.get("kept") else None, int(d.get("labels") or 0),
                   int(d.get("stale_labels") or 0), str(d.get("labels_path") or ""),
                   float(d.get("confidence") or CONFIDENCE))

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels_path": self.labels_path, "labels": self.labels, "stale_labels": self.stale,
            "confidence": self.confidence, "audited": self.audited,
            "rules": [r.to_dict() for r in self.rules], "kept": self.kept.to_dict() if self.kept else None,
        }


def summarize(removed: pd.DataFrame, kept_ids: pd.Series | None, labels: dict[tuple[str, str], Label],
              labels_path: str = "") -> AuditSummary:
    """Precision per rule and the kept sample's clean share, from a normalized ledger and labels."""
    by_reason: dict[str, list[tuple[str, str]]] = {}
    for record_id, reason, action in zip(removed["id"], removed["reason"], removed["action"]):
        by_reason.setdefault(reason, []).append((record_id, action))
    rules = [_audit_rows(reason, by_reason[reason], labels) for reason in rule_order(removed)]
    current = {(i, reason) for reason, rows in by_reason.items() for i, _ in rows}
    kept = None
    if kept_ids is not None:
        ids = [str(i) for i in kept_ids]
        kept = _audit_rows(KEPT, ((i, "keep") for i in ids), labels)
        current |= {(i, KEPT) for i in ids}
    stale = sum(1 for key in labels if key not in current)
    return AuditSummary(rules, kept, len(labels), stale, labels_path)


def audit_run(run: RunDir | str | Path, labels_path: str | Path | None = None) -> AuditSummary | None:
    """The audit summary of a run directory (None before curation), from its own labels or ``labels_path``.

    This is also how hand labels committed elsewhere (bench/labels/*.jsonl) are scored
    against a fresh curation run.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    if not run.removed.exists():
        return None
    path = Path(labels_path) if labels_path is not None else run.audit_labels
    removed = read_ledger(run.removed, full=False)
    kept_ids = read_kept(run.kept, full=False)["id"] if run.kept.exists() else None
    return summarize(removed, kept_ids, read_labels(path), str(path))


# ----------------------------------------------------------------------------- display helpers


def excerpt(text: str, span: str = "", limit: int | None = None, context: int = 400) -> list[tuple[str, str]]:
    """``text`` as (piece, kind) parts, kind "text", "span" (the first occurrence of ``span``) or
    "gap" (text left out because it is longer than ``limit``; the piece is what was left out).

    A long text keeps its beginning, its end and the flagged span with ``context`` characters
    around it, so the reason for a flag is always on screen. Joining every piece gives ``text``.
    """
    start = text.find(span) if span else -1
    end = start + len(span) if start >= 0 else -1
    if limit is None or len(text) <= limit:
        shown = [(0, len(text))]
    else:
        shown = [(0, int(limit * 0.6)), (len(text) - int(limit * 0.25), len(text))]
        if start >= 0:
            shown.append((max(0, start - context), min(len(text), end + context)))
        shown.sort()
        merged = [shown[0]]
        for a, b in shown[1:]:
            if a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        shown = merged
    parts: list[tuple[str, str]] = []
    position = 0
    for a, b in shown:
        if a > position:
            parts.append((text[position:a], "gap"))
        cuts = sorted({a, b} | {c for c in (start, end) if start >= 0 and a < c < b})
        for x, y in zip(cuts, cuts[1:]):
            parts.append((text[x:y], "span" if start <= x and y <= end else "text"))
        position = b
    if position < len(text):
        parts.append((text[position:], "gap"))
    return parts


def span_message(item: AuditItem) -> int | None:
    """Index of the message that holds the highlighted span, or None when it is not found.

    The ledger's ``turn`` is the first message removed, so for a trim that cuts a whole exchange
    it is the user turn and the span sits in the assistant turn after it: the search goes from
    ``turn`` forwards, then backwards, so a phrase that also occurs earlier is not marked there.
    """
    if not item.span:
        return None
    start = item.turn if 0 <= item.turn < len(item.messages) else 0
    order = list(range(start, len(item.messages))) + list(range(start - 1, -1, -1))
    return next((i for i in order if item.span in item.messages[i]["content"]), None)


def flagged_message(item: AuditItem) -> int | None:
    """The message the rule judged: the one holding the span, else ``turn`` for a drop (a trim's
    ``turn`` is where the cut starts, not necessarily the failing message), else None."""
    found = span_message(item)
    if found is not None:
        return found
    return item.turn if item.action != "trim" and 0 <= item.turn < len(item.messages) else None


def format_share(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_projection(p: Projection | None) -> str:
    if p is None or p.estimate is None:
        return "—"
    if p.total == 0:
        return "0"
    return f"{p.estimate:,.0f} [{p.low:,.0f}–{p.high:,.0f}]"


def format_precision(r: RuleAudit) -> str:
    return f"{r.precision:.2f} [{r.ci_low:.2f}–{r.ci_high:.2f}]" if r.audited else "not audited"


def table_rows(summary: AuditSummary) -> list[dict[str, str]]:
    """The precision table as display strings, one row per rule then "kept"; shared by CLI and app.

    Columns: rule, dropped, trimmed (only when the run trimmed anything), labelled,
    precision (with its interval), lost (good records dropped, estimated, with interval),
    cut (good records trimmed, only with trims).
    """
    with_trims = any(r.trimmed for r in summary.rules)
    rows = []
    for r in summary.rules:
        row = {"rule": r.reason, "dropped": f"{r.dropped:,}"}
        if with_trims:
            row["trimmed"] = f"{r.trimmed:,}"
        row["labelled"] = f"{r.labelled} ({r.right} right)" if r.audited else "—"
        row["precision [95% CI]"] = format_precision(r)
        row["good dropped (est.)"] = format_projection(r.lost) if r.audited and r.dropped else ""
        if with_trims:
            row["good trimmed (est.)"] = format_projection(r.cut) if r.audited and r.trimmed else ""
        rows.append(row)
    k = summary.kept
    if k is not None:
        row = {"rule": f"{KEPT}: share clean", "dropped": f"{k.dropped:,} kept"}
        if with_trims:
            row["trimmed"] = ""
        row["labelled"] = f"{k.labelled} ({k.right} clean)" if k.audited else "—"
        row["precision [95% CI]"] = format_precision(k)
        row["good dropped (est.)"] = f"{format_projection(k.lost)} flawed kept" if k.audited else ""
        if with_trims:
            row["good trimmed (est.)"] = ""
        rows.append(row)
    return rows
