"""Learning vs forgetting page: what each cell gained on the task against what it lost elsewhere."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from curatune.app import charts, ui
from curatune.app.data import (
    RunData,
    frontier_x_column,
    learning_forgetting_frame,
    pareto_points,
    prefixed_columns,
)
from curatune.errors import CuratuneError
from curatune.evaluate.analysis.lr_selection import (
    by_suite,
    criterion_label,
    criterion_title,
    loss_rule_text,
    margin_text,
    mean_score,
    selected_text,
)
from curatune.evaluate.compare import (
    compare_run_cells,
    compare_runs,
    differing_records,
    interval_text,
    per_seed_text,
)
from curatune.evaluate.metrics import COMET_LIKE_NOTE
from curatune.rundir import format_lr

TASK_GAIN, GENERAL_DROP = "task_gain", "general_drop"
OVERALL_Y = "task gain (points)"
OVERALL_X = "general drop (points)"


def _after(column: str, prefix: str) -> str:
    return column[len(prefix) + 1:]


def axis_options(frame: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """{label: column} for the y (learning) and x (forgetting) axes, overall first."""
    ys = {OVERALL_Y: TASK_GAIN} if TASK_GAIN in frame.columns else {}
    for column in prefixed_columns(frame, "learning"):
        ys[f"gain on {_after(column, 'learning').replace('.', ' · ')}"] = column
    # Without benchmark suites (the retention probe alone) there is no points average to show.
    has_drop = GENERAL_DROP in frame.columns and frame[GENERAL_DROP].notna().any()
    xs = {OVERALL_X: GENERAL_DROP} if has_drop else {}
    for column in prefixed_columns(frame, "forgetting"):
        suite = _after(column, "forgetting")
        metric = frame.get(f"forgetting_metric.{suite}")
        metric = next((str(m) for m in metric.dropna()), "") if metric is not None else ""
        xs[f"drop on {suite}" + (f" · {metric}" if metric else "")] = column
    return ys, xs


def stage_rows(frame: pd.DataFrame, stage: str | None) -> pd.DataFrame:
    if stage is None or "stage" not in frame.columns:
        return frame
    return frame[frame["stage"].astype(str) == stage]


def frontier_of(run: RunData, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The frontier analysis.json marks, as x (its forgetting axis) and y (task gain) points."""
    points = pareto_points(run.analysis())
    front = points[points["on_frontier"]]
    if front.empty:
        return None
    x = frontier_x_column(points)
    if front["task_gain"].notna().any() and x in front.columns:
        front = front.dropna(subset=["task_gain", x])
        label = ["base model" if m == "base" else f"{m} n{int(s)} (seed mean)"
                 for m, s in zip(front["method"], front["size"].fillna(0))]
        return pd.DataFrame({"x": front[x], "y": front["task_gain"], "label": label})
    hits = rows[rows["cell"].astype(str).isin(set(front["cell"].astype(str)))]  # a list of cell keys
    return pd.DataFrame({"x": hits[GENERAL_DROP], "y": hits[TASK_GAIN], "label": hits["cell"]}) if len(hits) else None


def learning_input(run: RunData, stage: str | None, x: str, y: str, style: int, overall: bool,
                   hover: list[str]) -> charts.LearningInput | None:
    frame = learning_forgetting_frame(run.analysis())
    if frame.empty or x not in frame.columns or y not in frame.columns:
        return None
    rows = stage_rows(frame, stage)
    points = rows.assign(x=rows[x], y=rows[y])
    for column in hover:
        if column not in points.columns:
            points[column] = None
        points[column] = points[column].map(_short)
    # The stored frontier is for the final checkpoints on the overall axes.
    front = frontier_of(run, rows) if overall and stage in (None, "final") else None
    return charts.LearningInput(label=run.label, points=points, frontier=front, style=style, hover=hover)


def _short(value) -> str:
    if isinstance(value, float):
        return "" if pd.isna(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def render() -> None:
    ui.page_header(
        "Learning vs forgetting",
        "Each point is one fine-tuned cell (method × subset size × seed). Up: it learned the task (gain over the "
        "base model on the task suites). Right: it forgot more (drop from the base model on the general suites). "
        "Gains and drops are in points (0-100 scale) so suites can be averaged. The best cells sit top-left; the "
        "black line is the Pareto frontier: the seed-averaged choices no other choice beats on both at once. "
        "The base model sits at (0, 0), since not fine-tuning is a choice too.",
    )
    run = ui.require_run()
    analysis = run.analysis()
    lr_selection_section(analysis)
    frame = learning_forgetting_frame(analysis)
    if analysis is None or frame.empty:
        ui.missing_note(run, run.dir.analysis, "Learning vs forgetting", "the analysis step of the evaluate stage",
                        consequence=("The analysis has no learning/forgetting rows yet (no fine-tuned cell with "
                                     "base-model scores to compare)." if analysis is not None
                                     else "It is computed once cells are evaluated."))
        return
    ys, xs = axis_options(frame)
    if not ys or not xs:
        st.warning(f"{run.dir.analysis}: the learning_forgetting rows carry no task gain or no general drop.")
        return
    c1, c2, c3 = st.columns(3)
    stages = sorted(frame["stage"].astype(str).unique(), key=lambda s: (s != "final", s)) if "stage" in frame else []
    stage = c1.selectbox("Checkpoint", stages, key="lf_stage") if stages else None
    y_label = c2.selectbox("Learning measured by", list(ys), key="lf_y",
                           help="Drill down: one task metric, in its own units, instead of the points average.")
    x_label = c3.selectbox("Forgetting measured on", list(xs), key="lf_x",
                           help="Drill down: one general suite, in its metric's units, instead of the average.")
    x, y = xs[x_label], ys[y_label]
    if "comet_like" in y_label:
        st.caption(COMET_LIKE_NOTE)
    points = pareto_points(analysis)
    frontier_x = frontier_x_column(points)
    overall = x == frontier_x and y == TASK_GAIN
    rows = stage_rows(frame, stage)
    show_labels = st.checkbox("Label points with their subset size", value=len(rows) <= 80, key="lf_labels")
    hover = ["stage"] if "stage" in frame.columns else []
    hover += prefixed_columns(frame, "forgetting")

    inputs = [i for i in [learning_input(run, stage, x, y, 0, overall, hover)] if i is not None]
    other = ui.comparison_run()
    if other is not None:
        extra = learning_input(other, stage, x, y, 1, overall, hover)
        if extra is None:
            st.info(f"Run *{ui.md(other.label)}* has no learning vs forgetting rows with {x_label} / {y_label} to compare.")
        else:
            inputs.append(extra)
    fig = charts.learning_forgetting_figure(inputs, x_title=x_label, y_title=y_label, show_labels=show_labels)
    st.plotly_chart(fig, key="lf_chart")
    if not overall or stage not in (None, "final"):
        frontier_label = next((label for label, column in xs.items() if column == frontier_x), OVERALL_X)
        st.caption("The Pareto frontier is computed for final checkpoints on "
                   f"{OVERALL_Y} vs {frontier_label}; pick those to see it.")

    if points["task_gain"].notna().any():
        with st.expander("Seed means and the frontier (final checkpoints)"):
            columns = ["method", "size", "n_seeds", *(["lr"] if "lr" in points and points["lr"].notna().any() else []),
                       "task_gain", "general_drop"]
            columns += [frontier_x] if frontier_x != GENERAL_DROP and frontier_x in points.columns else []
            table = points[columns + ["on_frontier"]]
            st.dataframe(table, hide_index=True, column_config={
                "task_gain": st.column_config.NumberColumn("task gain", format="%.3f"),
                "general_drop": st.column_config.NumberColumn("general drop", format="%.3f"),
                "on_frontier": st.column_config.CheckboxColumn("on frontier"),
            })

    drops = prefixed_columns(rows, "forgetting")
    if drops:
        st.subheader("Forgetting per general suite" + (f": {ui.md(run.label)}" if other is not None else ""))
        st.caption("Drop from the base model on each general suite's primary metric, seeds averaged; red = worse "
                   "than the base model, blue = better. Colour is scaled per suite (their units differ); the "
                   "numbers are in each metric's own units. Pick one suite above to put it on the chart's x axis.")
        names = []
        for column in drops:
            suite = _after(column, "forgetting")
            metric = rows.get(f"forgetting_metric.{suite}")
            metric = next((str(m) for m in metric.dropna()), "") if metric is not None else ""
            names.append(f"{suite} · {metric}" if metric else suite)
        st.plotly_chart(charts.forgetting_heatmap(rows, drops, names), key="lf_heatmap")
    gains = prefixed_columns(rows, "learning")
    if gains:
        with st.expander("Gain per task metric (seeds averaged, each metric's own units)"):
            table = rows.groupby(["method", "size"])[gains].mean().reset_index()
            st.dataframe(table.rename(columns={c: _after(c, "learning") for c in gains}), hide_index=True)
            if any("comet_like" in c for c in gains):
                st.caption(COMET_LIKE_NOTE)
    significance_table(analysis, stage)
    method_comparison_table(analysis)
    compare_cells_section(run, frame, stage)
    if other is not None:
        compare_runs_section(run, other, stage)
    ui.analysis_notes(analysis)


def lr_selection_tables(analysis: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(selected rate per method and size, every grid cell with its scores); empty without a grid."""
    selection = (analysis or {}).get("lr_selection") or {}
    if not selection.get("active"):
        return pd.DataFrame(), pd.DataFrame()
    label, on_suite = criterion_label(selection), by_suite(selection)
    chosen = pd.DataFrame([{
        "method": c["method"], "size": c["size"], "selected lr": selected_text(c),
        f"mean {label}": mean_score(c), "seeds": c["n_seeds"],
        "lead over the runner-up": margin_text(c),
        "every rate: mean": "  ".join(f"{format_lr(o['lr'])}: {mean_score(o):.4f}"
                                      + ("" if o["complete"] else " (incomplete)") for o in c["candidates"]),
        **({"validation loss would pick": loss_rule_text(c)} if on_suite else {}),
    } for c in selection.get("selected") or []])
    cells = pd.DataFrame(selection.get("cells") or [])
    if not cells.empty:
        cells["lr"] = cells["lr"].map(format_lr)
        # the validation-loss criterion's score is the loss column itself; a suite criterion keeps its own column
        drop = ["awaiting_score"] + (["score"] if not on_suite else [])
        cells = cells.drop(columns=[c for c in drop if c in cells.columns]).rename(columns={"score": label})
    return chosen, cells


def lr_selection_section(analysis: dict | None) -> None:
    chosen, cells = lr_selection_tables(analysis)
    if chosen.empty and cells.empty:
        return
    selection = analysis["lr_selection"]
    label = criterion_label(selection)
    st.subheader("Selected learning rates")
    st.caption(f"The run trained a learning-rate grid (train.learning_rates). Per method and size the rate with the "
               f"{criterion_title(selection)} over seeds is selected (validation split carved from the training pool; a tie "
               "goes to the smaller rate; evaluate.analysis.lr_select_by). 'Lead over the runner-up': by how much it "
               "beats the next rate, in mean and per seed; 'seeds disagree' means some seed alone prefers the "
               "runner-up, so the choice is within seed noise. Everything below (points, frontier, tests, cell "
               "comparison) uses the selected rate's cells only; the other cells are listed here.")
    if not chosen.empty:
        st.dataframe(chosen, hide_index=True)
        st.plotly_chart(charts.lr_grid_figure(selection), key="lr_grid")
        st.caption(f"The selection criterion ({label}) against the learning rate: the line joins each rate's mean over "
                   "the seeds (faded dots: the seeds; an open circle: a rate with fewer seeds measured, not "
                   "compared), the star is the selected rate. A star at a panel's edge means the best rate may lie "
                   "beyond the grid.")
    if not cells.empty:
        finished = cells["status"].isin(["done", "failed"])
        with st.expander(f"Every grid cell ({int((finished & cells['selected']).sum())} selected, "
                         f"{int((finished & ~cells['selected']).sum())} of other rates, {int((~finished).sum())} "
                         "not finished)"):
            st.dataframe(cells, hide_index=True, column_config={
                "validation_loss": st.column_config.NumberColumn("validation loss", format="%.4f"),
                "selected": st.column_config.CheckboxColumn("selected")})


def significance_rows(analysis: dict, stage: str | None) -> pd.DataFrame:
    """One text row per (cell, suite): difference from the base model [interval], p, label."""
    rows = []
    for row in (analysis or {}).get("learning_forgetting") or []:
        if stage is not None and row.get("stage") != stage:
            continue
        for suite, entry in (row.get("significance") or {}).items():
            rows.append({
                "cell": row["cell"], "stage": row["stage"], "suite": suite, "metric": entry.get("metric"),
                "difference [CI]": interval_text(entry), "test": entry.get("test") or "",
                "p": "" if entry.get("p_value") is None else f"{entry['p_value']:.3g}",
                "p adjusted": "" if entry.get("p_adjusted") is None else f"{entry['p_adjusted']:.3g}",
                "verdict": entry.get("label") or "", "why": entry.get("reason") or "",
            })
    return pd.DataFrame(rows)


def significance_table(analysis: dict, stage: str | None) -> None:
    table = significance_rows(analysis, stage)
    if table.empty:
        return
    summary = analysis.get("significance") or {}
    st.subheader("Paired tests against the base model")
    st.caption(
        "Each cell's headline metric per suite against the base model on the same items: the difference "
        "(cell - base, in the metric's units) with its interval, the p-value adjusted over all "
        f"{summary.get('family_size', '?')} tests of the run ({summary.get('fdr', '?')}) and a verdict: "
        "significant gain, significant loss, no detectable change, or cannot tell (items differ, samples missing). "
        "The intervals are not adjusted for the many tests: one that just excludes 0 can still be 'no "
        "detectable change'."
    )
    labels = sorted(table["verdict"].unique())
    chosen = st.multiselect("Show verdicts", labels, default=labels, key="lf_sig_labels")
    st.dataframe(table[table["verdict"].isin(chosen)].astype(str), hide_index=True)


def method_comparison_rows(analysis: dict | None) -> pd.DataFrame:
    """One text row per (method, size, suite): the method against the reference method, seeds pooled."""
    methods = (analysis or {}).get("method_comparison") or {}
    return pd.DataFrame([{
        "method": e["method_b"], "vs": e["method_a"], "size": e["size"], "seeds": len(e["seeds"]),
        **({"lr": f"{format_lr(e['lr_b'])} vs {format_lr(e['lr_a'])}"
                  + (" (provisional)" if e.get("provisional") else "")} if e.get("lr_b") is not None
           and e.get("lr_a") is not None else {}),
        "suite": e["suite"], "metric": e.get("metric"),
        "reference value": "" if e.get("value_a") is None else f"{e['value_a']:.4g}",
        "method value": "" if e.get("value_b") is None else f"{e['value_b']:.4g}",
        "difference [CI]": interval_text(e), "per seed": per_seed_text(e),
        "p adjusted": "" if e.get("p_adjusted") is None else f"{e['p_adjusted']:.3g}",
        "verdict for the method": e.get("label") or "", "why": e.get("reason") or "",
    } for e in methods.get("entries") or []])


def method_comparison_table(analysis: dict | None) -> None:
    table = method_comparison_rows(analysis)
    if table.empty:
        return
    reference = analysis["method_comparison"]["reference"]
    st.subheader(f"Methods against {reference} at each size")
    st.caption(
        f"Each method against {reference} at every size both trained (final checkpoints; with a learning-rate "
        "grid, each at its selected rate): both methods' seeds pooled, items paired, p-values adjusted over all "
        "rows together. The difference is method - reference in the metric's units; for KL and other "
        "lower-is-better metrics a significant gain means lower. 'per seed' shows whether the seeds agree. "
        "Intervals are not adjusted: one that just excludes 0 can still be 'no detectable change'. "
        "'(provisional)': a rate or seed of that size is still training, so the selected rate and the row may change."
    )
    st.dataframe(table.astype(str), hide_index=True)
    checks = runner_up_check_rows(analysis)
    if not checks.empty:
        st.markdown("**Doubtful learning-rate choices: the same comparison at the runner-up rate**")
        st.caption("Where the validation loss cannot tell a method's two best rates apart (some seed prefers the "
                   "runner-up, or a tie), the comparison is run again with the runner-up's cells, on the suites "
                   "they were scored on (p-values adjusted over that redone family). 'verdict changes' = the "
                   "conclusion about the methods at that size depends on a choice the validation loss cannot make.")
        st.dataframe(checks.astype(str), hide_index=True)


def runner_up_check_rows(analysis: dict | None) -> pd.DataFrame:
    """One text row per runner-up check (analysis.json method_comparison.runner_up_checks)."""
    checks = ((analysis or {}).get("method_comparison") or {}).get("runner_up_checks") or []
    return pd.DataFrame([{
        "method": e["method_b"], "vs": e["method_a"], "size": e["size"], "seeds": len(e["seeds"]),
        "swapped": f"{e['swapped']}: {format_lr(e['lr_a'] if e['method_a'] == e['swapped'] else e['lr_b'])} for "
                   f"{format_lr(e['selected_lr'])} ({e['agreement']})",
        "suite": e["suite"], "metric": e.get("metric"),
        "difference [CI] at the runner-up": interval_text(e), "verdict at the runner-up": e.get("label") or "",
        "verdict at the selected rate": e.get("label_at_selected") or "",
        "verdict changes": {True: "yes", False: "no", None: "?"}[e.get("verdict_changes")],
    } for e in checks])


def compare_cells_section(run, frame: pd.DataFrame, stage: str | None) -> None:
    cells = sorted(frame["cell"].astype(str).unique()) if "cell" in frame.columns else []
    if len(cells) < 1:
        return
    st.subheader("Compare two cells")
    st.caption("Paired tests of cell B against cell A (or the base model) on every suite, as "
               "`curatune compare RUN_DIR A B` prints them.")
    c1, c2 = st.columns(2)
    options = ["base", *cells]
    cell_a = c1.selectbox("Cell A (reference)", options, index=0, key="lf_cmp_a")
    cell_b = c2.selectbox("Cell B", options, index=min(1, len(options) - 1), key="lf_cmp_b")
    if cell_a == cell_b:
        st.info("Pick two different cells.")
        return
    try:
        result = compare_run_cells(run.dir.root, cell_a, cell_b, stage if stage in ("early", "final") else "final")
    except CuratuneError as exc:
        st.warning(str(exc))
        return
    table = pd.DataFrame([{
        "suite": e["suite"], "metric": e["metric"], cell_a: "" if e["value_a"] is None else f"{e['value_a']:.4g}",
        cell_b: "" if e["value_b"] is None else f"{e['value_b']:.4g}", "difference B - A [CI]": interval_text(e),
        "test": e["test"] or "", "p adjusted": "" if e["p_adjusted"] is None else f"{e['p_adjusted']:.3g}",
        "verdict for B": e["label"], "why": e.get("reason") or "",
    } for e in result["suites"]])
    st.dataframe(table.astype(str), hide_index=True)


def compare_runs_section(run, other, stage: str | None) -> None:
    """The compared run's cells against this run's, paired, as `curatune compare-runs` prints them."""
    st.subheader(f"{ui.md(other.label)} vs {ui.md(run.label)}: paired tests")
    st.caption(f"For every method and size both runs trained: *{ui.md(other.label)}* (B) against "
               f"*{ui.md(run.label)}* (A) on every suite, seeds pooled, items paired by id (both runs must be "
               "scored on the same held-out items), p-values adjusted over all rows. The interval resamples items "
               "with the trained models fixed; 'per seed' shows whether the seeds agree. 'records differing': per "
               "seed, records in which the two training subsets of that size differ (train.draw: paired). "
               "`curatune compare-runs A B` prints the same.")
    try:
        result = compare_runs(run.dir.root, other.dir.root, stage if stage in ("early", "final") else "final")
    except CuratuneError as exc:
        st.info(str(exc))
        return
    for note in result["notes"]:
        st.warning(note)
    table = pd.DataFrame([{
        "method": e["method"], "size": e["size"], "suite": e["suite"], "metric": e["metric"],
        "A": "" if e["value_a"] is None else f"{e['value_a']:.4g}",
        "B": "" if e["value_b"] is None else f"{e['value_b']:.4g}", "difference B - A [CI]": interval_text(e),
        "per seed": per_seed_text(e),
        "p adjusted": "" if e["p_adjusted"] is None else f"{e['p_adjusted']:.3g}", "verdict for B": e["label"],
        "records differing": differing_records(result, e["size"], e["seeds"]), "why": e.get("reason") or "",
    } for e in result["entries"]])
    st.dataframe(table.astype(str), hide_index=True)


ui.guarded(render)
