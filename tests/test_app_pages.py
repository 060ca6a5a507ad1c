"""Every page of the app under streamlit's AppTest, on synthetic run directories.

Checks: no exception and no error box, the key elements are there, and widgets change
what is shown. Runs come from curatune.testing.fixture_run (see tests/app_fixture.py).
"""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_fixture import (
    add_audit_rows,
    add_tricky_removals,
    build_run,
    make_running,
)

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from curatune.app.data import RUNS_ENV  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "curatune" / "app" / "main.py")
PAGES = ("runs", "curation", "audit", "saturation", "learning", "samples")


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """A folder of three runs: complete 'curated', complete 'raw' (other seed), 'partial' sweep."""
    root = tmp_path_factory.mktemp("app-runs")
    build_run(root / "curated", name="curated")
    build_run(root / "raw", name="raw", seed=1)
    build_run(root / "partial", name="partial")
    make_running(root / "partial", running=["full-n400-s0", "lora-n400-s1"], pending=["full-n200-s1"])
    return root


@pytest.fixture(scope="session")
def tricky_ids(runs_root) -> dict[str, str]:
    return add_tricky_removals(runs_root / "curated")


def app(monkeypatch, *paths: Path, page: str | None = None, run: str | None = None) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(p) for p in paths]))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    if run is not None:
        at.selectbox(key="run").set_value(run).run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def figures(at: AppTest) -> list[dict]:
    return [_unpack(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")]


def _unpack(obj):
    """Plotly packs numeric arrays as {"bdata": base64, "dtype": ...}; give them back as lists."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            values = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
            shape = obj.get("shape")
            if isinstance(shape, str):
                shape = [int(n) for n in shape.split(",")]
            return values.reshape(shape).tolist() if shape else values.tolist()
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    return obj


def frame(at: AppTest, *columns: str):
    """The first table on the page with these columns (AppTest does not expose table keys)."""
    for table in at.dataframe:
        value = table.value
        value = getattr(value, "data", value)  # a pandas Styler
        if set(columns) <= set(value.columns):
            return value
    raise AssertionError(f"no table with columns {columns}")


def trace_names(figure: dict) -> list[str]:
    return [t.get("name") for t in figure["data"]]


def html_bodies(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.html]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


# ----------------------------------------------------------------------------- Runs


def test_runs_page_shows_counts_cells_and_config(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root / "curated")
    assert at.title[0].value == "Runs"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Input records"] == "460" and metrics["Kept"] == "440" and metrics["Removed"] == "20"
    assert metrics["Done"] == "15" and metrics["Failed"] == "1" and metrics["Held-out examples"] == "40"
    cells = frame(at, "cell", "wall time")
    assert len(cells) == 16 and "wall time" in cells.columns
    failed = cells[cells["status"] == "failed"]
    assert list(failed["cell"]) == ["full-n400-s1"] and "CUDA out of memory" in failed["error"].iloc[0]
    assert any("full-n400-s1" in e.label.replace("\\", "") for e in at.expander)  # labels are Markdown-escaped
    assert any("name: curated" in c.value for c in at.code)
    assert len(figures(at)) == 1  # the status grid

    at.multiselect(key="runs_status").set_value(["failed"]).run()
    assert list(frame(at, "cell", "wall time")["cell"]) == ["full-n400-s1"]
    at.multiselect(key="runs_status").set_value(["done", "failed"]).run()
    at.multiselect(key="runs_methods:curated").set_value(["lora"]).run()
    assert set(frame(at, "cell", "wall time")["method"]) == {"lora"}


def test_runs_page_partial_sweep_shows_running_and_pending(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root, run="partial")
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Running"], metrics["Pending"], metrics["Failed"], metrics["Done"]) == ("2", "1", "1", "12")
    cells = frame(at, "cell", "wall time").set_index("cell")
    assert cells.loc["full-n400-s0", "status"] == "running"
    assert cells.loc["full-n200-s1", "status"] == "pending"
    assert "analysis" in texts(at.info)  # says what the partial run still lacks
    overview = at.dataframe[0].value
    assert set(overview["run"]) == {"curated", "raw", "partial"}


# ----------------------------------------------------------------------------- Curation


def test_curation_page_funnel_reasons_categories(monkeypatch, runs_root, tricky_ids):
    at = app(monkeypatch, runs_root / "curated", page="curation")
    assert at.title[0].value == "Curation"
    figs = figures(at)
    assert figs[0]["data"][0]["type"] == "funnel" and figs[0]["data"][0]["x"] == [460, 455, 440]
    assert sorted(figs[1]["data"][0]["y"]) == sorted(["exact_duplicate", "near_duplicate", "empty_response",
                                                     "wrong_language"])
    assert figs[2]["layout"]["yaxis"]["title"]["text"] == "records"
    at.radio(key="category_scale").set_value("share of total").run()
    assert "share" in figures(at)[2]["layout"]["yaxis"]["title"]["text"]


def test_curation_browser_filters_and_shows_twin_diff(monkeypatch, runs_root, tricky_ids):
    at = app(monkeypatch, runs_root / "curated", page="curation")
    assert len(frame(at, "duplicate_of", "preview")) == 23
    at.multiselect(key="removed_reasons:curated").set_value(["wrong_language"]).run()
    shown = frame(at, "duplicate_of", "preview")
    assert set(shown["reason"]) == {"wrong_language"} and len(shown) == 2

    at.multiselect(key="removed_reasons:curated").set_value(["near_duplicate", "exact_duplicate"]).run()
    at.text_input(key="removed_search").input(tricky_ids["html"]).run()
    assert list(frame(at, "duplicate_of", "preview")["id"]) == [tricky_ids["html"]]
    bodies = [b for b in html_bodies(at) if "ct-diff" in b]
    removed_html = next(b for b in bodies if "script" in b)
    twin_html = next(b for b in bodies if "script" not in b and "<ins>" in b)
    assert "&lt;script&gt;" in removed_html and "<script>" not in removed_html  # escaped, never markup
    assert "<del>" in removed_html and "<ins>" in twin_html
    assert tricky_ids["twin_of_html"] in texts(at.markdown) and "(kept)" in texts(at.markdown)


def test_curation_browser_twin_removed_later_and_missing(monkeypatch, runs_root, tricky_ids):
    at = app(monkeypatch, runs_root / "curated", page="curation")
    at.text_input(key="removed_search").input(tricky_ids["twin_removed"]).run()
    assert "itself removed later: wrong_language" in texts(at.markdown)
    at.text_input(key="removed_search").input(tricky_ids["twin_missing"]).run()
    assert "in neither kept.parquet nor removed.parquet" in texts(at.warning)
    at.text_input(key="removed_search").input("no record has this text").run()
    assert "0 of 23" in texts(at.caption)


def test_curation_browser_names_the_evaluation_item_a_contaminated_record_leaks(monkeypatch, runs_root, tmp_path):
    run = tmp_path / "leaky"
    shutil.copytree(runs_root / "raw", run)
    removed = pd.read_parquet(run / "curate" / "removed.parquet")
    leak = removed.iloc[[0]].assign(id="leak0000", reason="contaminated", step="decontaminate",
                                    detail="84% n-gram overlap with eval item arc.jsonl:7:query",
                                    duplicate_of=None, eval_item="arc.jsonl:7:query")
    pd.concat([removed, leak], ignore_index=True).to_parquet(run / "curate" / "removed.parquet")
    at = app(monkeypatch, run, page="curation")
    table = frame(at, "eval_item", "preview")
    assert table.loc[table["id"] == "leak0000", "eval_item"].tolist() == ["arc.jsonl:7:query"]
    plain = app(monkeypatch, runs_root / "curated", page="curation")  # no contaminated rows: no such column
    assert "eval_item" not in frame(plain, "duplicate_of", "preview").columns


# ----------------------------------------------------------------------------- Audit


@pytest.fixture
def audit_run_dir(runs_root, tmp_path) -> tuple[Path, dict[str, str]]:
    """A private copy of a fixture run (the page writes labels) plus a trim row and an HTML-laden drop."""
    run = tmp_path / "audited"
    shutil.copytree(runs_root / "raw", run)
    return run, add_audit_rows(run)


def test_audit_page_labels_records_and_shows_precision(monkeypatch, audit_run_dir):
    from curatune.curate.audit import LabelStore
    from curatune.rundir import RunDir

    run, ids = audit_run_dir
    at = app(monkeypatch, run, page="audit")
    assert at.title[0].value == "Audit"
    rules = at.selectbox(key="audit_rule").options
    assert rules[-1].startswith("kept") and "truncated · 0 dropped, 1 trimmed · 0 labelled" in rules
    assert set(frame(at, "rule", "precision [95% CI]")["precision [95% CI]"]) == {"not audited"}
    assert at.selectbox(key="audit_rule").value == "exact_duplicate"  # the rule that removed most
    assert "**Its twin**" in texts(at.markdown) and "(kept)" in texts(at.markdown)
    assert any("<del>" in b or "<ins>" in b or "ct-diff" in b for b in html_bodies(at))

    at.selectbox(key="audit_rule").set_value("truncated").run()
    assert_clean(at)
    body = next(b for b in html_bodies(at) if "ct-msg" in b)
    assert "✂ cut from here by the trim" in body and "<mark>" in body and "ct-cut" in body
    assert "record 1 of 1" in texts(at.markdown).lower()
    at.text_input(key="audit_note").input("the answer was complete").run()
    at.button(key="audit_wrong").click().run()
    assert_clean(at)
    labels = LabelStore.of(RunDir(run)).load()
    assert [(k, v.verdict, v.note) for k, v in labels.items()] == [
        ((ids["trim"], "truncated"), "wrong", "the answer was complete")]
    assert "End of the sample" in texts(at.success)
    table = frame(at, "rule", "precision [95% CI]").set_index("rule")
    assert table.loc["truncated", "precision [95% CI]"] == "0.00 [0.00–0.79]"

    # Back to the record: the answer is shown; change it.
    at.button(key="audit_prev").click().run()
    assert any("labelled wrong" in b for b in html_bodies(at))
    at.button(key="audit_right").click().run()
    assert LabelStore.of(RunDir(run)).load()[(ids["trim"], "truncated")].verdict == "right"

    # Data is text, never markup: the HTML-laden record shows escaped.
    at.selectbox(key="audit_rule").set_value("boilerplate").run()
    body = next(b for b in html_bodies(at) if "ct-msg" in b)
    assert "<script>" not in body and "&lt;script&gt;" in body and "<mark>" in body
    at.button(key="audit_skip").click().run()
    assert len(LabelStore.of(RunDir(run)).load()) == 1  # skipping stores nothing

    # The kept sample: 60 by default (the fixture keeps more than that); label one right.
    at.selectbox(key="audit_rule").set_value("kept").run()
    assert "0 of 60 sampled records labelled" in at.get("progress")[0].proto.text
    at.text_input(key="audit_note").input("clean").run()
    at.button(key="audit_right").click().run()
    assert "1 of 60 sampled records labelled" in at.get("progress")[0].proto.text
    assert "record 2 of 60" in texts(at.markdown).lower()
    assert at.text_input(key="audit_note").value == ""  # the note does not carry over to the next record
    table = frame(at, "rule", "precision [95% CI]").set_index("rule")
    assert table.loc["kept: share clean", "labelled"] == "1 (1 clean)"

    # The Curation page now shows the audited rules.
    at.switch_page("views/curation.py").run()
    assert_clean(at)
    table = frame(at, "rule", "precision [95% CI]").set_index("rule")
    assert table.loc["truncated", "precision [95% CI]"] == "1.00 [0.21–1.00]"
    assert table.loc["exact_duplicate", "precision [95% CI]"] == "not audited"


def test_audit_page_says_when_an_answer_cannot_be_saved(monkeypatch, audit_run_dir):
    run, _ = audit_run_dir
    (run / "audit").write_text("a file where the labels folder should be")
    at = app(monkeypatch, run, page="audit")
    at.button(key="audit_right").click().run()
    assert not at.exception
    assert "The answer was not saved" in texts(at.error) and "labels.jsonl" in texts(at.error)
    assert "record 1 of 9" in texts(at.markdown).lower()  # still on the same record


def test_curation_page_says_not_audited(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root / "curated", page="curation")
    assert "Not audited" in texts(at.caption)


# ----------------------------------------------------------------------------- Saturation


def test_saturation_page_chart_and_widgets(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root / "curated", page="saturation")
    assert at.selectbox(key="sat_suite").value == "task"  # the task suite, from analysis.json
    assert at.selectbox(key="sat_metric").value == "chrf"  # its primary metric
    fig = figures(at)[0]
    names = trace_names(fig)
    assert {"full", "lora", "full fit", "lora fit", "full seed range"} <= set(names)
    # 50-400 examples cannot place chrF's saturation point: the table says so, and no star pretends to
    fits = at.dataframe[0].value
    verdicts = dict(zip(fits["method"], fits["saturation point (95% interval)"]))
    assert verdicts["lora"].startswith("not determined: anywhere from")
    assert "lora saturation point" not in names
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["title"]["text"] == "chrf"
    assert any(s.get("type") == "line" and s.get("y0") == s.get("y1") for s in fig["layout"]["shapes"])  # base
    assert "worse than the base" in texts(at.warning)  # full at n50, planted in the fixture
    assert "Spearman" in " ".join(at.dataframe[-1].value.columns) or len(at.dataframe) >= 2

    at.selectbox(key="sat_metric").set_value("ter").run()
    assert figures(at)[0]["layout"]["yaxis"]["title"]["text"] == "ter"
    # full's TER point lies past the largest size by the fitted curve alone: not determined, no star
    ter = dict(zip(at.dataframe[0].value["method"], at.dataframe[0].value["saturation point (95% interval)"]))
    assert "an extrapolation past the largest trained size" in ter["full"]
    assert "full saturation point" not in trace_names(figures(at)[0])
    assert "Lower **ter** is better" in texts(at.caption)
    at.checkbox(key="sat_fit").uncheck().run()
    at.checkbox(key="sat_band").uncheck().run()
    names = trace_names(figures(at)[0])
    assert "full fit" not in names and "full seed range" not in names and "full" in names
    at.checkbox(key="sat_log").uncheck().run()
    assert figures(at)[0]["layout"]["xaxis"]["type"] == "linear"
    at.selectbox(key="sat_suite").set_value("arc_easy").run()
    assert at.selectbox(key="sat_metric").options == ["acc", "acc_norm"]
    assert at.selectbox(key="sat_metric").value == "acc_norm"  # the old choice (ter) is gone: the primary metric
    assert figures(at)[0]["layout"]["yaxis"]["title"]["text"] == "acc_norm"


def test_saturation_page_compares_two_runs(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root, page="saturation")
    at.selectbox(key="compare").set_value("raw").run()
    assert_clean(at)
    names = trace_names(figures(at)[0])
    assert {"full · curated", "full · raw", "lora · curated", "lora · raw"} <= set(names)
    dashes = {t["name"]: t["line"]["dash"] for t in figures(at)[0]["data"] if t["name"] in ("lora · curated", "lora · raw")}
    assert dashes == {"lora · curated": "solid", "lora · raw": "dot"}
    table = at.dataframe[-2].value if "curated − raw" not in at.dataframe[-1].value else at.dataframe[-1].value
    assert {"curated", "raw", "curated − raw"} <= set(table.columns)


def test_saturation_page_partial_run_without_analysis(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root, run="partial", page="saturation")
    assert "**The saturation fit**: not available yet" in texts(at.info)
    names = trace_names(figures(at)[0])
    assert "full" in names and not any(n.endswith(" fit") for n in names)


# ----------------------------------------------------------------------------- Learning vs forgetting


def test_learning_page_points_frontier_and_drilldown(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root / "curated", page="learning")
    fig = figures(at)[0]
    by_name = {t["name"]: t for t in fig["data"]}
    assert len(by_name["full"]["x"]) == 7 and len(by_name["lora"]["x"]) == 8  # one point per final cell
    assert by_name["lora"]["text"][0].startswith("n")  # labelled by size
    assert by_name["lora"]["marker"]["color"] != by_name["full"]["marker"]["color"]
    assert "Pareto frontier" in by_name and len(by_name["Pareto frontier"]["x"]) >= 1
    assert len(figures(at)) == 2  # + the per-suite heatmap

    drill = [o for o in at.selectbox(key="lf_x").options if o.startswith("drop on piqa")]
    at.selectbox(key="lf_x").set_value(drill[0]).run()
    fig = figures(at)[0]
    assert "Pareto frontier" not in trace_names(fig)
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("drop on piqa")
    at.selectbox(key="lf_stage").set_value("early").run()
    assert_clean(at)
    at.checkbox(key="lf_labels").uncheck().run()
    assert {t["mode"] for t in figures(at)[0]["data"] if t["name"] in ("full", "lora")} == {"markers"}
    # comet_like is captioned with what it is (issue 14)
    comet = [o for o in at.selectbox(key="lf_y").options if "comet_like" in o]
    assert comet, at.selectbox(key="lf_y").options
    at.selectbox(key="lf_y").set_value(comet[0]).run()
    assert any("is an embedding similarity" in c.value for c in at.caption)
    assert_clean(at)


def test_learning_page_compare_and_missing_analysis(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root, page="learning")
    at.selectbox(key="compare").set_value("raw").run()
    names = trace_names(figures(at)[0])
    assert {"full · curated", "lora · raw", "Pareto frontier · curated", "Pareto frontier · raw"} <= set(names)
    # The paired two-run table (as `curatune compare-runs curated raw`)
    assert any("raw vs curated: paired tests" in h.value for h in at.subheader)
    rows = {(r["method"], r["size"], r["suite"]): r for r in at.dataframe[-1].value.to_dict("records")}
    piqa = rows[("full", "50", "piqa")]
    assert piqa["verdict for B"] in ("no detectable change", "significant gain", "significant loss")
    assert len(piqa["per seed"].split(", ")) == 2 and piqa["difference B - A [CI]"].count("[") == 1
    at.selectbox(key="run").set_value("partial").run()
    assert_clean(at)
    assert "**Learning vs forgetting**: not available yet" in texts(at.info)


def test_learning_page_with_only_the_retention_probe(monkeypatch, runs_root, tmp_path):
    # No benchmark suite: no general drop in points; the frontier trades gain against the KL.
    from curatune.evaluate.analysis import analyze_run
    from curatune.evaluate.report import analysis_config_of
    from curatune.rundir import RunDir

    run = tmp_path / "retention-only"
    shutil.copytree(runs_root / "raw", run)
    scores = pd.read_parquet(run / "eval" / "scores.parquet")
    scores[scores["suite"].isin(["task", "retention"])].to_parquet(run / "eval" / "scores.parquet")
    analyze_run(RunDir(run), analysis_config_of(RunDir(run)))
    at = app(monkeypatch, run, page="learning")
    assert list(at.selectbox(key="lf_x").options) == ["drop on retention · kl_divergence"]
    fig = figures(at)[0]
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("drop on retention")
    frontier = next(t for t in fig["data"] if t["name"] == "Pareto frontier")
    assert len(frontier["x"]) >= 2 and min(frontier["x"]) == 0.0  # the base model and at least one cell


# ----------------------------------------------------------------------------- Samples


def test_samples_page_outputs_by_size_search_and_filter(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root / "curated", page="samples")
    assert at.selectbox(key="smp_suite").value == "task" and at.selectbox(key="smp_metric").value == "chrf"
    table = frame(at, "example", "input")
    assert len(table) == 40 and {"base", "n50", "n100", "n200", "n400"} <= set(table.columns)
    shown = "\n".join(html_bodies(at))
    assert "full · n400" in shown and "base model" in shown and "full-n400-s0</ins> <ins>(final)" in shown
    assert "chrf" in shown  # per-example metrics on each output

    first = table["example"].iloc[3]
    at.text_input(key="smp_search").input(first).run()
    assert list(frame(at, "example", "input")["example"]) == [first]
    at.text_input(key="smp_search").input("").run()
    counts = {}
    for outcome in ("improved over base", "worse than base", "unchanged"):
        at.selectbox(key="smp_outcome").set_value(outcome).run()
        caption = next(c.value for c in at.caption if "examples match" in c.value)
        counts[outcome] = int(caption.split(" of ")[0])
        if outcome == "improved over base":
            improved = frame(at, "example", "input")
            assert (improved["n400"] > improved["base"]).all()
    assert sum(counts.values()) == 40 and counts["improved over base"] > 0
    at.selectbox(key="smp_outcome").set_value("all examples").run()
    at.selectbox(key="smp_method").set_value("lora").run()
    assert "lora · n400" in "\n".join(html_bodies(at))
    at.toggle(key="smp_highlight").set_value(False).run()
    assert not any("<ins>" in b for b in html_bodies(at))


def test_samples_page_partial_run(monkeypatch, runs_root):
    at = app(monkeypatch, runs_root, run="partial", page="samples")
    at.selectbox(key="smp_seed").set_value(0).run()
    table = frame(at, "example", "input")
    assert "n400" not in table.columns and "n200" in table.columns  # full-n400-s0 is still running
    at.selectbox(key="smp_seed").set_value(1).run()
    assert "n200" not in frame(at, "example", "input").columns  # full-n200-s1 is pending


def test_run_and_comparison_follow_the_url(monkeypatch, runs_root):
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(runs_root)]))
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["run"] = "raw"
    at.query_params["compare"] = "curated"
    at.run()
    assert at.selectbox(key="run").value == "raw" and at.selectbox(key="compare").value == "curated"
    at.switch_page("views/saturation.py").run()
    assert {"lora · raw", "lora · curated"} <= set(trace_names(figures(at)[0]))
    at.selectbox(key="compare").set_value("(none)").run()
    assert "compare" not in at.query_params and at.query_params["run"] in ("raw", ["raw"])


def test_saturation_page_with_only_base_scores(monkeypatch, runs_root, tmp_path):
    run = tmp_path / "base-only"
    shutil.copytree(runs_root / "raw", run)
    scores = pd.read_parquet(run / "eval" / "scores.parquet")
    scores[scores["stage"] == "base"].to_parquet(run / "eval" / "scores.parquet")
    at = app(monkeypatch, run, page="saturation")
    assert "Only the base model has been evaluated so far" in texts(at.info)


# ----------------------------------------------------------------------------- odd folders


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_a_foreign_folder(monkeypatch, tmp_path, page):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    at = app(monkeypatch, foreign, page=None if page == "runs" else page)
    message = texts(at.warning)
    assert "is not a curatune run directory" in message and "manifest.json" in message
    assert "curatune run" in message


def test_empty_folder_and_no_runs(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    at = app(monkeypatch, empty, page="saturation")
    assert "is empty" in texts(at.warning)
    at = app(monkeypatch)
    assert "No run directory loaded" in texts(at.info)


def test_damaged_file_is_an_error_message_not_a_traceback(monkeypatch, runs_root, tmp_path):
    run = tmp_path / "damaged"
    shutil.copytree(runs_root / "raw", run)
    (run / "eval" / "analysis.json").write_text("{ not json")
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(run)]))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page("views/learning.py").run()
    assert not at.exception
    assert "analysis.json" in texts(at.error) and "could not read" in texts(at.error)
    at.switch_page("views/curation.py").run()  # pages that do not need the file still work
    assert not at.exception and not at.error


def test_pages_pick_up_new_files_of_a_running_sweep(monkeypatch, runs_root, tmp_path):
    run = tmp_path / "growing"
    shutil.copytree(runs_root / "partial", run)
    at = app(monkeypatch, run)
    assert {m.label: m.value for m in at.metric}["Running"] == "2"
    cell = run / "train" / "full" / "n400" / "s0"
    (cell / "done.json").write_text(json.dumps({"method": "full", "size": 400, "seed": 0, "wall_seconds": 12.0}))
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Running"] == "1" and metrics["Done"] == "13"


@pytest.mark.slow
def test_pages_with_over_100_cells(monkeypatch, tmp_path):
    """3 methods x 12 sizes x 3 seeds = 108 cells: every page renders."""
    sizes = tuple(25 * 2**i for i in range(6)) + (75, 150, 300, 600, 1200, 2400)
    root = build_run(tmp_path / "big", methods=("lora", "qlora", "full"), sizes=sizes, seeds=(0, 1, 2),
                     n_items=20, n_bootstrap=5)
    at = app(monkeypatch, root)
    assert len(frame(at, "cell", "wall time")) == 108
    for page in PAGES[1:]:
        at.switch_page(f"views/{page}.py").run()
        assert_clean(at)
        if page == "learning":  # too many points to label them all by default
            assert at.checkbox(key="lf_labels").value is False
            assert sum(len(t["x"]) for t in figures(at)[0]["data"] if t["name"] in ("lora", "qlora", "full")) == 107


def test_curation_browser_shows_trims_as_kept_with_turns_cut(monkeypatch, audit_run_dir):
    """A trim is not a removal: the browser labels it, filters on it, counts records and turns, and
    shows the kept prefix with the cut messages marked."""
    run, ids = audit_run_dir
    at = app(monkeypatch, run, page="curation")
    table = frame(at, "action", "turns", "preview")
    trim = table[table["id"] == ids["trim"]].iloc[0]
    assert trim["action"] == "trimmed (kept, turns cut)" and trim["turns"] == "2 of 4 cut"
    assert set(table.loc[table["id"] != ids["trim"], "action"]) == {"dropped"}
    assert "21 dropped records and 1 trims (records kept with 2 turns cut)" in texts(at.caption)

    at.multiselect(key="removed_actions:raw").set_value(["trim"]).run()
    assert_clean(at)
    assert list(frame(at, "action", "turns", "preview")["id"]) == [ids["trim"]]
    assert "1 of 22 ledger rows match: 0 dropped records and 1 trims" in texts(at.caption)
    assert "**Trimmed, not dropped**: the first 2 of 4 messages are kept" in texts(at.markdown)
    body = next(b for b in html_bodies(at) if "ct-msg" in b)
    assert "✂ cut from here by the trim" in body and "ct-cut" in body and "<mark>made of</mark>" in body

    at.multiselect(key="removed_actions:raw").set_value(["drop"]).run()
    assert ids["trim"] not in set(frame(at, "action", "turns", "preview")["id"])


def test_curation_summary_counts_records_and_turns_with_trims(monkeypatch, audit_run_dir):
    run, _ = audit_run_dir
    report_path = Path(run) / "curate" / "report.json"
    report = json.loads(report_path.read_text())
    # What a run with one trim reports: the trimmed record is among the kept, its cut turns are removed turns.
    report.update(trimmed_records=1, kept_trimmed=1, turns_in=2 * report["input_records"] + 2,
                  turns_kept=2 * report["kept"], turns_removed=2 * 20 + 2)
    report_path.write_text(json.dumps(report))
    at = app(monkeypatch, run, page="curation")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dropped"] == "20" and metrics["Trimmed records"] == "1" and metrics["Turns removed"] == "42"
    caption = texts(at.caption)
    assert "Records: 460 in = 440 kept + 20 dropped (1 of the kept are trimmed" in caption
    assert "Turns (messages): 922 in = 880 kept + 42 removed." in caption and not at.warning

    report["turns_removed"] = 41
    report_path.write_text(json.dumps(report))
    at = app(monkeypatch, run, page="curation")
    assert "do not add up" in texts(at.warning)
