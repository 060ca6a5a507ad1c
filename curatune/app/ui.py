"""Streamlit pieces every page shares: the run picker, error guard, and "what is missing" notes."""
from __future__ import annotations

import html
import logging
import re
import traceback
from pathlib import Path
from typing import Callable

import streamlit as st

from curatune.app import data
from curatune.app.data import RunData, RunRef
from curatune.errors import CuratuneError

log = logging.getLogger("curatune.app")

RUN_KEY = "run"
COMPARE_KEY = "compare"
NO_COMPARISON = "(none)"


def run_refs() -> list[RunRef]:
    """The runs handed over by `curatune app` (cheap: a few stat calls and cached manifests)."""
    return data.discover_runs(data.paths_from_env())


def sidebar(refs: list[RunRef]) -> None:
    """Run picker (every page) and comparison picker (saturation and learning pages).

    The choice is mirrored in the URL (``?run=...&compare=...``), so a view can be bookmarked
    or shared with someone who has the same runs.
    """
    labels = [r.label for r in refs]
    with st.sidebar:
        if not refs:
            st.caption("No run loaded.")
            return
        params = st.query_params
        if st.session_state.get(RUN_KEY) not in labels:
            st.session_state[RUN_KEY] = params.get(RUN_KEY) if params.get(RUN_KEY) in labels else labels[0]
        st.selectbox("Run", labels, key=RUN_KEY, help="The run every page shows.")
        others = [NO_COMPARISON] + [label for label in labels if label != st.session_state[RUN_KEY]]
        if st.session_state.get(COMPARE_KEY) not in others:
            wanted = params.get(COMPARE_KEY)
            st.session_state[COMPARE_KEY] = wanted if wanted in others else NO_COMPARISON
        st.selectbox(
            "Compare with", others, key=COMPARE_KEY, disabled=len(others) == 1,
            help="A second run drawn beside the first on the Saturation and Learning vs forgetting pages, "
            "e.g. curated vs raw data at the same sizes.",
        )
        if st.button("Reload files", icon=":material/refresh:", help="Pick up files a running stage wrote since."):
            st.rerun()
        st.caption("Files are re-read when they change; reload to see a running sweep progress.")
    params[RUN_KEY] = st.session_state[RUN_KEY]
    if st.session_state[COMPARE_KEY] != NO_COMPARISON:
        params[COMPARE_KEY] = st.session_state[COMPARE_KEY]
    elif COMPARE_KEY in params:
        del params[COMPARE_KEY]


def _selected(key: str) -> RunData | None:
    refs = {r.label: r for r in run_refs()}
    ref = refs.get(st.session_state.get(key) or "")
    if ref is None and key == RUN_KEY and refs:
        ref = next(iter(refs.values()))
    return RunData(ref.path, ref.label) if ref else None


def current_run() -> RunData | None:
    return _selected(RUN_KEY)


def comparison_run() -> RunData | None:
    run = _selected(COMPARE_KEY)
    current = current_run()
    return None if run is None or (current is not None and run.root == current.root) else run


def require_run() -> RunData:
    """The selected run, or a clear explanation and stop when there is none or it is not a run."""
    run = current_run()
    if run is None:
        st.info(
            "No run directory loaded. Start the app with one or more runs, or a folder of runs:\n\n"
            "```\ncuratune app runs/demo\ncuratune app runs/   # every run inside\n```"
        )
        st.stop()
    if not run.root.exists():
        st.error(f"{code(run.root)} does not exist (was it moved or deleted?).")
        st.stop()
    if run.is_foreign():
        show_foreign(run)
        st.stop()
    return run


def show_foreign(run: RunData) -> None:
    empty = run.root.is_dir() and not any(run.root.iterdir())
    what = "is empty" if empty else "is not a curatune run directory"
    lines = "\n".join(f"- {code(m.path.relative_to(run.root))}: {m.what}, written by {m.produced_by}" for m in run.missing())
    st.warning(
        f"{code(run.root)} {what}: none of the files a run writes are there.\n\n{lines}\n\n"
        "Create a run with `curatune run CONFIG` (or try `curatune demo`), then point `curatune app` at "
        "the `run_dir` from its config."
    )


def missing_note(run: RunData, path: Path, what: str, produced_by: str, *, consequence: str = "") -> None:
    """Say which file a page needs and which stage writes it."""
    try:
        shown = path.relative_to(run.root)
    except ValueError:
        shown = path
    st.info(
        f"**{what}**: not available yet for run *{md(run.label)}*. {code(shown)} is missing; it is written by "
        f"{produced_by}. {consequence}".strip()
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def md(value: object) -> str:
    """Data (a reason, category, source, file path, run name) as literal text inside Markdown:
    every Markdown character escaped, so that an image link in a record is shown, not fetched."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


def code(value: object) -> str:
    """Data as an inline code span, safe even when it holds backticks."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def page_header(title: str, explanation: str) -> None:
    st.title(title)
    st.caption(explanation)


def analysis_notes(analysis: dict | None) -> None:
    """The analysis step's warnings (too few sizes, failed fits, ...) in a collapsed list."""
    notes = data.analysis_warnings(analysis)
    if notes:
        with st.expander(f"Analysis notes ({len(notes)})"):
            for note in notes:
                st.markdown(f"- {md(note)}")


def guarded(render: Callable[[], None]) -> None:
    """Run a page; turn any error into a message on the page, never a traceback."""
    try:
        render()
    except CuratuneError as exc:
        st.error(f"Cannot show this page: {exc}")
    except Exception as exc:  # a bug or an unexpected file; the terminal gets the traceback
        log.error("page failed:\n%s", traceback.format_exc())
        st.error(
            f"This page could not be drawn: {type(exc).__name__}: {exc}. "
            "The full traceback is in the terminal running `curatune app`; other pages still work."
        )


def text_box(text: str, *, html_body: str | None = None) -> None:
    """Text in a bordered, wrapped, monospace box; ``html_body`` must already be escaped."""
    body = html_body if html_body is not None else html.escape(text or "")
    st.html(f'<div class="ct-diff">{body or "<span class=ct-muted>(empty)</span>"}</div>')


def preview(text: str, limit: int = 90) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table_height(rows: int, limit: int = 900) -> int:
    """Pixel height that shows every row of a st.dataframe (35 px a row plus the header), up to ``limit``."""
    return min(limit, 35 * (rows + 1) + 3)
