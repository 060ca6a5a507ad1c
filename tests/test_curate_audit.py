"""The curation audit: seeded samples, labels keyed by content, Wilson precision, projected losses,
old ledgers, `curatune audit` (--summary, --json, the interactive flow, import/export), the
terminal and HTML rendering of a record, and the audit in `curatune report`."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from rich.console import Console
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from curatune.app.auditview import messages_html, meta_html
from curatune.cli import app
from curatune.curate.audit import (
    KEPT,
    Label,
    LabelStore,
    audit_run,
    build_sample,
    excerpt,
    flagged_message,
    normalize_ledger,
    project,
    read_labels,
    sample_rank,
    span_message,
    wilson,
    write_labels,
)
from curatune.curate.audit_command import render_item
from curatune.errors import DataError
from curatune.records import RECORD_COLUMNS, Record
from curatune.rundir import RunDir, atomic_write_json, atomic_write_parquet

runner = CliRunner()
OLD_LEDGER_COLUMNS = ["step", "reason", "detail", "duplicate_of", "cluster_id"]
TURN_COLUMNS = ["action", "turn", "span", "kept_as"]


def chat(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def record(i: int, *extra: str) -> Record:
    return Record.make(chat(f"question {i}", f"answer {i}", *extra), category="c", source=f"in.jsonl:{i}")


def ledger(rows: list[tuple[Record, str, dict]], new_columns: bool = True) -> pd.DataFrame:
    out = []
    for rec, reason, extra in rows:
        row = rec.to_row()
        row.update(step="quality", reason=reason, detail=f"{reason} detail", duplicate_of=None, cluster_id=None)
        if new_columns:
            row.update({"action": "drop", "turn": -1, "span": "", "kept_as": None, **extra})
        out.append(row)
    # The columns of a ledger written before turn-level curation, spelled out: LEDGER_COLUMNS grows with it.
    columns = RECORD_COLUMNS + OLD_LEDGER_COLUMNS + (TURN_COLUMNS if new_columns else [])
    return pd.DataFrame(out, columns=columns)


def make_run(root, removed: pd.DataFrame, kept: list[Record]) -> RunDir:
    run = RunDir(root)
    run.write_manifest({"name": "audit-test"}, "curate")
    atomic_write_parquet(run.removed, removed)
    atomic_write_parquet(run.kept, pd.DataFrame([r.to_row() for r in kept], columns=RECORD_COLUMNS))
    atomic_write_json(run.curate_report, {"input_records": len(kept) + len(removed), "kept": len(kept),
                                          "removed_by_reason": removed["reason"].value_counts().to_dict()})
    return run


@pytest.fixture
def run(tmp_path) -> RunDir:
    """100 repetition drops, 10 truncated trims (of 4-turn chats), 40 kept records."""
    rows = [(record(i), "repetition", {}) for i in range(100)]
    for i in range(100, 110):
        long = record(i, "and more", "It was cut off mid")
        rows.append((long, "truncated", {"action": "trim", "turn": 2, "span": "cut off mid", "kept_as": record(i).id}))
    return make_run(tmp_path / "run", ledger(rows), [record(i) for i in range(200, 240)])


def label_all(store: LabelStore, items, verdicts):
    for item, verdict in zip(items, verdicts):
        store.put(item.id, item.reason, verdict)


# ----------------------------------------------------------------------------- sampling


def test_sample_is_seeded_and_independent_of_row_order(run):
    removed = normalize_ledger(pd.read_parquet(run.removed))
    kept = pd.read_parquet(run.kept)
    first = build_sample(removed, kept, n=25, seed=0, n_kept=10)
    assert list(first) == ["repetition", "truncated", KEPT]
    assert [len(v) for v in first.values()] == [25, 10, 10]
    ids = {r: [i.id for i in v] for r, v in first.items()}
    again = build_sample(removed.sample(frac=1, random_state=3), kept.iloc[::-1], n=25, seed=0, n_kept=10)
    assert {r: [i.id for i in v] for r, v in again.items()} == ids  # same seed, shuffled rows: same sample
    other = build_sample(removed, kept, n=25, seed=1, n_kept=10)
    assert [i.id for i in other["repetition"]] != ids["repetition"]
    # The sample is the n lowest hash ranks: dropping a record outside it changes nothing.
    outside = set(removed[removed.reason == "repetition"].id) - set(ids["repetition"])
    fewer = removed[~removed.id.isin(list(outside)[:30])]
    assert [i.id for i in build_sample(fewer, None, rules=["repetition"], n=25)["repetition"]] == ids["repetition"]
    ranks = [sample_rank(0, "repetition", i) for i in ids["repetition"]]
    assert ranks == sorted(ranks)
    assert build_sample(removed, kept, rules=["truncated"], n=3)["truncated"][0].rank == 1
    assert list(build_sample(removed, kept, rules=["truncated"], n=3)) == ["truncated"]


def test_trim_rows_know_their_cut_turns_and_span(run):
    item = build_sample(normalize_ledger(pd.read_parquet(run.removed)), None, rules=["truncated"], n=1)["truncated"][0]
    assert (item.action, item.turn, item.span) == ("trim", 2, "cut off mid")
    assert [item.cut(i) for i in range(4)] == [False, False, True, True]
    assert len(item.messages) == 4 and item.kept_as
    # The cut starts at the user turn (2); the span is in the assistant turn after it.
    assert span_message(item) == 3 and flagged_message(item) == 3 and [item.flagged(i) for i in range(4)] == [
        False, False, False, True]


def test_the_span_is_searched_from_the_flagged_turn_on():
    rec = Record.make(chat("q", "as an AI model I think", "more", "as an AI model I cannot"))
    drop = build_sample(normalize_ledger(ledger([(rec, "refusal", {"turn": 3, "span": "as an AI model"})])), None)
    assert span_message(drop["refusal"][0]) == 3  # not the earlier message that holds the same words
    trim = build_sample(normalize_ledger(ledger([(rec, "refusal", {"action": "trim", "turn": 2,
                                                                    "span": "as an AI model"})])), None)
    assert span_message(trim["refusal"][0]) == 3
    elsewhere = build_sample(normalize_ledger(ledger([(rec, "refusal", {"turn": 3, "span": "I think"})])), None)
    assert span_message(elsewhere["refusal"][0]) == 1  # found before the turn when not after it
    no_span = build_sample(normalize_ledger(ledger([(rec, "refusal", {"action": "trim", "turn": 2})])), None)
    assert flagged_message(no_span["refusal"][0]) is None  # a trim's turn is where the cut starts
    whole = build_sample(normalize_ledger(ledger([(rec, "refusal", {"turn": 1})])), None)
    assert flagged_message(whole["refusal"][0]) == 1


# ----------------------------------------------------------------------------- labels


def test_labels_are_stored_atomically_and_resumable(run):
    store = LabelStore.of(run)
    assert store.path == run.root / "audit" / "labels.jsonl" and store.load() == {}
    store.put("a", "repetition", "right")
    store.put("b", "repetition", "wrong", "  a list answer ")
    store.put("a", "repetition", "wrong")  # a second answer replaces the first
    lines = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert [(x["id"], x["verdict"], x["note"]) for x in lines] == [("b", "wrong", "a list answer"), ("a", "wrong", "")]
    assert set(lines[0]) == {"id", "reason", "verdict", "note", "labelled_at"}
    assert not list(store.path.parent.glob(".*.tmp"))  # no temp files left behind
    with pytest.raises(ValueError):
        store.put("a", "repetition", "maybe")


def test_bad_labels_file_names_file_line_and_field(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "a", "reason": "r", "verdict": "right"}\n\n{not json\n')
    with pytest.raises(DataError, match=r"labels.jsonl, line 3: not valid JSON"):
        read_labels(path)
    path.write_text('{"id": "a", "reason": "r", "verdict": "maybe"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'verdict' is 'maybe'"):
        read_labels(path)
    path.write_text('{"id": "a", "verdict": "right"}\n')
    with pytest.raises(DataError, match=r"line 1: field 'reason' is missing"):
        read_labels(path)
    assert read_labels(tmp_path / "none.jsonl") == {}


def test_labels_keyed_by_content_survive_a_real_recuration(tmp_path):
    """Run `curatune curate` twice on changed input: labels find their records again."""
    def answer(i: int) -> str:
        return (f"Sure. Topic number {i} is explained here in plain words: it covers the basic idea, a short "
                f"example that shows how it works, and a note on when to use it in practice.")

    def write_input(path, records):
        path.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in records))

    topics = [(f"Explain topic {i} briefly.", answer(i)) for i in range(6)]
    source = tmp_path / "in.jsonl"
    write_input(source, topics + [topics[0]])  # one exact duplicate
    out = tmp_path / "run"
    args = ["curate", "--input", str(source), "--out", str(out), "-q", "--set", "curate.workers=1"]
    assert runner.invoke(app, args).exit_code == 0
    run = RunDir(out)
    removed = pd.read_parquet(run.removed)
    dup = removed[removed.reason == "exact_duplicate"]
    assert len(dup) == 1
    kept_id = pd.read_parquet(run.kept)["id"].iloc[-1]
    store = LabelStore.of(run)
    store.put(dup["id"].iloc[0], "exact_duplicate", "right")
    store.put(kept_id, KEPT, "wrong", "flawed")

    # Re-run on reordered input with more records: same content, same ids, labels still count.
    write_input(source, [topics[3], topics[0]] + topics[::-1] + [(f"Explain topic {i} briefly.", answer(i)) for i in (7, 8)])
    assert runner.invoke(app, args + ["--force"]).exit_code == 0
    summary = audit_run(run)
    assert summary.rule("exact_duplicate").labelled == 1 and summary.rule("exact_duplicate").right == 1
    assert summary.kept.labelled == 1 and summary.kept.right == 0 and summary.stale == 0

    # The duplicate is gone from the input: its label is kept but stale.
    write_input(source, topics)
    assert runner.invoke(app, args + ["--force"]).exit_code == 0
    summary = audit_run(run)
    assert summary.stale == 1 and summary.rule("exact_duplicate") is None and summary.kept.labelled == 1


# ----------------------------------------------------------------------------- numbers


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval written out, independently of statsmodels."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("right,labelled", [(19, 25), (2, 25), (25, 25), (0, 5), (57, 60), (1, 1)])
def test_wilson_matches_statsmodels_and_the_formula(right, labelled):
    lo, hi = wilson(right, labelled)
    ref = proportion_confint(right, labelled, alpha=0.05, method="wilson")
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    assert (lo, hi) == pytest.approx(wilson_by_hand(right, labelled), abs=1e-9)
    assert wilson(0, 0) is None


def test_known_interval_values():
    # 2 of 25 right (the repetition sample): 0.08 [0.022, 0.250].
    lo, hi = wilson(2, 25)
    assert round(lo, 3) == 0.022 and round(hi, 3) == 0.250


def test_projected_loss_is_one_minus_precision_times_count(run):
    removed = normalize_ledger(pd.read_parquet(run.removed))
    sample = build_sample(removed, pd.read_parquet(run.kept), n=20, seed=0, n_kept=10)
    store = LabelStore.of(run)
    label_all(store, sample["repetition"], ["right"] * 15 + ["wrong"] * 5)
    label_all(store, sample["truncated"], ["right"] * 10)
    label_all(store, sample[KEPT], ["right"] * 9 + ["wrong"])
    summary = audit_run(run)
    rep = summary.rule("repetition")
    assert (rep.dropped, rep.trimmed, rep.labelled, rep.right, rep.precision) == (100, 0, 20, 15, 0.75)
    lo, hi = proportion_confint(15, 20, method="wilson")
    assert rep.lost.estimate == pytest.approx(0.25 * 100)
    # exact on the 20 labelled (5 wrong), projected on the 80 others
    assert rep.lost.low == pytest.approx(5 + (1 - hi) * 80) and rep.lost.high == pytest.approx(5 + (1 - lo) * 80)
    assert rep.lost.low < rep.lost.estimate < rep.lost.high
    trunc = summary.rule("truncated")  # every trim labelled right: nothing lost, no uncertainty left
    assert (trunc.dropped, trunc.trimmed, trunc.precision) == (0, 10, 1.0)
    assert (trunc.cut.estimate, trunc.cut.low, trunc.cut.high) == (0, 0, 0)
    assert summary.kept.precision == 0.9 and summary.kept.lost.estimate == pytest.approx(0.1 * 40)
    p = project(10, 10, 3, 0.7, (0.4, 0.9))  # fully labelled: the interval collapses to the count
    assert (p.estimate, p.low, p.high) == (3, 3, 3)


def test_old_ledger_without_the_new_columns(tmp_path):
    old = ledger([(record(i), "repetition", {}) for i in range(5)], new_columns=False)
    assert "action" not in old.columns
    run = make_run(tmp_path / "old", old, [record(9)])
    normal = normalize_ledger(pd.read_parquet(run.removed))
    assert set(normal["action"]) == {"drop"} and set(normal["turn"]) == {-1} and set(normal["span"]) == {""}
    item = build_sample(normal, None, n=1)["repetition"][0]
    assert item.action == "drop" and not any(item.cut(i) for i in range(2)) and item.span == ""
    LabelStore.of(run).put(item.id, "repetition", "wrong")
    summary = audit_run(run)
    assert summary.rule("repetition").dropped == 5 and summary.rule("repetition").precision == 0.0
    # A ledger with the columns but empty values reads the same way.
    blank = ledger([(record(1), "refusal", {"action": None, "turn": None, "span": None})])
    assert normalize_ledger(blank)[["action", "turn", "span"]].iloc[0].tolist() == ["drop", -1, ""]
    with pytest.raises(DataError, match="missing column"):
        normalize_ledger(pd.DataFrame({"id": ["a"]}), "x.parquet")


def test_summary_on_labels_from_another_file(run, tmp_path):
    removed = normalize_ledger(pd.read_parquet(run.removed))
    first = build_sample(removed, None, rules=["repetition"], n=4)["repetition"]
    path = tmp_path / "hand.jsonl"
    write_labels(path, [Label(i.id, i.reason, v) for i, v in zip(first, ["right", "right", "wrong", "right"])]
                 + [Label("ffffffffffffffff", "repetition", "wrong")])
    summary = audit_run(run, path)
    assert summary.rule("repetition").labelled == 4 and summary.stale == 1
    assert not LabelStore.of(run).path.exists()  # scoring a file does not write the run's labels


# ----------------------------------------------------------------------------- rendering


def test_excerpt_keeps_the_span_visible_and_joins_back():
    text = "a" * 5000 + "THE FLAW" + "b" * 5000
    parts = excerpt(text, "THE FLAW", limit=1000)
    assert "".join(p for p, _ in parts) == text
    assert ("THE FLAW", "span") in parts and sum(len(p) for p, k in parts if k != "gap") < 2000
    assert excerpt("short", "missing") == [("short", "text")]


def test_terminal_rendering_marks_cut_turns_span_and_control_characters():
    rec = Record.make(chat("q", "fine answer", "more?", "loop loop \x1b[2J loop"), source="s")
    item = build_sample(normalize_ledger(ledger([(rec, "repetition", {"action": "trim", "turn": 2,
                                                                         "span": "loop loop"})])), None)["repetition"][0]
    console = Console(record=True, width=100, color_system="truecolor")
    render_item(console, item, 1, 1)
    out = console.export_text(clear=False)
    assert "✂ cut from here by the trim" in out and "messages 2–3 cut" in out
    assert "\\x1b[2J" in out and "\x1b[2J" not in out  # an escape sequence in the data is shown, not run
    styled = console.export_text(styles=True)
    assert ";43mloop loop\x1b[0m" in styled  # the span alone on a yellow background


def test_html_rendering_escapes_data_and_marks_the_span():
    rec = Record.make(chat("<b>hi</b>", "see <script>alert(1)</script> and **bold**"))
    item = build_sample(normalize_ledger(ledger([(rec, "boilerplate <i>", {"span": "<script>", "turn": 1})])),
                        None)["boilerplate <i>"][0]
    body = messages_html(item)
    assert "<script>" not in body and "<mark>&lt;script&gt;</mark>" in body and "&lt;b&gt;hi&lt;/b&gt;" in body
    assert "⚑ flagged" in body and "**bold**" in body
    blank = build_sample(normalize_ledger(ledger([(Record.make(chat("q", " \n ")), "empty", {})])), None)["empty"][0]
    assert "(empty: 3 whitespace characters)" in messages_html(blank)
    meta = meta_html(item, Label(item.id, item.reason, "wrong", "<img src=x>"))
    assert "<i>" not in meta and "&lt;img src=x&gt;" in meta and "labelled wrong" in meta


# ----------------------------------------------------------------------------- CLI


def invoke(*args, input=None):
    return runner.invoke(app, ["audit", *map(str, args)], input=input, env={"COLUMNS": "160"})


def test_cli_summary_and_json(run):
    result = invoke(run.root, "--summary")
    assert result.exit_code == 0, result.output
    assert "repetition" in result.output and "not audited" in result.output and "trimmed" in result.output
    removed = normalize_ledger(pd.read_parquet(run.removed))
    label_all(LabelStore.of(run), build_sample(removed, None, n=10)["repetition"], ["right"] * 8 + ["wrong"] * 2)
    result = invoke(run.root, "--summary")
    assert "0.80 [0.49–0.94]" in result.output and "20 [7–48]" in result.output, result.output
    data = json.loads(invoke(run.root, "--json").output)
    rep = next(r for r in data["rules"] if r["reason"] == "repetition")
    assert (rep["labelled"], rep["right"], rep["precision"], rep["lost"]) == (10, 8, 0.8, pytest.approx(20.0))
    assert data["kept"]["audited"] is False and data["labels"] == 10


def test_cli_interactive_flow_stores_each_answer_and_resumes(run):
    result = invoke(run.root, "--rule", "truncated", "--n", "4", input="r\nw cut a good answer\nnonsense\ns\nq\n")
    assert result.exit_code == 0, result.output
    assert "✂ cut from here by the trim" in result.output and "not an answer" in result.output
    assert "this session: 1 right, 1 wrong, 1 skipped" in result.output
    labels = list(LabelStore.of(run).load().values())
    assert [(lb.reason, lb.verdict, lb.note) for lb in labels] == [("truncated", "right", ""),
                                                                    ("truncated", "wrong", "cut a good answer")]
    assert "0.50" in result.output  # the precision table follows the session
    # Resume: the two labelled ones are not asked again; end of input counts as quit.
    result = invoke(run.root, "--rule", "truncated", "--n", "4", input="r\n")
    assert "2 of 4 sampled records are labelled already" in result.output
    assert "[1/2]" in result.output and len(LabelStore.of(run).load()) == 3
    result = invoke(run.root, "--rule", "kept", "--kept", "2", input="w\nr\n")
    assert "keep" in result.output and sum(1 for k in LabelStore.of(run).load() if k[1] == KEPT) == 2


def test_cli_import_export_and_errors(run, tmp_path):
    removed = normalize_ledger(pd.read_parquet(run.removed))
    items = build_sample(removed, None, n=3)["repetition"]
    hand = tmp_path / "hand.jsonl"
    write_labels(hand, [Label(i.id, i.reason, "wrong", "hand") for i in items])
    result = invoke(run.root, "--import", hand)
    assert result.exit_code == 0 and "3 added, 0 replaced" in result.output
    exported = tmp_path / "out.jsonl"
    assert invoke(run.root, "--export", exported).exit_code == 0
    assert read_labels(exported) == read_labels(hand)
    result = invoke(run.root, "--summary", "--labels", hand)
    assert "0.00 [0.00–0.56]" in result.output
    result = invoke(run.root, "--rule", "nope")
    assert result.exit_code != 0 and "no rule 'nope'" in str(result.exception)
    result = invoke(tmp_path / "empty")
    assert result.exit_code != 0 and "no finished curation" in str(result.exception)
    result = invoke(run.root, "--import", tmp_path / "missing.jsonl")
    assert "labels file not found" in str(result.exception)


def test_unwritable_labels_are_one_clear_error(run):
    (run.root / "audit").write_text("a file where the labels folder should be")
    result = invoke(run.root, "--rule", "truncated", "--n", "1", input="r\n")
    assert result.exit_code != 0 and "cannot write" in str(result.exception)
    assert "labels.jsonl" in str(result.exception)


def test_report_shows_audited_precision(run):
    result = runner.invoke(app, ["report", str(run.root)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "not audited" in result.output
    removed = normalize_ledger(pd.read_parquet(run.removed))
    label_all(LabelStore.of(run), build_sample(removed, None, n=10)["repetition"], ["right"] * 8 + ["wrong"] * 2)
    result = runner.invoke(app, ["report", str(run.root)], env={"COLUMNS": "160"})
    assert "1 of 2 rules audited" in result.output and "0.80 [0.49–0.94]" in result.output
    data = json.loads(runner.invoke(app, ["report", str(run.root), "--json"]).output)
    audit = data["run"]["curate"]["audit"]
    assert audit["audited"] and audit["rules"][0]["reason"] == "repetition" and audit["rules"][0]["precision"] == 0.8
