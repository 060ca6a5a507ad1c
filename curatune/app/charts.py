"""Plotly figures for the app's pages: pure functions of data frames, no Streamlit.

Colours come from :func:`curatune.app.style.method_color`, so a method has one colour on
every chart; a comparison run keeps the colour and changes the line dash and marker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale, unlabel_rgb
from plotly.subplots import make_subplots

from curatune.app.style import RUN_STYLES, method_color, with_alpha
from curatune.evaluate.analysis.lr_selection import criterion_label, mean_score
from curatune.rundir import cell_key, format_lr

TEMPLATE = "plotly_white"
BASE_COLOR = "#6b7280"
FRONTIER_COLOR = "#111827"


def _layout(fig: go.Figure, *, height: int = 460, **kwargs) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE, height=height, margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02),
        hoverlabel=dict(namelength=-1), **kwargs,
    )
    return fig


# ----------------------------------------------------------------------------- curation


def funnel_figure(report: dict) -> go.Figure:
    """Records left after each curation step, starting from the input."""
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict) and s.get("enabled", True) is not False]
    labels = ["input"] + [str(s.get("name", f"step {i + 1}")) for i, s in enumerate(steps)]
    values = [report.get("input_records", steps[0].get("input") if steps else 0)]
    values += [s.get("kept", 0) for s in steps]
    fig = go.Figure(go.Funnel(
        y=labels, x=values, textinfo="value+percent initial",
        marker=dict(color=["#94a3b8"] + ["#2563eb"] * len(steps)),
        connector=dict(line=dict(color="#cbd5e1", width=1)),
    ))
    return _layout(fig, height=max(260, 60 * len(labels)), showlegend=False)


def reasons_figure(removed_by_reason: dict) -> go.Figure:
    items = sorted(((str(k), int(v)) for k, v in (removed_by_reason or {}).items()), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(
        x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
        marker_color="#ef4444", text=[v for _, v in items], textposition="outside",
    ))
    fig.update_xaxes(title="records removed")
    return _layout(fig, height=max(240, 38 * len(items) + 80), showlegend=False)


def categories_figure(before: dict, after: dict, *, share: bool) -> go.Figure:
    """Category balance before and after curation, as counts or shares of the total."""
    cats = sorted(set(before or {}) | set(after or {}), key=lambda c: -float((before or {}).get(c, 0)))
    fig = go.Figure()
    for name, counts, color in (("before", before or {}, "#94a3b8"), ("after", after or {}, "#2563eb")):
        values = np.array([float(counts.get(c, 0)) for c in cats])
        total = values.sum() or 1.0
        y = values / total * 100 if share else values
        fig.add_bar(
            x=[str(c) for c in cats], y=y, name=f"{name} curation", marker_color=color,
            text=[f"{v:.1f}%" if share else f"{int(v)}" for v in y], textposition="outside",
        )
    fig.update_yaxes(title="share of records (%)" if share else "records")
    return _layout(fig, height=380, barmode="group")


# ----------------------------------------------------------------------------- runs


STATUS_CODES = {"pending": 0, "failed": 1, "running": 2, "done": 3}
STATUS_COLORS = ["#e5e7eb", "#ef4444", "#f59e0b", "#22c55e"]


def status_grid_figure(cells: pd.DataFrame) -> go.Figure:
    """One square per cell: rows method × seed, columns subset size, colour = status."""
    rows = sorted({(m, s) for m, s in zip(cells["method"], cells["seed"])})
    sizes = sorted(set(int(n) for n in cells["size"]))
    index = {(m, int(n), int(s)): r for m, n, s, r in zip(cells["method"], cells["size"], cells["seed"],
                                                          cells.to_dict("records"))}
    z, text = [], []
    for method, seed in rows:
        z_row, t_row = [], []
        for size in sizes:
            row = index.get((method, size, int(seed)))
            status = row["status"] if row else None
            z_row.append(STATUS_CODES.get(status, np.nan) if status else np.nan)
            t_row.append(f"{cell_key(method, size, seed)}: {status}" if status else "not planned")
        z.append(z_row)
        text.append(t_row)
    n = len(STATUS_COLORS)
    scale = []
    for i, color in enumerate(STATUS_COLORS):
        scale += [(i / n, color), ((i + 1) / n, color)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"n{s}" for s in sizes], y=[f"{m} · seed {s}" for m, s in rows],
        text=text, hovertemplate="%{text}<extra></extra>", colorscale=scale, zmin=-0.5, zmax=n - 0.5,
        xgap=3, ygap=3, showscale=False,
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=min(900, max(160, 34 * len(rows) + 70)), showlegend=False)


def lr_grid_figure(selection: dict) -> go.Figure:
    """The selection criterion (validation loss, or a task metric on the validation split) against the
    learning rate (log axis), one panel per method, one line per subset size.

    ``selection`` is analysis.json's ``lr_selection``. The line joins each rate's mean over the seeds
    (the number the rule compares); small faded markers are the seeds, a star the selected rate. A
    star at a panel's edge is a rate at the end of the grid: the criterion may improve beyond it.
    """
    choices = selection.get("selected") or []
    cells = pd.DataFrame(selection.get("cells") or [])
    label = criterion_label(selection)
    # each cell's criterion value: "score" (analysis.json before lr_select_by had the loss only)
    column = "score" if "score" in cells.columns else "validation_loss"
    methods = sorted({c["method"] for c in choices})
    sizes = sorted({int(c["size"]) for c in choices})
    palette = _size_colors(len(sizes))
    fig = make_subplots(rows=1, cols=max(1, len(methods)), shared_yaxes=True, subplot_titles=methods,
                        horizontal_spacing=0.06)
    in_legend: set[str] = set()  # each size once, from the first panel that has it (a size may be one method's only)
    for col, method in enumerate(methods, start=1):
        for size, color in zip(sizes, palette):
            choice = next((c for c in choices if c["method"] == method and int(c["size"]) == size), None)
            if choice is None:
                continue
            means = sorted((o["lr"], mean_score(o), o["complete"]) for o in choice["candidates"])
            name = f"n{size}"
            fig.add_scatter(
                x=[m[0] for m in means], y=[m[1] for m in means], mode="lines+markers", name=name,
                legendgroup=name, showlegend=name not in in_legend, line=dict(color=color, width=2),
                marker=dict(color=color, size=7, symbol=["circle" if m[2] else "circle-open" for m in means]),
                customdata=[[format_lr(m[0]), "" if m[2] else " (fewer seeds: not compared)"] for m in means],
                hovertemplate=(f"<b>{method} n{size}</b> lr %{{customdata[0]}}<br>mean {label} "
                               "%{y:.4f}%{customdata[1]}<extra></extra>"),
                row=1, col=col,
            )
            in_legend.add(name)
            if not cells.empty:
                seeds = cells[(cells["method"] == method) & (cells["size"] == size) & cells[column].notna()]
                fig.add_scatter(
                    x=seeds["lr"], y=seeds[column], mode="markers", name=f"{name} seeds",
                    legendgroup=name, showlegend=False, marker=dict(color=with_alpha(color, 0.45), size=5),
                    customdata=np.stack([seeds["cell"].astype(str)], axis=1) if len(seeds) else None,
                    hovertemplate="%{customdata[0]}: " + label + " %{y:.4f}<extra></extra>",
                    row=1, col=col,
                )
            fig.add_scatter(
                x=[choice["lr"]], y=[mean_score(choice)], mode="markers", name=f"{name} selected",
                legendgroup=name, showlegend=False,
                marker=dict(color=color, size=15, symbol="star", line=dict(color=FRONTIER_COLOR, width=1)),
                hovertemplate=(f"<b>{method} n{size}: selected {format_lr(choice['lr'])}</b>"
                               f"{' at the grid edge' if choice.get('at_grid_edge') else ''}<br>mean {label} "
                               "%{y:.4f}<extra></extra>"),
                row=1, col=col,
            )
        rates = sorted({r for c in choices if c["method"] == method for r in c.get("grid_rates") or []})
        fig.update_xaxes(type="log", title="learning rate", tickvals=rates, ticktext=[format_lr(r) for r in rates],
                         row=1, col=col)
    fig.update_yaxes(title="validation loss (nats per answer token)" if label == "validation loss" else label,
                     row=1, col=1)
    return _layout(fig, height=420, legend_title_text="subset size")


def _size_colors(n: int) -> list[str]:
    """``n`` '#rrggbb' colours from light to dark (small to large subset), readable on white."""
    shades = sample_colorscale("Viridis", [0.85 - 0.8 * i / max(1, n - 1) for i in range(n)]) if n else []
    return ["#" + "".join(f"{round(v):02x}" for v in unlabel_rgb(c)) for c in shades]


# ----------------------------------------------------------------------------- saturation


@dataclass
class SaturationInput:
    """One run's data for the saturation chart, already filtered to a suite and metric."""

    label: str
    points: pd.DataFrame                      # method, size, seed, value (fine-tuned cells only)
    base_value: float | None = None
    curves: pd.DataFrame | None = None        # method, size, fit, lo?, hi?
    fits: pd.DataFrame | None = None          # method, saturation_point, status
    style: int = 0


def saturation_figure(
    runs: list[SaturationInput], *, metric: str, show_band: bool = True, show_fit: bool = True,
    show_ci: bool = False, log_x: bool = True,
) -> go.Figure:
    fig = go.Figure()
    many = len(runs) > 1
    sizes: set[float] = set()
    for run in runs:
        style = RUN_STYLES[run.style % len(RUN_STYLES)]
        suffix = f" · {run.label}" if many else ""
        for method in sorted(run.points["method"].unique()):
            color = method_color(method)
            pts = run.points[run.points["method"] == method]
            agg = pts.groupby("size")["value"].agg(["mean", "min", "max", "count"]).sort_index()
            x = agg.index.to_numpy(dtype=float)
            sizes.update(x)
            group = f"{method}{suffix}"
            if show_band and (agg["count"] > 1).any():
                fig.add_scatter(
                    x=np.concatenate([x, x[::-1]]), y=np.concatenate([agg["max"], agg["min"][::-1]]),
                    fill="toself", fillcolor=with_alpha(color, 0.16), line=dict(width=0), mode="lines",
                    hoverinfo="skip", legendgroup=group, showlegend=False, name=f"{group} seed range",
                )
            fig.add_scatter(
                x=x, y=agg["mean"], mode="lines+markers", name=group, legendgroup=group,
                line=dict(color=color, width=2.5, dash=style["dash"]),
                marker=dict(symbol=style["symbol"], size=8, color=color),
                customdata=np.stack([agg["count"], agg["min"], agg["max"]], axis=1),
                hovertemplate=(f"<b>{group}</b><br>size %{{x}}<br>{metric} %{{y:.4f}}"
                               "<br>seeds %{customdata[0]} (min %{customdata[1]:.4f}, max %{customdata[2]:.4f})"
                               "<extra></extra>"),
            )
            curve = None
            if run.curves is not None and not run.curves.empty:
                curve = run.curves[run.curves["method"] == method].sort_values("size")
                if curve.empty:
                    curve = None
            if curve is not None and show_ci and {"lo", "hi"} <= set(curve.columns):
                cx = curve["size"].to_numpy(dtype=float)
                fig.add_scatter(
                    x=np.concatenate([cx, cx[::-1]]), y=np.concatenate([curve["hi"], curve["lo"][::-1]]),
                    fill="toself", fillcolor=with_alpha(color, 0.07), line=dict(width=0), mode="lines",
                    hoverinfo="skip", legendgroup=group, showlegend=False, name=f"{group} fit band",
                )
            if curve is not None and show_fit:
                fig.add_scatter(
                    x=curve["size"], y=curve["fit"], mode="lines", name=f"{group} fit", legendgroup=group,
                    line=dict(color=color, width=1.5, dash="dash"), opacity=0.85, showlegend=False,
                    hovertemplate=f"<b>{group} fit</b><br>size %{{x:.0f}}<br>{metric} %{{y:.4f}}<extra></extra>",
                )
            point, beyond = _saturation_point(run.fits, method)
            if point is not None:
                y = _value_at(point, curve, agg)
                where = " (extrapolated beyond the largest size)" if beyond else ""
                fig.add_scatter(
                    x=[point], y=[y], mode="markers+text", name=f"{group} saturation point", legendgroup=group,
                    marker=dict(symbol="star-open" if beyond else "star", size=17, color=color,
                                line=dict(color=color if beyond else "white", width=1.5)),
                    text=[f"≈{point:,.0f}"], textposition="top center", textfont=dict(color=color, size=11),
                    showlegend=False,
                    hovertemplate=f"<b>{group}</b> saturates at ≈ {point:,.0f} examples{where}<extra></extra>",
                )
                fig.add_vline(x=point, line=dict(color=color, width=1, dash="dot"), opacity=0.6)
        if run.base_value is not None and np.isfinite(run.base_value):
            fig.add_hline(
                y=run.base_value, line=dict(color=BASE_COLOR, width=1.5, dash=style["dash"] if many else "dash"),
                annotation_text=f"base model{suffix} {run.base_value:.3f}", annotation_position="bottom right",
                annotation_font_color=BASE_COLOR,
            )
    ticks = sorted(sizes)
    fig.update_xaxes(title="training examples" + (" (log scale)" if log_x else ""),
                     type="log" if log_x else "linear", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_yaxes(title=metric)
    return _layout(fig, height=500)


def _saturation_point(fits: pd.DataFrame | None, method: str) -> tuple[float | None, bool]:
    """(saturation point, whether it lies beyond the largest trained size) of a method's fit."""
    if fits is None or fits.empty or "saturation_point" not in fits.columns:
        return None, False
    for row in fits[fits["method"] == method].to_dict("records"):
        if row.get("saturation_verdict") in ("not determined", "not reached"):
            continue  # a star would place a point the data cannot place
        try:
            value = float(row["saturation_point"])
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value, bool(row.get("saturation_extrapolated") is True)
    return None, False


def _value_at(size: float, curve: pd.DataFrame | None, agg: pd.DataFrame) -> float:
    """Where to draw the saturation star: on the fitted curve, else on the measured means."""
    if curve is not None and len(curve) > 1:
        return float(np.interp(np.log(size), np.log(curve["size"].to_numpy(dtype=float)), curve["fit"]))
    x = agg.index.to_numpy(dtype=float)
    return float(np.interp(np.log(size), np.log(x), agg["mean"])) if len(x) else float("nan")


# ----------------------------------------------------------------------------- learning vs forgetting


@dataclass
class LearningInput:
    """One run's cells for the learning-vs-forgetting chart."""

    label: str
    points: pd.DataFrame                        # method, size, seed, cell, x, y (+ anything for hover)
    frontier: pd.DataFrame | None = None        # x, y of the Pareto frontier, in the same units
    style: int = 0
    hover: list[str] = field(default_factory=list)


def learning_forgetting_figure(
    runs: list[LearningInput], *, x_title: str, y_title: str, show_labels: bool = True,
) -> go.Figure:
    fig = go.Figure()
    many = len(runs) > 1
    fig.add_hline(y=0, line=dict(color="#9ca3af", width=1))
    fig.add_vline(x=0, line=dict(color="#9ca3af", width=1))
    for run in runs:
        style = RUN_STYLES[run.style % len(RUN_STYLES)]
        suffix = f" · {run.label}" if many else ""
        pts = run.points.dropna(subset=["x", "y"])
        if run.frontier is not None and len(run.frontier):
            front = run.frontier.sort_values(["x", "y"])
            fig.add_scatter(
                x=front["x"], y=front["y"], mode="lines+markers", name=f"Pareto frontier{suffix}",
                line=dict(color=FRONTIER_COLOR, width=1.5, dash="solid" if run.style == 0 else "dot"),
                marker=dict(size=13, symbol="circle-open", color=FRONTIER_COLOR, line=dict(width=1.5)),
                hovertext=front["label"] if "label" in front else None,
                hovertemplate=f"<b>%{{hovertext}}</b> on the frontier{suffix}<br>{x_title} %{{x:.4g}}"
                              f"<br>{y_title} %{{y:.4g}}<extra></extra>",
            )
        for method in sorted(pts["method"].astype(str).unique()):
            sub = pts[pts["method"].astype(str) == method]
            color = method_color(method)
            hover = "".join(f"<br>{c} %{{customdata[{i + 1}]}}" for i, c in enumerate(run.hover))
            custom = np.stack([sub["cell"].astype(str)] + [sub[c].astype(str) for c in run.hover], axis=1)
            fig.add_scatter(
                x=sub["x"], y=sub["y"], mode="markers+text" if show_labels else "markers",
                name=f"{method}{suffix}", text=[f"n{int(s)}" for s in sub["size"]],
                textposition="top center", textfont=dict(size=10, color=color),
                marker=dict(color=color, size=10, symbol=style["symbol"], line=dict(color="white", width=1),
                            opacity=0.9),
                customdata=custom,
                hovertemplate=(f"<b>%{{customdata[0]}}</b>{suffix}<br>{x_title} %{{x:.4f}}<br>"
                               f"{y_title} %{{y:.4f}}{hover}<extra></extra>"),
            )
    fig.add_scatter(
        x=[0], y=[0], mode="markers+text", name="base model", text=["base"], textposition="bottom right",
        marker=dict(symbol="x", size=11, color=BASE_COLOR), textfont=dict(color=BASE_COLOR, size=10),
        hovertemplate="<b>base model</b>: no gain, no drop by definition<extra></extra>",
    )
    fig.update_xaxes(title=f"{x_title}  →  more forgetting", zeroline=False)
    fig.update_yaxes(title=f"{y_title}  →  more learning", zeroline=False)
    return _layout(fig, height=520)


def forgetting_heatmap(frame: pd.DataFrame, columns: list[str], labels: list[str]) -> go.Figure:
    """Mean drop per general suite (columns) for each method × size (rows), seeds averaged.

    Suites have different units, so the colour of each column is scaled by that column's
    largest absolute drop; the cell text shows the value in the metric's own units.
    """
    grouped = frame.groupby(["method", "size"])[columns].mean().sort_index()
    y = [f"{m} · n{int(s)}" for m, s in grouped.index]
    values = grouped.to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.nanmax(np.abs(values), axis=0) if len(values) else np.ones(len(columns))
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        z = values / scale
    text = np.vectorize(_signed)(values) if values.size else values
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=y, colorscale="RdBu_r", zmid=0, zmin=-1, zmax=1, text=text, texttemplate="%{text}",
        customdata=values, hovertemplate="%{y}<br>%{x}: drop %{customdata:.4g}<extra></extra>", showscale=False,
        xgap=2, ygap=2,
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height=min(900, max(220, 28 * len(y) + 90)), showlegend=False)


def _signed(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return "0" if value == 0 else f"{value:+.3g}"
