"""Audit page: mark a seeded sample of each rule's removals right or wrong; each rule's precision.

The one page that writes: each answer goes at once (atomically) into RUN_DIR/audit/labels.jsonl,
the same file `curatune audit` uses, keyed by record content and reason.
"""
from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from curatune.app import ui
from curatune.app.auditview import messages_html, meta_html
from curatune.app.data import RunData
from curatune.app.diffview import conversation_text, similarity, word_diff_html
from curatune.curate.audit import (
    KEPT,
    AuditItem,
    LabelStore,
    build_sample,
    rule_order,
    summarize,
    table_rows,
)
from curatune.errors import CuratuneError

WRITE_ERROR = "audit_write_error"
#: Twins shorter than this together are compared at once; longer ones on request (see twin()).
SHORT_PAIR = 6000


def position_key(run: RunData, rule: str, n: int, seed: int) -> str:
    return f"audit_pos:{run.label}:{rule}:{n}:{seed}"


def first_unlabelled(items: list[AuditItem], labels: dict) -> int:
    return next((i for i, item in enumerate(items) if item.key not in labels), len(items))


def answer(store_path: str, item_id: str, reason: str, verdict: str | None, key: str, position: int) -> None:
    """Button callback: store the label (unless skipped), clear the note, move to the next record."""
    if verdict is not None:
        try:
            LabelStore(store_path).put(item_id, reason, verdict, st.session_state.get("audit_note", ""))
        except CuratuneError as exc:  # shown by render(); the record stays on screen
            st.session_state[WRITE_ERROR] = str(exc)
            return
    st.session_state["audit_note"] = ""
    st.session_state[key] = position + 1


def move(key: str, position: int) -> None:
    st.session_state[key] = position


def rule_label(rule: str, removed: pd.DataFrame, kept_count: int, labels: dict) -> str:
    done = sum(1 for (_, reason) in labels if reason == rule)
    if rule == KEPT:
        return f"{KEPT} · {kept_count:,} records · {done} labelled"
    actions = removed.loc[removed["reason"] == rule, "action"]
    trimmed = int((actions == "trim").sum())
    counts = f"{len(actions) - trimmed:,} dropped" + (f", {trimmed:,} trimmed" if trimmed else "")
    return f"{rule} · {counts} · {done} labelled"


def precision_table(removed: pd.DataFrame, kept: pd.DataFrame | None, labels: dict, store: LabelStore) -> None:
    st.subheader("Precision per rule")
    summary = summarize(removed, kept["id"] if kept is not None else None, labels, str(store.path))
    st.caption("Precision = right / labelled, with a Wilson 95% interval. Good records dropped (or trimmed) = "
               "(1 − precision) × the rule's count, exact on the labelled records, interval carried through. "
               "For kept: the share of sampled kept records that are clean, and the flawed records projected among all "
               "kept ones.")
    rows = table_rows(summary)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="audit_table", height=ui.table_height(len(rows)))
    note = f"{summary.labels} labels in `{store.path}`."
    if summary.stale:
        note += f" {summary.stale} of them match no record this run removed (or kept) for that reason."
    st.caption(note)


def render() -> None:
    ui.page_header("Audit", "Is each rule right on your data? Read a seeded random sample of the records a rule "
                            "removed or trimmed, mark each right or wrong, and see the rule's precision and how many "
                            "good records it is likely to have cost. Same labels as `curatune audit RUN_DIR`.")
    run = ui.require_run()
    if WRITE_ERROR in st.session_state:
        st.error(f"The answer was not saved: {st.session_state.pop(WRITE_ERROR)}")
    removed = run.audit_ledger()
    if removed is None:
        ui.missing_note(run, run.dir.removed, "The removal ledger", "the curate stage")
        return
    kept = run.audit_kept()
    store = LabelStore.of(run.dir)
    labels = store.load()
    rules = rule_order(removed) + ([KEPT] if kept is not None and len(kept) else [])
    if not rules:
        st.success("Nothing was removed and nothing was kept: there is nothing to audit.")
        return

    c1, c2, c3 = st.columns([4, 1, 1])
    rule = c1.selectbox("Rule", rules, key="audit_rule",
                        format_func=lambda r: rule_label(r, removed, len(kept) if kept is not None else 0, labels))
    n = int(c2.number_input("Sample size", min_value=1, max_value=1000, value=60 if rule == KEPT else 25,
                            key=f"audit_n:{rule == KEPT}"))
    seed = int(c3.number_input("Seed", min_value=0, value=0, key="audit_seed"))
    items = build_sample(removed, kept, rules=[rule], n=n, seed=seed, n_kept=n)[rule]
    key = position_key(run, rule, n, seed)
    if key not in st.session_state:
        st.session_state[key] = first_unlabelled(items, labels)
    position = min(int(st.session_state[key]), len(items))
    labelled = sum(1 for item in items if item.key in labels)
    st.progress(labelled / len(items) if items else 1.0,
                text=f"{labelled} of {len(items)} sampled records labelled (seed {seed})")

    nav = st.columns([1, 1, 1, 3])
    nav[0].button("◀ Previous", key="audit_prev", disabled=position == 0, on_click=move, args=(key, position - 1))
    nav[1].button("Next ▶", key="audit_next", disabled=position >= len(items), on_click=move, args=(key, position + 1))
    nav[2].button("Next unlabelled", key="audit_jump", on_click=move, args=(key, first_unlabelled(items, labels)))

    if position >= len(items):
        st.success(f"End of the sample: {labelled} of {len(items)} labelled. Pick another rule, or go back to change "
                   "an answer.")
    else:
        item = items[position]
        st.markdown(f"**Record {position + 1} of {len(items)}**")
        st.html(meta_html(item, labels.get(item.key)))
        question = ("Is this record clean, rightly kept?" if rule == KEPT
                    else f"Was it right to {item.action} this record for <b>{html.escape(rule)}</b>?")
        st.html(f'<div class="ct-meta">{question}</div>')
        st.text_input("Note (optional)", key="audit_note", placeholder="e.g. a list answer, not degenerate")
        b = st.columns([1, 1, 1, 3])
        args = (str(store.path), item.id, item.reason)
        b[0].button("Right", key="audit_right", type="primary", icon=":material/check:", on_click=answer,
                    args=(*args, "right", key, position))
        b[1].button("Wrong", key="audit_wrong", icon=":material/close:", on_click=answer,
                    args=(*args, "wrong", key, position))
        b[2].button("Skip", key="audit_skip", on_click=answer, args=(*args, None, key, position))
        st.html(messages_html(item))
        if item.duplicate_of:
            twin(item, removed, kept)
    precision_table(removed, kept, labels, store)


def twin(item: AuditItem, removed: pd.DataFrame, kept: pd.DataFrame | None) -> None:
    """The record a duplicate was removed in favour of, with the word-level differences."""
    where, hit = "kept", kept[kept["id"] == item.duplicate_of] if kept is not None else pd.DataFrame()
    if hit.empty:
        where, hit = "itself removed", removed[removed["id"] == item.duplicate_of]
    st.markdown(f"**Its twin** `{item.duplicate_of}` ({where if len(hit) else 'not found'})")
    if hit.empty:
        st.caption("The twin is in neither kept.parquet nor removed.parquet.")
        return
    mine, theirs = conversation_text(item.messages), conversation_text(hit.iloc[0]["messages"])
    if mine == theirs:
        st.caption("Same text as this record.")
        return
    # The word diff is quadratic: seconds for two 10,000-character chats, so long pairs wait for a click.
    if not st.toggle("Compare word by word", value=len(mine) + len(theirs) < SHORT_PAIR, key="audit_twin_diff"):
        return
    left_html, right_html = word_diff_html(mine, theirs)
    st.caption(f"Word overlap {similarity(mine, theirs):.0%}. Struck out: only in this record; green: only in the twin.")
    left, right = st.columns(2)
    with left:
        ui.text_box(mine, html_body=left_html)
    with right:
        ui.text_box(theirs, html_body=right_html)


ui.guarded(render)
