"""The Streamlit app (`curatune app RUN_DIR ...`): browse runs, curation, saturation, learning vs forgetting, samples.

Pages live in ``views/`` and only render; :mod:`curatune.app.data` reads the run
directory (cached), :mod:`curatune.app.charts` builds the Plotly figures.
"""
