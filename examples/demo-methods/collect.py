"""Tabulate the recorded run of examples/demo-methods and draw its learning-vs-forgetting plot.

    python examples/demo-methods/collect.py runs/demo-methods

Reads the run directory (done.json of every trained and merged cell, analysis.json) and prints a
Markdown table: per cell its method, size, trainable parameters, weight size, training time, the
task gain over the base model with its paired test, and the retention probe's KL (forgetting).
Writes docs/images/demo-methods-learning.svg: task gain against forgetting, one point per cell.
No plotting library is needed (the SVG is written by hand, like bench/setfit_real.py's).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from curatune.rundir import RunDir, list_cells, read_json  # noqa: E402

COLOURS = {"lora": "#2563eb", "ia3": "#16a34a", "prompt_tuning": "#9333ea", "dora": "#ea580c",
           "lora+ties": "#0891b2", "lora+scaled0.5": "#db2777"}


def rows(run: RunDir) -> list[dict]:
    analysis = read_json(run.root / "eval" / "analysis.json")
    final = {r["cell"]: r for r in analysis["learning_forgetting"] if r["stage"] == "final"}
    out = []
    for cell in list_cells(run):
        done = read_json(cell.path / "done.json") if (cell.path / "done.json").exists() else {}
        lf = final.get(cell.key)
        if lf is None:
            continue
        task = lf["significance"].get("task", {})
        out.append({
            "cell": cell.key, "method": cell.method, "size": cell.size,
            "trainable": done.get("trainable_parameters"), "mb": (done.get("weights_bytes") or 0) / 1e6,
            "train_s": done.get("train_seconds"), "gain": lf["task_gain"],  # points of the task's headline metric "metric": task.get("metric"),
            "interval": (task.get("ci_low"), task.get("ci_high")), "label": task.get("label"),
            "kl": lf["forgetting"].get("retention"),
        })
    return out


def table(data: list[dict]) -> str:
    lines = ["| cell | trainable parameters | weights MB | train s | task gain over base (points) | paired test | "
             "retention KL |", "|---|---:|---:|---:|---:|---|---:|"]
    for r in data:
        lo, hi = r["interval"]
        interval = "" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        trainable = "(merged)" if r["trainable"] is None else f"{r['trainable']:,}"
        train_s = "—" if r["train_s"] is None or "+" in r["method"] else f"{r['train_s']:.0f}"
        kl = "—" if r["kl"] is None else f"{r['kl']:.4f}"
        lines.append(f"| {r['cell']} | {trainable} | {r['mb']:.2f} | {train_s} | {r['gain']:+.1f}{interval} | "
                     f"{r['label']} | {kl} |")
    return "\n".join(lines)


def svg(data: list[dict], width: int = 560, height: int = 360) -> str:
    points = [r for r in data if r["kl"] is not None]
    left, right, top, bottom = 60, 150, 30, 50
    kl_max = max(r["kl"] for r in points) * 1.1 or 1.0
    gains = [r["gain"] for r in points] + [0.0]
    g_lo, g_hi = min(gains) - 2, max(gains) + 2

    def x(v: float) -> float:
        return left + (width - left - right) * v / kl_max

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - g_lo) / (g_hi - g_lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="18" font-size="13">Learning vs forgetting: demo data, SmolLM2-135M, final weights</text>',
             f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999" stroke-dasharray="4,3"/>',
             f'<text x="{left + 4}" y="{y(0) - 4:.1f}" fill="#666">base model</text>',
             f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
             'forgetting: retention probe KL to the base model (lower is better)</text>',
             f'<text x="14" y="{(top + height - bottom) / 2:.0f}" transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})" '
             'text-anchor="middle">task gain over base (field F1 points)</text>']
    for i in range(5):  # axis ticks
        kl, gain = kl_max * i / 4, g_lo + (g_hi - g_lo) * i / 4
        parts.append(f'<line x1="{x(kl):.1f}" x2="{x(kl):.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
                     f'<text x="{x(kl):.1f}" y="{height - bottom + 14}" text-anchor="middle">{kl:.3f}</text>'
                     f'<text x="{left - 6}" y="{y(gain) + 4:.1f}" text-anchor="end">{gain:.0f}</text>')
    placed: list[tuple[float, float]] = []  # label positions so far: nudge overlapping ones down
    for r in sorted(points, key=lambda r: -r["gain"]):
        colour = COLOURS.get(r["method"], "#444")
        lx, ly = x(r["kl"]) + 8, y(r["gain"]) + 4
        while any(abs(ly - py) < 12 and abs(lx - px) < 120 for px, py in placed):
            ly += 12
        placed.append((lx, ly))
        parts.append(f'<circle cx="{x(r["kl"]):.1f}" cy="{y(r["gain"]):.1f}" r="{4 if r["size"] < 100 else 6}" '
                     f'fill="{colour}"><title>{r["cell"]}: gain {r["gain"]:+.1f}, KL {r["kl"]:.4f}</title></circle>'
                     f'<text x="{lx:.1f}" y="{ly:.1f}" fill="{colour}">{r["cell"]}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main(run_dir: str) -> None:
    data = rows(RunDir(Path(run_dir)))
    print(table(data))
    out = REPO / "docs" / "images" / "demo-methods-learning.svg"
    out.write_text(svg(data) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    print(json.dumps({r["cell"]: round(r["gain"], 2) for r in data}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo-methods")
