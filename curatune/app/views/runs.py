"""Runs page: each run's config, data counts, and every sweep cell's status and wall time."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from curatune.app import charts, ui
from curatune.app.data import CELL_STATUSES, RunData
from curatune.app.style import STATUS_COLORS, format_seconds
from curatune.errors import CuratuneError
from curatune.export import DATA_FORMATS, export_cell, export_data
from curatune.model_card import RunFacts, base_model_id, model_card
from curatune.rundir import CellInfo, parse_cell_key


def overview(refs) -> None:
    rows = []
    for ref in refs:
        run = RunData(ref.path, ref.label)
        if run.is_foreign():
            rows.append({"run": ref.label, "folder": str(ref.path), "kept records": None,
                         "cells done": "not a run", "failed": None, "evaluated": False, "analysed": False})
            continue
        report = run.curate_report() or {}
        cells = run.cells()
        done = int((cells["status"] == "done").sum())
        rows.append({
            "run": ref.label, "folder": str(ref.path), "kept records": report.get("kept"),
            "cells done": f"{done} / {len(cells)}" if len(cells) else "no sweep yet",
            "failed": int((cells["status"] == "failed").sum()),
            "evaluated": run.dir.scores.exists(), "analysed": run.dir.analysis.exists(),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def data_counts(run: RunData) -> None:
    report = run.curate_report()
    plan = run.plan() or {}
    heldout = run.heldout()
    subsets = run.subsets()
    cols = st.columns(5)
    cols[0].metric("Input records", _fmt(report.get("input_records")) if report else "—")
    cols[1].metric("Kept", _fmt(report.get("kept")) if report else "—")
    removed = sum(int(v) for v in (report.get("removed_by_reason") or {}).values()) if report else None
    cols[2].metric("Removed", _fmt(removed) if report else "—")
    cols[3].metric("Held-out examples", _fmt(len(heldout)) if heldout is not None else "—")
    largest = (max(plan.get("sizes") or [0]) if plan.get("sizes") else
               (int(subsets["size"].max()) if subsets is not None and len(subsets) else None))
    cols[4].metric("Largest subset", _fmt(largest) if largest else "—")
    if report is None:
        ui.missing_note(run, run.dir.curate_report, "Curation counts", "the curate stage")
    paired = plan.get("paired_draw")
    if paired:
        st.caption(
            "Paired draw (train.draw = paired): each curated subset is the raw subset of the same size "
            "(what a train.data = raw run with this held-out split trains on) without the records curation "
            "removed, topped up with the next kept records. Records that differ between the two, per size:"
        )
        rows = [{"seed": seed, "size": int(size), "records differing from the raw subset": n}
                for seed, sizes in paired["differing_records"].items() for size, n in sizes.items()]
        st.dataframe(pd.DataFrame(rows).astype(str), hide_index=True)


def _fmt(value) -> str:
    return "—" if value is None else f"{int(value):,}"


def sweep(run: RunData) -> None:
    st.subheader("Sweep cells")
    st.caption("One cell = one fine-tune: a method trained on a nested subset of a given size with a given seed. "
               "A cell is *running* while its folder exists without done.json or failed.json (training, or killed).")
    cells = run.cells()
    if cells.empty:
        ui.missing_note(run, run.dir.plan, "Sweep plan", "the sweep stage",
                        consequence="No fine-tuning cells to show yet.")
        return
    not_planned = run.not_planned()
    if not_planned:
        st.caption(f"{len(not_planned)} cell folders on disk are not in this run's plan any more (an earlier "
                   f"learning-rate grid or sizes, e.g. {', '.join(not_planned[:3])}): they are left out here and "
                   "in every comparison.")
    counts = cells["status"].value_counts()
    cols = st.columns(5)
    for col, status in zip(cols, CELL_STATUSES):
        col.metric(status.capitalize(), int(counts.get(status, 0)))
    total_wall = pd.to_numeric(cells["wall_seconds"], errors="coerce").sum()
    cols[4].metric("Training wall time", format_seconds(total_wall) or "—")
    done = int(counts.get("done", 0))
    st.progress(done / len(cells), text=f"{done} of {len(cells)} cells finished")
    st.plotly_chart(charts.status_grid_figure(cells), key="status_grid")
    _method_costs(cells)

    left, right = st.columns([2, 1])
    shown = left.multiselect("Show cells that are", list(CELL_STATUSES), default=list(CELL_STATUSES),
                             key="runs_status")
    methods = sorted(cells["method"].unique())
    # Keyed by run: another run has other methods, and a stale filter must not hide them.
    chosen = right.multiselect("Methods", methods, default=methods, key=f"runs_methods:{run.label}")
    table = cells[cells["status"].isin(shown) & cells["method"].isin(chosen)].copy()
    table["wall time"] = table["wall_seconds"].map(format_seconds)
    table["last activity"] = table["last_activity"].map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S UTC") if pd.notna(t) else "")
    table["weights MB"] = table["weights_bytes"] / 1e6
    columns = ["cell", "status", "method", "size", "seed", "wall time", "steps", "final loss", "tokens/s",
               "examples", "trainable params", "weights MB", "last activity", "error"]
    # a learning-rate grid (or a validation split): each cell's rate and validation loss beside its seed
    extra = [c for c in ("lr", "validation_loss") if c in table.columns and table[c].notna().any()]
    columns[5:5] = [c.replace("_", " ") for c in extra]
    table = table.rename(columns={"final_loss": "final loss", "tokens_per_second": "tokens/s",
                                  "train_examples": "examples", "trainable_parameters": "trainable params",
                                  "validation_loss": "validation loss"})
    styled = table[columns].style.map(_status_style, subset=["status"])
    st.dataframe(styled, hide_index=True, key="cells_table", placeholder="—", column_config={
        "steps": st.column_config.NumberColumn(format="%d"),
        "final loss": st.column_config.NumberColumn(format="%.4f"),
        "validation loss": st.column_config.NumberColumn(format="%.4f"),
        "lr": st.column_config.NumberColumn(format="%.0e"),
        "tokens/s": st.column_config.NumberColumn(format="%.0f"),
        "trainable params": st.column_config.NumberColumn(format="%d"),
        "weights MB": st.column_config.NumberColumn(format="%.2f"),
        "examples": st.column_config.NumberColumn(format="%d"),
        "error": st.column_config.TextColumn("error", width="large"),
    })
    failed = cells[cells["status"] == "failed"]
    if len(failed) and "failed" in shown:
        st.markdown(f"**Failed cells ({len(failed)})**: re-running the sweep retries them.")
        for row in failed.head(30).itertuples():
            with st.expander(ui.md(f"{row.cell}: {ui.preview(row.error, 120)}")):
                st.code(row.traceback or row.error, language="text")


def _method_costs(cells: pd.DataFrame) -> None:
    """What each method costs: trainable parameters, weights on disk and wall time (medians of done cells)."""
    done = cells[cells["status"] == "done"]
    if done.empty:
        return
    cost = done.groupby("method").agg(cells=("cell", "count"), trainable=("trainable_parameters", "median"),
                                      weights=("weights_bytes", "median"), wall=("wall_seconds", "median"))
    cost["weights MB"] = cost["weights"] / 1e6
    cost["wall time"] = cost["wall"].map(format_seconds)
    st.markdown("**Cost per method** (medians over done cells; merged cells have their own method)")
    st.dataframe(cost.reset_index()[["method", "cells", "trainable", "weights MB", "wall time"]].rename(
        columns={"trainable": "trainable params"}), hide_index=True, key="method_costs", column_config={
        "trainable params": st.column_config.NumberColumn(format="%d"),
        "weights MB": st.column_config.NumberColumn(format="%.2f"),
    })


def _status_style(status: str) -> str:
    color = STATUS_COLORS.get(status)
    return f"background-color: {color}; color: #111827" if color else ""


def export_panel(run: RunData) -> None:
    """Export the selected cell's weights or the curated data to a folder the user names.

    The only place the app writes, and only on a click, outside the run directory. Cards and
    paths are shown as plain text: they hold file names and data the app does not vouch for."""
    st.subheader("Export")
    st.caption("Write a cell's weights as a standard transformers or peft folder with a model card from this run "
               "(`curatune export`), or the curated records with a dataset card (`curatune export-data`).")
    cells = run.cells()
    done = sorted(cells.loc[cells["status"] == "done", "cell"]) if not cells.empty else []
    tab_model, tab_data = st.tabs(["Model", "Curated data"])
    with tab_model:
        if not done:
            st.info("No finished cell to export yet.")
        else:
            key = st.selectbox("Cell", done, key=f"export_cell:{run.label}")
            cell = CellInfo.from_dir(run.dir, *parse_cell_key(key))
            stage = st.radio("Weights", ["final", "early"], horizontal=True, key="export_stage")
            merge = cell.is_adapter and st.checkbox(
                "Merge the LoRA adapter into the base model (full weights)", key="export_merge")
            out = st.text_input("Folder to write", value=str(run.root.parent / "exports" / f"{run.label}-{key}"),
                                key="export_model_out")
            base = base_model_id(cell.base_model, cell.base_model_path)
            with st.expander("Model card that will be written (README.md)"):
                st.text(model_card(RunFacts.read(run.dir), cell, stage, base_model=base,
                                   adapter=cell.is_adapter and not merge, merged=merge))
            if st.button("Export model", key="export_model_go"):
                try:
                    with st.spinner("exporting"):
                        result = export_cell(run.dir, key, out, stage=stage, merge=merge)
                except CuratuneError as exc:
                    st.warning(f"Not exported: {exc}")
                else:
                    st.success(f"Wrote {result.kind} weights of {key} to the folder below.")
                    st.text(str(result.folder))
    with tab_data:
        if not run.dir.kept.exists():
            ui.missing_note(run, run.dir.kept, "Curated records", "the curate stage")
        else:
            fmt = st.radio("Format", list(DATA_FORMATS), horizontal=True, key="export_data_format")
            out = st.text_input("Folder to write", value=str(run.root.parent / "exports" / f"{run.label}-data"),
                                key="export_data_out")
            if st.button("Export curated data", key="export_data_go"):
                try:
                    result = export_data(run.dir, out, fmt=fmt)
                except CuratuneError as exc:
                    st.warning(f"Not exported: {exc}")
                else:
                    st.success(f"Wrote {result.records:,} curated records to the folder below.")
                    st.text(str(result.folder))


def configuration(run: RunData) -> None:
    st.subheader("Configuration")
    manifest = run.manifest()
    config_text = run.config_text()
    tab_config, tab_env = st.tabs(["config.yaml", "Environment and stages"])
    with tab_config:
        if config_text:
            st.code(config_text, language="yaml", height=420)
        elif manifest and manifest.get("config"):
            st.code(json.dumps(manifest["config"], indent=2), language="json", height=420)
        else:
            ui.missing_note(run, run.dir.config, "The resolved config", "any stage")
    with tab_env:
        if not manifest:
            ui.missing_note(run, run.dir.manifest, "The manifest", "any stage")
            return
        stages = manifest.get("stages") or {}
        if stages:
            st.dataframe(pd.DataFrame([{"stage": k, "started": (v or {}).get("started"),
                                        "finished": (v or {}).get("finished")} for k, v in stages.items()]),
                         hide_index=True)
        facts = {k: manifest.get(k) for k in ("created", "updated", "git_commit", "python", "platform")
                 if manifest.get(k)}
        st.json({**facts, "packages": manifest.get("packages") or {}}, expanded=False)


def render() -> None:
    ui.page_header("Runs", "What each run contains: its data counts, the sweep's cells and how they went, "
                           "and the configuration that produced it.")
    refs = ui.run_refs()
    if len(refs) > 1:
        st.subheader("Loaded runs")
        overview(refs)
    run = ui.require_run()
    st.header(ui.md(run.label))
    st.caption(ui.code(run.root))
    missing = [m for m in run.missing()]
    if missing:
        st.info("This run is partial; still missing: " + "; ".join(
            f"{m.what} ({ui.code(m.path.relative_to(run.root))}, from {m.produced_by})" for m in missing))
    data_counts(run)
    sweep(run)
    export_panel(run)
    configuration(run)


ui.guarded(render)
