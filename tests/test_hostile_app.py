"""The app shows data (reasons, details, categories, sources, run names, errors) as text:
Markdown in a record must never become an image the browser fetches or a link."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from app_fixture import build_run

from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record
from curatune.rundir import RunDir, atomic_write_parquet

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from curatune.app.data import RUNS_ENV  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "curatune" / "app" / "main.py")
IMAGE = "![pixel](http://127.0.0.1:9/track.png)"
LINK = "[click](http://127.0.0.1:9/)"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("app-hostile") / "run"
    build_run(root, name="markdown")
    run = RunDir(root)
    record = Record.make([{"role": "user", "content": f"question {IMAGE}"}, {"role": "assistant", "content": "a"}],
                         category=f"**bold** {IMAGE}", source=f"{LINK}:3")
    row = record.to_row()
    row.update(step=f"quality {IMAGE}", reason=f"too_short {IMAGE}", detail=f"detail {LINK} {IMAGE}",
               duplicate_of=None, cluster_id=None)
    removed = pd.read_parquet(run.removed)
    extra = pd.DataFrame([row], columns=RECORD_COLUMNS + LEDGER_COLUMNS)
    atomic_write_parquet(run.removed, pd.concat([removed, extra], ignore_index=True))
    return root, record.id


def _markdown_sources(at: AppTest) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "info", "warning", "header", "subheader")
            for e in getattr(at, kind)]


def test_removed_record_fields_render_as_text(monkeypatch, hostile_run):
    root, record_id = hostile_run
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(root)]))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("views/curation.py").run()
    at.text_input(key="removed_search").input(record_id).run()
    assert not at.exception, [e.value for e in at.exception]
    sources = _markdown_sources(at)
    shown = [s for s in sources if "pixel" in s]
    assert len(shown) >= 2, sources  # reason/step/detail line and the category/source caption
    for source in shown:
        outside_code = re.sub(r"(`+).*?\1", "", source)  # a code span shows its text literally
        assert "![" not in outside_code and "](http" not in outside_code, source
    assert any(r"\!\[pixel\]" in s for s in shown)
