"""Streamlit entry point of `curatune app` (run folders arrive in $CURATUNE_APP_RUNS)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from curatune.app import ui
from curatune.app.style import CSS

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="curatune", page_icon=":material/tune:", layout="wide")
st.html(CSS)

pages = [
    st.Page(VIEWS / "runs.py", title="Runs", icon=":material/table_view:", default=True),
    st.Page(VIEWS / "curation.py", title="Curation", icon=":material/filter_alt:"),
    st.Page(VIEWS / "audit.py", title="Audit", icon=":material/fact_check:"),
    st.Page(VIEWS / "saturation.py", title="Saturation", icon=":material/show_chart:"),
    st.Page(VIEWS / "learning.py", title="Learning vs forgetting", icon=":material/balance:"),
    st.Page(VIEWS / "samples.py", title="Samples", icon=":material/chat:"),
]
navigation = st.navigation(pages)
with st.sidebar:
    st.markdown("### curatune")
ui.sidebar(ui.run_refs())
navigation.run()
