"""Run directories for the app tests, built on the shared synthetic fixture.

:func:`curatune.testing.fixture_run.build_fixture_run` writes a complete run per the
run-directory contract; the helpers here turn a copy of it into the states the app must
cope with: a sweep still running, an unanalysed run, removal-ledger edge cases.
Everything is written with the atomic writers, as a stage would.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record
from curatune.rundir import RunDir, atomic_write_parquet, read_json
from curatune.testing.fixture_run import build_fixture_run

#: Text of the removed near-duplicate added by :func:`add_tricky_removals`; has HTML in it.
TRICKY_TEXT = "Extract <b>bold</b> & <script>alert(1)</script> attributes from: A red mug, 300 g."


def build_run(root: Path, **kwargs) -> Path:
    return build_fixture_run(root, **kwargs).root


def make_running(root: Path, running: list[str], pending: list[str]) -> None:
    """Turn finished cells back into a sweep in progress.

    ``running`` cells keep their training log but lose done.json; ``pending`` cells lose
    their folder. Their scores and samples go too, and the analysis is not written yet.
    """
    run = RunDir(root)
    plan_cells = {f"{c['method']}-n{c['size']}-s{c['seed']}": run.root / c["path"]
                  for c in read_json(run.plan)["cells"]}
    for key in running:
        (plan_cells[key] / "done.json").unlink()
    for key in pending:
        shutil.rmtree(plan_cells[key])
    gone = set(running) | set(pending)
    scores = pd.read_parquet(run.scores)
    atomic_write_parquet(run.scores, scores[~scores["cell"].isin(gone)])
    for file in run.samples.glob("*/*.parquet"):
        if file.stem.rpartition("__")[0] in gone:
            file.unlink()
    run.analysis.unlink(missing_ok=True)
    run.saturation_curves.unlink(missing_ok=True)


def add_tricky_removals(root: Path) -> dict[str, str]:
    """Add ledger rows the browser must handle; returns their ids by case.

    - ``html``: a near duplicate of a kept record whose text holds HTML (must be escaped)
    - ``twin_removed``: a duplicate whose twin was itself removed later
    - ``twin_missing``: a duplicate whose twin id is nowhere
    """
    run = RunDir(root)
    kept = pd.read_parquet(run.kept)
    removed = pd.read_parquet(run.removed)
    original = Record.from_row(kept.iloc[0].to_dict())
    later = Record.from_row(removed.iloc[-1].to_dict())

    def ledger_row(record: Record, reason: str, twin: str | None) -> dict:
        row = record.to_row()
        row.update(step="dedup", reason=reason, detail="test case", duplicate_of=twin, cluster_id="t1")
        return row

    html_dup = Record.make([{"role": "user", "content": TRICKY_TEXT}, original.messages[-1]], category="mug")
    chained = Record.make([{"role": "user", "content": later.prompt + " Ships free."},
                           {"role": "assistant", "content": later.response}], category=later.category)
    orphan = Record.make([{"role": "user", "content": "orphan duplicate"},
                          {"role": "assistant", "content": "ok"}], category="mug")
    rows = [ledger_row(html_dup, "near_duplicate", original.id), ledger_row(chained, "near_duplicate", later.id),
            ledger_row(orphan, "exact_duplicate", "0000000000000000")]
    extra = pd.DataFrame(rows, columns=RECORD_COLUMNS + LEDGER_COLUMNS)
    atomic_write_parquet(run.removed, pd.concat([removed, extra], ignore_index=True))
    return {"html": html_dup.id, "twin_removed": chained.id, "twin_missing": orphan.id, "twin_of_html": original.id}


def add_audit_rows(root: Path) -> dict[str, str]:
    """Add ledger rows with the turn-level columns the audit shows; returns their ids.

    - ``trim``: a 4-message chat trimmed at message 2 ("truncated"), the span in message 3
    - ``html``: a dropped record ("boilerplate") whose text is HTML, the span ``<script>``

    The fixture's own rows get the new columns' defaults, as an older ledger would read.
    """
    run = RunDir(root)
    removed = pd.read_parquet(run.removed)
    long = Record.make([
        {"role": "user", "content": "Describe the mug."}, {"role": "assistant", "content": "A red mug, 300 g."},
        {"role": "user", "content": "And the lid?"}, {"role": "assistant", "content": "The lid is made of"},
    ], category="mug")
    prefix = Record.make(long.messages[:2], category="mug")
    html_rec = Record.make([{"role": "user", "content": "Show <b>markup</b>"},
                            {"role": "assistant", "content": TRICKY_TEXT}], category="mug")
    rows = []
    for record, reason, action, turn, span, kept_as in (
        (long, "truncated", "trim", 2, "made of", prefix.id),
        (html_rec, "boilerplate", "drop", 1, "<script>", None),
    ):
        row = record.to_row()
        row.update(step="quality", reason=reason, detail="audit test case", duplicate_of=None, cluster_id=None,
                   action=action, turn=turn, span=span, kept_as=kept_as)
        rows.append(row)
    extra = pd.DataFrame(rows)
    atomic_write_parquet(run.removed, pd.concat([removed, extra], ignore_index=True))
    return {"trim": long.id, "html": html_rec.id}
