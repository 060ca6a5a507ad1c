"""Look and feel shared by every page: one colour per method everywhere, run line styles, CSS."""
from __future__ import annotations

import zlib

#: Fixed colours for the methods curatune ships, so a method looks the same on every page.
METHOD_COLORS = {
    "base": "#6b7280",
    "lora": "#2563eb",
    "qlora": "#7c3aed",
    "dora": "#0891b2",
    "full": "#ea580c",
}
#: Further methods get a colour from this palette, chosen by a stable hash of the name.
EXTRA_PALETTE = ("#059669", "#db2777", "#ca8a04", "#4f46e5", "#65a30d", "#dc2626", "#0d9488", "#9333ea")

#: How the primary run and the comparison run differ in charts (colour stays the method's).
RUN_STYLES = (
    {"dash": "solid", "symbol": "circle"},
    {"dash": "dot", "symbol": "diamond"},
)

#: Light backgrounds for cell statuses in tables; the status grid uses the strong versions.
STATUS_COLORS = {"done": "#dcfce7", "running": "#fef3c7", "failed": "#fee2e2", "pending": "#f3f4f6"}

CSS = """
<style>
.ct-diff { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85rem;
           white-space: pre-wrap; word-break: break-word; line-height: 1.45;
           border: 1px solid rgba(128,128,128,.25); border-radius: .4rem; padding: .6rem .75rem; }
.ct-diff del { background: rgba(239, 68, 68, .22); color: inherit; text-decoration: line-through; }
.ct-diff ins { background: rgba(34, 197, 94, .25); color: inherit; text-decoration: none; }
.ct-muted { color: rgba(128,128,128,.95); font-size: .85rem; }
.ct-diff mark { background: #fde047; color: #111827; border-radius: .15rem; padding: 0 .1rem; }
.ct-long { max-height: 26rem; overflow-y: auto; }
.ct-msg { margin: .35rem 0 .6rem 0; }
.ct-role { font-size: .8rem; font-weight: 600; margin-bottom: .15rem; color: #1d4ed8; }
.ct-role.assistant { color: #047857; }
.ct-role .ct-flag { color: #b45309; margin-left: .6rem; }
.ct-cut .ct-diff { opacity: .55; border-style: dashed; }
.ct-cut .ct-role { color: #b91c1c; }
.ct-meta { font-size: .85rem; line-height: 1.5; white-space: pre-wrap; word-break: break-word; }
</style>
"""


def method_color(method: str) -> str:
    method = str(method)
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return EXTRA_PALETTE[zlib.crc32(method.encode("utf-8")) % len(EXTRA_PALETTE)]


def with_alpha(hex_color: str, alpha: float) -> str:
    """'#rrggbb' -> 'rgba(r,g,b,alpha)' for translucent bands."""
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:  # None or NaN
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
