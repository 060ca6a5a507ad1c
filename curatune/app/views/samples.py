"""Samples page: per example, the input, reference, base output and fine-tuned outputs by size."""
from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from curatune.app import ui
from curatune.app.data import RunData, analysis_suites, metric_columns, samples_table
from curatune.app.diffview import word_diff_html
from curatune.app.style import method_color

PICKER_LIMIT = 500
OUTCOMES = ("all examples", "improved over base", "worse than base", "unchanged")


def choose(files: pd.DataFrame, suites_info: dict) -> tuple[str, str, str, int]:
    c1, c2, c3, c4 = st.columns(4)
    suites = sorted(files["suite"].unique())
    task = [s for s in suites_info.get("task") or [] if s in suites]
    suite = c1.selectbox("Suite", suites, index=suites.index(task[0]) if task else 0, key="smp_suite")
    tuned = files[(files["suite"] == suite) & (files["cell"] != "base")]
    if tuned.empty:
        return suite, "", "", 0
    stages = sorted(tuned["stage"].unique(), key=lambda s: (s != "final", s))
    stage = c2.selectbox("Checkpoint", stages, key="smp_stage")
    methods = sorted(tuned.loc[tuned["stage"] == stage, "method"].unique())
    method = c3.selectbox("Method", methods, key="smp_method")
    seeds = sorted(tuned.loc[(tuned["stage"] == stage) & (tuned["method"] == method), "seed"].unique())
    seed = c4.selectbox("Seed", seeds, key="smp_seed")
    return suite, stage, method, int(seed)


def load_parts(run: RunData, files: pd.DataFrame, suite: str, stage: str, method: str, seed: int) -> dict:
    parts: dict[str, pd.DataFrame] = {}
    base = files[(files["suite"] == suite) & (files["cell"] == "base")]
    if len(base):
        parts["base"] = run.samples(base.iloc[0]["path"])
    cells = files[(files["suite"] == suite) & (files["stage"] == stage) & (files["method"] == method)
                  & (files["seed"] == seed)].sort_values("size")
    for row in cells.itertuples():
        parts[f"n{row.size}"] = run.samples(row.path)
    return {k: v for k, v in parts.items() if v is not None}


def outcome_mask(table: pd.DataFrame, metric: str, labels: list[str], outcome: str,
                 lower_is_better: bool = False) -> pd.Series:
    """Compare the largest fine-tuned size with the base model on one per-example metric."""
    tuned = [label for label in labels if label != "base"]
    if outcome == OUTCOMES[0] or "base" not in labels or not tuned:
        return pd.Series(True, index=table.index)
    base, last = table.get(f"{metric}[base]"), table.get(f"{metric}[{tuned[-1]}]")
    if base is None or last is None:
        return pd.Series(True, index=table.index)
    if lower_is_better:
        base, last = -base, -last
    if outcome == OUTCOMES[1]:
        return last > base
    if outcome == OUTCOMES[2]:
        return last < base
    return last == base


def show_example(row: pd.Series, labels: list[str], metrics: list[str], metric: str, method: str,
                 highlight: bool) -> None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Input**")
        ui.text_box(row["prompt"])
    with right:
        st.markdown("**Reference**")
        ui.text_box(row["reference"])
    st.markdown("**Outputs** " + ("(words not in the reference are highlighted)" if highlight else ""))
    per_row = 4
    for start in range(0, len(labels), per_row):
        cols = st.columns(per_row)
        for col, label in zip(cols, labels[start:start + per_row]):
            output = row.get(f"output[{label}]")
            scores = " · ".join(
                f"{m} {row[f'{m}[{label}]']:.3g}" for m in metrics
                if f"{m}[{label}]" in row and pd.notna(row[f"{m}[{label}]"])
            )
            color = method_color("base" if label == "base" else method)
            name = "base model" if label == "base" else f"{method} · {label}"
            with col.container(border=True):
                st.html(f'<div style="font-weight:600;color:{color}">{html.escape(name)}</div>'
                        f'<div class="ct-muted">{html.escape(scores) or "no metrics"}</div>')
                if output is None or (isinstance(output, float) and pd.isna(output)):
                    st.caption("No output for this example.")
                elif highlight:
                    ui.text_box(str(output), html_body=word_diff_html(str(row["reference"]), str(output))[1])
                else:
                    ui.text_box(str(output))


def render() -> None:
    ui.page_header("Samples", "What the models actually wrote: each evaluated example with its reference, the base "
                              "model's output and the fine-tuned outputs at each subset size, with per-example scores.")
    run = ui.require_run()
    files = run.sample_files()
    if files.empty:
        ui.missing_note(run, run.dir.samples, "Per-example outputs", "the evaluate stage")
        return
    suites_info = analysis_suites(run.analysis())
    suite, stage, method, seed = choose(files, suites_info)
    if not method:
        st.info(f"Only base-model outputs exist for {suite} so far; fine-tuned outputs appear once cells are evaluated.")
    parts = load_parts(run, files, suite, stage, method, seed)
    if not parts:
        st.info("No readable sample files for this choice.")
        return
    metrics = sorted({m for frame in parts.values() for m in metric_columns(frame)})
    labels = list(parts)
    table = samples_table(parts, metrics)

    c1, c2, c3 = st.columns([3, 2, 2])
    query = c1.text_input("Search input, reference or outputs", key="smp_search")
    primary = (suites_info.get("primary_metrics") or {}).get(suite)
    metric = c2.selectbox("Metric", metrics, index=metrics.index(primary) if primary in metrics else 0,
                          key="smp_metric") if metrics else None
    outcome = c3.selectbox("Largest size vs base", OUTCOMES, key="smp_outcome",
                           disabled=metric is None or "base" not in labels)
    mask = pd.Series(True, index=table.index)
    if query:
        text_columns = ["example_id", "prompt", "reference"] + [f"output[{label}]" for label in labels]
        haystack = table[[c for c in text_columns if c in table.columns]].fillna("").astype(str).agg(" ".join, axis=1)
        mask &= haystack.str.lower().str.contains(query.lower(), regex=False)
    if metric:
        lower = (suites_info.get("directions") or {}).get(metric) == "lower"
        mask &= outcome_mask(table, metric, labels, outcome, lower_is_better=lower).fillna(False)
    shown = table[mask]
    st.caption(f"{len(shown):,} of {len(table):,} examples match.")
    if shown.empty:
        return
    overview = pd.DataFrame({"example": shown["example_id"].astype(str),
                             "input": shown["prompt"].map(lambda t: ui.preview(t, 80))})
    if metric:
        for label in labels:
            column = f"{metric}[{label}]"
            if column in shown.columns:
                overview[label] = shown[column].to_numpy()
    st.dataframe(overview, hide_index=True, height=260, key="samples_table",
                 column_config={label: st.column_config.NumberColumn(format="%.3f") for label in labels})
    options = list(shown.index[:PICKER_LIMIT])
    pick = st.selectbox("Example", options, key="smp_pick",
                        format_func=lambda i: f"{table.at[i, 'example_id']} · {ui.preview(table.at[i, 'prompt'], 70)}")
    highlight = st.toggle("Highlight differences from the reference", value=True, key="smp_highlight")
    if pick is not None:
        show_example(table.loc[pick], labels, metrics, metric, method, highlight)


ui.guarded(render)
