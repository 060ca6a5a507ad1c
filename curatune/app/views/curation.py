"""Curation page: the funnel through the steps, removals by reason, a browser of removed records."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from curatune.app import charts, ui
from curatune.app.auditview import messages_html
from curatune.app.data import RunData
from curatune.app.diffview import conversation_text, similarity, word_diff_html
from curatune.curate.accounting import curate_accounting
from curatune.curate.audit import AuditItem, LabelStore, summarize, table_rows

BROWSER_LIMIT = 1000  # records offered in the picker at once; the search narrows it down


def summary(report: dict) -> None:
    accounting = curate_accounting(report)
    records = accounting["records"]
    n_in, kept = records["in"], records["kept"]
    cols = st.columns(4)
    cols[0].metric("Input records", f"{n_in:,}" if n_in is not None else "—")
    cols[1].metric("Kept", f"{kept:,}" if kept is not None else "—",
                   help="Records kept, trimmed ones included: a trimmed record keeps its clean prefix.")
    cols[2].metric("Dropped", f"{records['dropped']:,}", help="Records removed whole.")
    cols[3].metric("Kept share", f"{kept / n_in:.1%}" if n_in and kept is not None else "—")
    turns = accounting.get("turns")
    if turns:
        cols = st.columns(4)
        cols[0].metric("Turns in", f"{turns['in']:,}")
        cols[1].metric("Turns kept", f"{turns['kept']:,}")
        cols[2].metric("Turns removed", f"{turns['removed']:,}", help="By drops and by trims together.")
        cols[3].metric("Trimmed records", f"{records['kept_trimmed']:,}",
                       help="Kept records that lost turns: cut before the first failing exchange.")
    statement = (f"Records: {_n(n_in)} in = {_n(kept)} kept + {records['dropped']:,} dropped"
                 + (f" ({records['kept_trimmed']:,} of the kept are trimmed: their cut turns are in the ledger)"
                    if records["kept_trimmed"] else "") + ".")
    if turns:
        statement += f" Turns (messages): {_n(turns['in'])} in = {_n(turns['kept'])} kept + {_n(turns['removed'])} removed."
    st.caption(statement)
    if records["holds"] is False or (turns and turns["holds"] is False):
        st.warning("These counts do not add up: curate/report.json is inconsistent (edited, or from another tool). "
                   "Re-run `curatune curate CONFIG --force`.")


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "—"


def funnel_and_reasons(report: dict) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Funnel")
        st.caption("Records left after each step, in the order the steps ran.")
        if report.get("steps"):
            st.plotly_chart(charts.funnel_figure(report), key="funnel")
        else:
            st.info("The report lists no steps.")
    with right:
        st.subheader("Removed, by reason")
        st.caption("Each removed record has exactly one reason: the step that removed it first.")
        if report.get("removed_by_reason"):
            st.plotly_chart(charts.reasons_figure(report["removed_by_reason"]), key="reasons")
        else:
            st.success("Nothing was removed.")
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    if steps:
        with st.expander("Per-step numbers"):
            table = pd.DataFrame([{k: v for k, v in step.items() if not isinstance(v, (dict, list))} for step in steps])
            table["removed by reason"] = [
                ", ".join(f"{k} {v}" for k, v in (step.get("removed_by_reason") or {}).items()) for step in steps]
            st.dataframe(table, hide_index=True)


def rule_precision(run: RunData) -> None:
    """Each rule's audited precision and projected loss (from RUN_DIR/audit/labels.jsonl)."""
    removed = run.audit_ledger()
    if removed is None or removed.empty:
        return
    labels = LabelStore.of(run.dir).load()
    summary = summarize(removed, run.kept_ids(), labels, str(run.dir.audit_labels))
    st.subheader("Rule precision (audit)")
    if not summary.audited:
        st.caption("Not audited: no rule's removals have been labelled yet. Label a sample on the **Audit** page "
                   "(or with `curatune audit RUN_DIR`) to see how often each rule is right and how many good records "
                   "it is likely to have cost.")
        return
    st.caption("From the labels of the Audit page: precision = right / labelled with a Wilson 95% interval; good records "
               "dropped = (1 − precision) × the rule's count, interval carried through. Rules without labels: not audited.")
    rows = table_rows(summary)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="precision_table", height=ui.table_height(len(rows)))


def categories(report: dict) -> None:
    before, after = report.get("categories_before") or {}, report.get("categories_after") or {}
    st.subheader("Category balance")
    if not before and not after:
        st.info("The curation report has no category counts (the data has no categories).")
        return
    scale = st.radio("Show", ["counts", "share of total"], horizontal=True, key="category_scale")
    st.caption("Did curation shift the mix? Compare the share of each category before and after.")
    st.plotly_chart(charts.categories_figure(before, after, share=scale != "counts"), key="categories")


def detection(report: dict) -> None:
    """Precision/recall against planted flaws, when the run had a labels file."""
    found = report.get("detection")
    if not isinstance(found, dict) or not found:
        return
    st.subheader("Detection of planted flaws")
    st.caption("With a labels file (the demo data has one): recall = share of planted flaws that curation "
               "removed for the matching reason, precision = share of removals for that reason that were planted.")
    overall = found.get("overall") or {}
    if overall:
        cols = st.columns(4)
        cols[0].metric("Planted flaws", overall.get("labeled", "—"))
        cols[1].metric("Removed records", overall.get("removed", "—"))
        cols[2].metric("Precision", _share(overall.get("precision")))
        cols[3].metric("Recall", _share(overall.get("recall")))
    flaws = found.get("flaws")
    if isinstance(flaws, dict) and flaws:
        table = pd.DataFrame(flaws).T.rename_axis("flaw").reset_index()
        for column in ("recall", "precision"):
            if column in table.columns:
                table[column] = pd.to_numeric(table[column], errors="coerce")
        if "removed_as" in table.columns:
            table["removed_as"] = table["removed_as"].map(
                lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
        st.dataframe(table, hide_index=True, column_config={
            "recall": st.column_config.ProgressColumn("recall", min_value=0.0, max_value=1.0, format="%.2f"),
            "precision": st.column_config.ProgressColumn("precision", min_value=0.0, max_value=1.0, format="%.2f"),
        })


def _share(value) -> str:
    return "—" if value is None else f"{float(value):.0%}"


#: How the browser names a ledger row's action.
ACTION_NAMES = {"drop": "dropped", "trim": "trimmed (kept, turns cut)"}


def browser(run: RunData) -> None:
    st.subheader("Dropped and trimmed records")
    st.caption("Every record curation dropped, and every conversation it trimmed (kept, with the turns from the "
               "first failing exchange on cut), with the reason. For duplicates, the kept twin is shown side by "
               "side: words only in the removed record are struck out, words only in the twin are green.")
    removed = run.removed_with_text()
    if removed is None:
        ui.missing_note(run, run.dir.removed, "The removal ledger", "the curate stage")
        return
    if removed.empty:
        st.success("No record was dropped or trimmed.")
        return
    c0, c1, c2, c3 = st.columns([2, 2, 2, 3])
    actions = [a for a in ACTION_NAMES if (removed["action"] == a).any()]
    chosen_actions = c0.multiselect("Action", actions, default=actions, key=f"removed_actions:{run.label}",
                                    format_func=ACTION_NAMES.get)
    reasons = sorted(removed["reason"].dropna().astype(str).unique())
    chosen = c1.multiselect("Reason", reasons, default=reasons, key=f"removed_reasons:{run.label}")
    steps = sorted(removed["step"].dropna().astype(str).unique())
    chosen_steps = c2.multiselect("Step", steps, default=steps, key=f"removed_steps:{run.label}")
    query = c3.text_input("Search text, id or detail", key="removed_search",
                          placeholder="e.g. a brand name, or a record id")
    mask = (removed["reason"].astype(str).isin(chosen) & removed["step"].astype(str).isin(chosen_steps)
            & removed["action"].isin(chosen_actions))
    if query:
        needle = query.lower()
        haystack = (removed["text"] + " " + removed["id"].astype(str) + " " + removed["detail"].fillna("").astype(str))
        mask &= haystack.str.lower().str.contains(needle, regex=False)
    shown = removed[mask]
    trims = shown["action"] == "trim"
    st.caption(f"{len(shown):,} of {len(removed):,} ledger rows match: {int((~trims).sum()):,} dropped records and "
               f"{int(trims.sum()):,} trims (records kept with {int(shown.loc[trims].apply(_turns_cut, axis=1).sum()):,} "
               "turns cut).")
    if shown.empty:
        return
    table = shown.assign(
        preview=shown["text"].map(lambda t: ui.preview(t, 120)),
        action=shown["action"].map(ACTION_NAMES),
        turns=shown.apply(_turns_column, axis=1),
    )
    columns = ["id", "action", "reason", "turns", "step", "detail", "category", "duplicate_of", "preview"]
    if table["eval_item"].notna().any():  # contaminated rows: the evaluation text each overlaps
        columns.insert(columns.index("duplicate_of"), "eval_item")
    st.dataframe(table[columns],
                 hide_index=True, height=260, key="removed_table", placeholder="—")
    options = list(shown.index[:BROWSER_LIMIT])
    if len(shown) > BROWSER_LIMIT:
        st.caption(f"The picker offers the first {BROWSER_LIMIT:,}; search to narrow down.")
    pick = st.selectbox(
        "Inspect record", options, key="removed_pick",
        format_func=lambda i: (f"{'✂ trimmed' if removed.at[i, 'action'] == 'trim' else 'dropped'} · "
                               f"{removed.at[i, 'reason']} · {removed.at[i, 'id']} · {ui.preview(removed.at[i, 'text'], 70)}"),
    )
    if pick is not None:
        show_record(run, removed, removed.loc[pick])


def _message_count(row: pd.Series) -> int:
    messages = row.get("messages")
    return 0 if messages is None or isinstance(messages, float) else len(messages)


def _turns_cut(row: pd.Series) -> int:
    """Messages a trim cut (from its ``turn`` to the end); a drop removes them all."""
    total = _message_count(row)
    if row["action"] == "trim" and 0 <= int(row["turn"]) < total:
        return total - int(row["turn"])
    return total


def _turns_column(row: pd.Series) -> str:
    total = _message_count(row)
    if row["action"] == "trim":
        return f"{_turns_cut(row)} of {total} cut"
    return f"all {total}"


def show_record(run: RunData, removed: pd.DataFrame, row: pd.Series) -> None:
    # reason, step, detail, category and source are data: escaped, never rendered as Markdown
    meta = f"**{ui.md(row['reason'])}** (step {ui.code(row['step'])})"
    if isinstance(row.get("detail"), str) and row["detail"]:
        meta += f": {ui.md(row['detail'])}"
    st.markdown(meta)
    st.caption(f"id {ui.code(row['id'])} · category {ui.md(row.get('category') or '—')} · "
               f"source {ui.md(row.get('source') or '—')}")
    if row["action"] == "trim":
        show_trim(row)
        return
    twin_id = row.get("duplicate_of")
    if not isinstance(twin_id, str) or not twin_id:
        ui.text_box(row["text"])
        return
    twin, where = find_twin(run, removed, twin_id)
    if twin is None:
        st.warning(f"Its twin {ui.code(twin_id)} is in neither kept.parquet nor removed.parquet.")
        ui.text_box(row["text"])
        return
    twin_text = conversation_text(twin["messages"])
    left_html, right_html = word_diff_html(row["text"], twin_text)
    st.caption(f"Word overlap with its twin: {similarity(row['text'], twin_text):.0%}")
    left, right = st.columns(2)
    with left:
        st.markdown("**Removed record**")
        ui.text_box(row["text"], html_body=left_html)
    with right:
        st.markdown(f"**Twin {ui.code(twin_id)}** ({where})")
        ui.text_box(twin_text, html_body=right_html)


def show_trim(row: pd.Series) -> None:
    """A trimmed conversation: kept, with the cut messages dashed and the flagged span marked."""
    item = AuditItem(reason=str(row["reason"]), id=str(row["id"]), action="trim", turn=int(row["turn"]),
                     span=row["span"] if isinstance(row.get("span"), str) else "",
                     messages=[{"role": str(m.get("role", "?")), "content": str(m.get("content") or "")}
                               for m in (row["messages"] if row["messages"] is not None else [])])
    total, cut = len(item.messages), _turns_cut(row)
    kept_as = row.get("kept_as")
    kept = f" as record {ui.code(kept_as)}" if isinstance(kept_as, str) and kept_as else ""
    st.markdown(f"**Trimmed, not dropped**: the first {total - cut} of {total} messages are kept{kept}; "
                f"messages {total - cut}–{total - 1} ({cut}) were cut.")
    st.html(messages_html(item))


def find_twin(run: RunData, removed: pd.DataFrame, twin_id: str) -> tuple[pd.Series | None, str]:
    kept = run.kept()
    if kept is not None:
        hit = kept[kept["id"] == twin_id]
        if len(hit):
            return hit.iloc[0], "kept"
    hit = removed[removed["id"] == twin_id]
    if len(hit):
        return hit.iloc[0], f"itself removed later: {hit.iloc[0]['reason']}"
    return None, ""


def render() -> None:
    ui.page_header("Curation", "What the curate stage did to the data: how many records each step removed and "
                               "why, which records went, and whether the category mix changed.")
    run = ui.require_run()
    report = run.curate_report()
    if report is None:
        ui.missing_note(run, run.dir.curate_report, "The curation report", "the curate stage "
                        "(`curatune run` or `curatune curate`)")
    else:
        summary(report)
        funnel_and_reasons(report)
        rule_precision(run)
        categories(report)
        detection(report)
    browser(run)


ui.guarded(render)
