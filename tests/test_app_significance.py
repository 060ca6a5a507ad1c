"""The Learning page's paired tests against the base model and its two-cell comparison."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app_fixture import build_run

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from curatune.app.data import RUNS_ENV  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "curatune" / "app" / "main.py")


def test_learning_page_shows_verdicts_and_compares_two_cells(monkeypatch, tmp_path):
    build_run(tmp_path / "curated", name="curated")
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(tmp_path / "curated")]))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/learning.py").run()
    assert not at.exception and not at.error
    assert "Paired tests against the base model" in [s.value for s in at.subheader]
    verdicts = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    # The synthetic task outputs are placeholders (they do not reproduce the scores): cannot tell;
    # the 0/1 benchmarks get McNemar's test; KL against the base model is not tested.
    assert set(verdicts.loc[verdicts["suite"] == "task", "verdict"]) == {"cannot tell"}
    assert set(verdicts.loc[verdicts["suite"] == "arc_easy", "test"]) == {"mcnemar_exact"}
    assert set(verdicts.loc[verdicts["suite"] == "retention", "verdict"]) == {"not tested"}
    assert "Methods against full at each size" in [s.value for s in at.subheader]
    methods = next(d.value for d in at.dataframe if "verdict for the method" in d.value.columns)
    assert set(methods["method"]) == {"lora"} and set(methods["vs"]) == {"full"}
    # the fixture's LoRA drifts a quarter as far as full fine-tuning; its task texts are placeholders
    assert set(methods.loc[methods["suite"] == "retention", "verdict for the method"]) == {"significant gain"}
    assert set(methods.loc[methods["suite"] == "task", "verdict for the method"]) == {"cannot tell"}
    assert dict(zip(methods["size"], methods["seeds"])) == {"50": "2", "100": "2", "200": "2", "400": "1"}
    at.selectbox(key="lf_cmp_a").set_value("full-n400-s0").run()
    at.selectbox(key="lf_cmp_b").set_value("lora-n400-s0").run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "verdict for B" in d.value.columns)
    retention = table[table["suite"] == "retention"].iloc[0]
    assert retention["test"] == "paired_bootstrap" and retention["verdict for B"] == "significant gain"


def test_runs_page_shows_the_paired_draw(monkeypatch, tmp_path):
    from curatune.rundir import RunDir, atomic_write_json, read_json

    build_run(tmp_path / "paired", name="paired")
    run = RunDir(tmp_path / "paired")
    plan = read_json(run.plan)
    plan["paired_draw"] = {"raw_pool_size": 500, "not_in_raw": 0,
                           "differing_records": {"0": {"50": 9, "100": 17}}}
    atomic_write_json(run.plan, plan)
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(run.root)]))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "records differing from the raw subset" in d.value.columns)
    assert table["records differing from the raw subset"].tolist() == ["9", "17"]
