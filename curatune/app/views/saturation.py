"""Saturation page: the metric against subset size, fitted curves and where more data stops helping."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from curatune.app import charts, ui
from curatune.app.data import (
    RunData,
    analysis_suites,
    compared_cells,
    early_vs_final_frame,
    saturation_frame,
)


def choose(scores: pd.DataFrame, suites_info: dict) -> tuple[str, str, str]:
    """Suite, metric and checkpoint pickers; defaults: the task suite and its primary metric."""
    tuned = scores[scores["stage"] != "base"]
    suites = sorted(tuned["suite"].astype(str).unique())
    task = [s for s in suites_info.get("task") or [] if s in suites]
    c1, c2, c3 = st.columns(3)
    suite = c1.selectbox("Suite", suites, index=suites.index(task[0]) if task else 0, key="sat_suite",
                         help="Task suites measure what fine-tuning teaches; general suites measure forgetting.")
    metrics = sorted(tuned.loc[tuned["suite"] == suite, "metric"].astype(str).unique())
    primary = (suites_info.get("primary_metrics") or {}).get(suite)
    metric = c2.selectbox("Metric", metrics, index=metrics.index(primary) if primary in metrics else 0,
                          key="sat_metric")
    stages = sorted(tuned["stage"].astype(str).unique(), key=lambda s: (s != "final", s))
    stage = c3.selectbox("Checkpoint", stages, key="sat_stage",
                         help="final: end of training; early: the checkpoint saved part-way through.")
    return suite, metric, stage


def run_input(run: RunData, suite: str, metric: str, stage: str, style: int) -> charts.SaturationInput | None:
    scores = run.scores()
    if scores is None:
        return None
    sel = scores[(scores["suite"] == suite) & (scores["metric"] == metric)]
    sel = sel[compared_cells(run.analysis(), sel["cell"])]  # a learning-rate grid: the selected rates
    points = sel[sel["stage"] == stage][["method", "size", "seed", "value"]]
    if points.empty:
        return None
    base = sel.loc[sel["stage"] == "base", "value"]
    fits = saturation_frame(run.analysis())
    fits = fits[(fits["suite"] == suite) & (fits["metric"] == metric)]
    curves = run.saturation_curves()
    if curves is not None:
        curves = curves[(curves["suite"] == suite) & (curves["metric"] == metric)]
    if stage != "final":  # fits describe the final checkpoints
        fits, curves = fits.iloc[0:0], None
    return charts.SaturationInput(
        label=run.label, points=points, base_value=float(base.mean()) if len(base) else None,
        curves=curves, fits=fits, style=style,
    )


def fit_table(run: RunData, suite: str, metric: str) -> None:
    fits = saturation_frame(run.analysis())
    fits = fits[(fits["suite"] == suite) & (fits["metric"] == metric)]
    if fits.empty:
        return
    st.markdown(f"**Fitted curves**: {ui.md(run.label)}")
    table = pd.DataFrame({
        "method": fits["method"],
        "curve": [f if isinstance(f, str) and f else (m or "") for f, m in zip(fits["formula"], fits["model"])],
        "R²": pd.to_numeric(fits["r2"], errors="coerce"),
        "saturation point (95% interval)": [_point_text(r) for r in fits.to_dict("records")],
        "epsilon": fits["epsilon_text"].fillna(""),
        "sizes worse than base": fits["worse_than_base_sizes"].map(lambda v: ", ".join(map(str, _as_list(v)))),
        "status": fits["status"].fillna(""),
        "note": fits["note"].fillna(""),
    })
    st.dataframe(table, hide_index=True, column_config={"R²": st.column_config.NumberColumn(format="%.3f"),
                                                         "note": st.column_config.TextColumn(width="large")})
    for row in fits.to_dict("records"):
        confident = _as_list(row.get("worse_than_base_confident"))
        sizes = confident or _as_list(row.get("worse_than_base_sizes"))
        if sizes:
            sure = " (the bootstrap interval agrees)" if confident else ""
            st.warning(f"**{row['method']}** at size {', '.join(str(s) for s in sizes)} scores worse than the base "
                       f"model on {suite} / {metric}{sure}: too little data can hurt.")


def _point_text(row: dict) -> str:
    """The analysis's verdict in words (rounded to what its interval supports); analysis.json
    written before verdicts existed shows the point and its interval."""
    text = row.get("saturation_text")
    if isinstance(text, str) and text:
        return text
    point = row.get("saturation_point")
    if point is None or (isinstance(point, float) and np.isnan(point)):
        return "not reached" if row.get("status") in ("ok", None) else "—"
    text = f"{float(point):,.0f}"
    lo, hi = row.get("saturation_point_lo"), row.get("saturation_point_hi")
    if lo is not None or hi is not None:
        text += f" (interval {_num(lo)} – {_num(hi)})"
    if row.get("saturation_extrapolated"):
        text += ", beyond the largest size"
    return text


def _num(value) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "not reached"
    return f"{value:,.0f}" if np.isfinite(value) else "not reached"


def early_vs_final(run: RunData) -> None:
    table = early_vs_final_frame(run.analysis())
    if table.empty:
        return
    st.subheader("Can early checkpoints pick the winner?")
    st.caption("Rank agreement between the early and final checkpoints of the same cells: a high Spearman "
               "correlation means a cheaper, shorter sweep would rank cells the same way.")
    columns = [c for c in ("suite", "metric", "primary", "n_cells", "spearman", "p_value", "top_k_overlap",
                           "reason") if c in table.columns]
    st.dataframe(table[columns].fillna(""), hide_index=True, column_config={
        "spearman": st.column_config.NumberColumn("Spearman ρ", format="%.3f"),
        "p_value": st.column_config.NumberColumn("p", format="%.2g"),
        "top_k_overlap": st.column_config.NumberColumn("top-k overlap", format="%.2f"),
    })


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return []


def comparison_table(inputs: list[charts.SaturationInput], metric: str) -> None:
    frames = []
    for item in inputs:
        mean = item.points.groupby(["method", "size"])["value"].mean().rename(item.label)
        frames.append(mean)
    table = pd.concat(frames, axis=1).reset_index()
    a, b = inputs[0].label, inputs[1].label
    table[f"{a} − {b}"] = table[a] - table[b]
    st.markdown(f"**{metric} by size, seeds averaged**: {a} vs {b}")
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.4f") for c in (a, b, f"{a} − {b}")})


def render() -> None:
    ui.page_header(
        "Saturation",
        "How the score grows with the number of training examples. Lines are the mean over seeds, the shaded "
        "band spans the seeds, dashed lines are the fitted curves, a ★ marks the saturation point (where "
        "doubling the data is predicted to add less than the configured epsilon; hollow when it lies beyond "
        "the largest trained size; no star when the data cannot place it), and the grey line is the base "
        "model before fine-tuning. The table says what the bootstrap interval allows one to conclude.",
    )
    run = ui.require_run()
    scores = run.scores()
    if scores is None:
        ui.missing_note(run, run.dir.scores, "Evaluation scores", "the evaluate stage",
                        consequence="The chart appears as soon as the first cell is evaluated.")
        return
    if scores[scores["stage"] != "base"].empty:
        st.info("Only the base model has been evaluated so far; the chart appears as soon as the first "
                "fine-tuned cell is evaluated.")
        return
    analysis = run.analysis()
    suites_info = analysis_suites(analysis)
    suite, metric, stage = choose(scores, suites_info)
    direction = (suites_info.get("directions") or {}).get(metric)
    if direction == "lower":
        st.caption(f"Lower **{metric}** is better.")
    c1, c2, c3, c4 = st.columns(4)
    show_band = c1.checkbox("Seed range band", value=True, key="sat_band")
    show_fit = c2.checkbox("Fitted curves", value=True, key="sat_fit")
    show_ci = c3.checkbox("Fit confidence band", value=False, key="sat_ci")
    log_x = c4.checkbox("Log size axis", value=True, key="sat_log")

    inputs = [i for i in [run_input(run, suite, metric, stage, 0)] if i is not None]
    other = ui.comparison_run()
    if other is not None:
        extra = run_input(other, suite, metric, stage, 1)
        if extra is None:
            st.info(f"Run *{ui.md(other.label)}* has no {stage} scores for {ui.md(suite)} / {ui.md(metric)} to compare.")
        else:
            inputs.append(extra)
    if not inputs:
        st.info(f"No {stage} scores for {suite} / {metric} yet.")
        return
    if analysis is None:
        ui.missing_note(run, run.dir.analysis, "The saturation fit", "the analysis step of the evaluate stage",
                        consequence="Showing measured scores only.")
    elif stage != "final":
        st.caption("Fitted curves and saturation points describe the final checkpoints; switch to *final* to see them.")
    fig = charts.saturation_figure(inputs, metric=metric, show_band=show_band, show_fit=show_fit,
                                   show_ci=show_ci, log_x=log_x)
    st.plotly_chart(fig, key="saturation_chart")
    fit_table(run, suite, metric)
    if len(inputs) == 2:
        fit_table(other, suite, metric)
        comparison_table(inputs, metric)
    early_vs_final(run)
    ui.analysis_notes(analysis)


ui.guarded(render)
