from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from curatune.data import demo_vocab as V
from curatune.data.demo import (
    DISTINCT_MAX_JACCARD,
    NEAR_DUP_MIN_JACCARD,
    alpaca_messages,
    flaw_counts,
    generate_demo_dataset,
    normalized,
    row_id,
    row_text,
    shingle_jaccard,
    shingles,
)
from curatune.records import Record


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    paths = generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0)
    return paths, _read(paths.train), _read(paths.heldout), _read(paths.labels)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, demo):
    paths, *_ = demo
    again = generate_demo_dataset(tmp_path / "again", seed=0)
    for a, b in zip(paths + (paths.summary,), again + (again.summary,)):
        assert a.read_bytes() == b.read_bytes(), a.name
    other = generate_demo_dataset(tmp_path / "other", seed=1)
    assert other.train.read_bytes() != paths.train.read_bytes()


def test_rows_are_alpaca_with_category(demo):
    _, train, heldout, _ = demo
    assert len(train) == 1200 and len(heldout) == 100
    for row in train + heldout:
        assert list(row) == ["instruction", "input", "output", "category"]
        assert row["category"] in V.CATEGORY_WEIGHTS


def test_counts_per_flaw_match_the_plan(demo):
    paths, train, _, labels = demo
    assert Counter(label["flaw"] for label in labels) == Counter(flaw_counts(1200))
    summary = json.loads(paths.summary.read_text())
    assert summary["flaws"] == dict(Counter(label["flaw"] for label in labels))
    assert summary["clean_train_rows"] == 1200 - len(labels)
    assert len({label["row"] for label in labels}) == len(labels)


def test_label_ids_follow_the_record_convention(demo):
    _, train, _, labels = demo
    for label in labels:
        row = train[label["row"] - 1]
        messages = [
            {"role": "user", "content": row["instruction"] + "\n\n" + row["input"]},
            {"role": "assistant", "content": row["output"]},
        ]
        assert alpaca_messages(row["instruction"], row["input"], row["output"]) == messages
        assert label["id"] == Record.make(messages).id == row_id(row)
        if label["of"] is not None:
            assert label["of_row"] < label["row"], "a duplicate must come after its original"
            assert label["of"] == row_id(train[label["of_row"] - 1])


def test_duplicates_are_what_their_label_says(demo):
    _, train, _, labels = demo
    originals_flawed = {label["row"] for label in labels}
    for label in labels:
        if label["of"] is None:
            continue
        dup, orig = train[label["row"] - 1], train[label["of_row"] - 1]
        assert label["of_row"] not in originals_flawed, "originals are clean rows"
        assert dup["output"] == orig["output"] and dup["category"] == orig["category"]
        similarity = shingle_jaccard(row_text(dup), row_text(orig))
        if label["flaw"] == "exact_dup":
            assert normalized(dup["input"]) == normalized(orig["input"])
            assert dup["instruction"] == orig["instruction"]
            assert (dup == orig) == (label["variant"] == "verbatim")
        elif label["flaw"] == "near_dup":
            assert NEAR_DUP_MIN_JACCARD <= similarity < 1.0
            assert label["jaccard"] == round(similarity, 4)
            assert normalized(dup["input"]) != normalized(orig["input"])
        elif label["flaw"] == "semantic_dup":
            assert similarity < NEAR_DUP_MIN_JACCARD
            assert dup["input"] != orig["input"]


def test_flawed_responses_are_flawed(demo):
    import py3langid

    _, train, _, labels = demo
    languages = Counter()
    for label in labels:
        row = train[label["row"] - 1]
        if label["flaw"] == "empty":
            assert row["output"].strip() == ""
        elif label["flaw"] == "truncated":
            with pytest.raises(json.JSONDecodeError):
                json.loads(row["output"])
            assert row["output"].startswith('{"brand": ')
        elif label["flaw"] == "boilerplate":
            assert not row["output"].startswith("{")
            assert re.search(r"AI|sorry|not able|unable", row["output"])
        elif label["flaw"] == "wrong_language":
            detected = py3langid.classify(row["instruction"] + "\n" + row["input"])[0]
            languages[detected == label["language"]] += 1
            json.loads(row["output"])
    assert languages[True] >= 0.9 * sum(languages.values())


def _check_clean_row(row: dict) -> None:
    target = json.loads(row["output"])
    assert tuple(target) == V.KEYS
    assert target["product"] is not None
    text = row["input"].lower()
    for key in ("brand", "product", "colour", "material"):
        if target[key] is not None:
            assert target[key].lower() in text, (key, row)
    if target["price"] is None:
        assert target["currency"] is None
    else:
        assert target["currency"] in ("USD", "EUR", "GBP")
        digits = re.sub(r"\D", "", f"{target['price']:.2f}")
        assert digits.rstrip("0") in re.sub(r"\D", "", row["input"]), row


def test_clean_rows_parse_and_state_their_attributes(demo):
    _, train, heldout, labels = demo
    flawed = {label["row"] for label in labels}
    clean = [row for i, row in enumerate(train, 1) if i not in flawed]
    assert len(clean) == 1200 - len(labels)
    for row in clean + heldout:
        _check_clean_row(row)
    # attributes sometimes missing -> null, prices in several formats
    nulls = Counter(k for row in clean for k, v in json.loads(row["output"]).items() if v is None)
    assert all(nulls[k] > 0 for k in ("brand", "colour", "size", "material", "price"))
    assert {"$", "€", "£", "USD", "EUR", "GBP"} <= {s for row in clean for s in re.findall(r"[$€£]|USD|EUR|GBP", row["input"])}


def test_category_balance_is_skewed_in_train_and_even_in_heldout(demo):
    _, train, heldout, _ = demo
    train_counts = Counter(row["category"] for row in train)
    assert train_counts.most_common(1)[0][0] == "apparel"
    assert train_counts["apparel"] / len(train) >= 0.4
    assert set(train_counts) == set(V.CATEGORY_WEIGHTS)
    held = Counter(row["category"] for row in heldout)
    assert max(held.values()) - min(held.values()) <= 1


def test_heldout_is_clean_and_disjoint_from_train(demo):
    _, train, heldout, _ = demo
    train_ids = {row_id(row) for row in train}
    train_outputs = {row["output"] for row in train}
    train_inputs = {normalized(row["input"]) for row in train}
    train_shingles = [shingles(row_text(row)) for row in train]
    index: dict[tuple, list[int]] = {}  # shingle -> train rows holding it
    for i, sh in enumerate(train_shingles):
        for s in sh:
            index.setdefault(s, []).append(i)
    for row in heldout:
        assert row_id(row) not in train_ids
        assert row["output"] not in train_outputs, "a held-out product also appears in train"
        assert normalized(row["input"]) not in train_inputs
        sh = shingles(row_text(row))
        shared = Counter(i for s in sh for i in index.get(s, ()))
        for i, n in shared.items():
            assert n / len(sh | train_shingles[i]) < NEAR_DUP_MIN_JACCARD
    assert len({row_id(row) for row in heldout}) == len(heldout)


def test_no_unlabelled_near_duplicates_in_train(demo):
    from datasketch import MinHash, MinHashLSH

    _, train, _, labels = demo
    linked = {frozenset((label["row"], label["of_row"])) for label in labels if label["of_row"]}
    lsh = MinHashLSH(threshold=0.5, num_perm=64)
    sets = []
    for i, row in enumerate(train, 1):
        sh = shingles(row_text(row))
        sets.append(sh)
        m = MinHash(num_perm=64, seed=1)
        for s in sh:
            m.update(" ".join(s).encode())
        for j in lsh.query(m):
            if len(sh & sets[j - 1]) / len(sh | sets[j - 1]) >= DISTINCT_MAX_JACCARD:
                assert frozenset((i, j)) in linked, (train[i - 1], train[j - 1])
        lsh.insert(i, m)


def test_small_and_empty_sizes(tmp_path):
    paths = generate_demo_dataset(tmp_path, n_train=10, n_heldout=0, seed=3)
    assert len(_read(paths.train)) == 10
    assert paths.heldout.read_text() == ""
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "bad", n_train=0)


def test_demo_data_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from curatune.data.demo_command import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command so typer keeps subcommand names
    def _noop() -> None:
        pass

    result = CliRunner().invoke(app, ["demo-data", str(tmp_path), "--n-train", "200", "--n-heldout", "12", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert len(_read(tmp_path / "train.jsonl")) == 200
    assert len(_read(tmp_path / "heldout.jsonl")) == 12
    assert "labels" in result.output and "near_dup" in result.output


def test_labels_join_to_what_the_loader_builds(demo):
    """The loader's records carry the label ids; rejected empty rows keep their line in `source`."""
    loaders = pytest.importorskip("curatune.data.loaders")
    paths, _, _, labels = demo
    result = loaders.load_path(str(paths.train))
    by_row = {int(r.source.rsplit(":", 1)[1]): r for r in result.records}
    rejected_rows = {int(s.rsplit(":", 1)[1]) for s in result.rejected["source"]}
    for label in labels:
        if label["flaw"] == "empty":
            assert label["row"] in rejected_rows
        else:
            assert by_row[label["row"]].id == label["id"]
