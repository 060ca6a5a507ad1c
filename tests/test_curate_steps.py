"""Each curation step on small fixtures, including edge cases."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from curatune.curate.balance import Balance, allocate, entropy
from curatune.curate.base import CurateContext
from curatune.curate.config import (
    BalanceConfig, DecontaminateConfig, ExactDedupConfig, LanguageConfig, ModelScoreConfig, NearDupConfig,
    QualityConfig, SemanticDedupConfig,
)
from curatune.curate.decontaminate import Decontaminate, read_eval_texts
from curatune.curate.dedup import ExactDedup, NearDupDedup, SemanticDedup
from curatune.curate.language import LanguageFilter
from curatune.curate.quality import QualityChecker, QualityFilter, truncation_reason
from curatune.records import Record

CTX = CurateContext(workers=1)


def rec(prompt: str, response: str, category: str | None = None, **meta) -> Record:
    return Record.make([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                       category=category, meta=meta)


def reasons(result) -> dict[str, str]:
    return {r.record.response: r.reason for r in result.removed}


def _essay(rng: random.Random, n: int = 80) -> str:
    vocab = "data model train answer question river mountain city music light table chair paper garden window".split()
    return " ".join(rng.choice(vocab) + str(rng.randrange(50)) for _ in range(n))


# ----------------------------------------------------------------------------- exact


def test_exact_dedup_normalizes_case_whitespace_punctuation_and_keeps_first():
    a = rec("What is 2+2?", "Four.")
    b = rec("what is 2 + 2", "four")
    c = rec("What is 3+3?", "Six.")
    result = ExactDedup(ExactDedupConfig()).run([a, b, c], CTX)
    assert [r.response for r in result.kept] == ["Four.", "Six."]
    assert len(result.removed) == 1
    removal = result.removed[0]
    assert removal.reason == "exact_duplicate" and removal.duplicate_of == a.id and removal.cluster_id


def test_exact_dedup_keep_longest_and_quality():
    short = rec("Name a colour.", "Red")
    longer = rec("name a colour", "red.")  # same normalized text, longer raw response
    result = ExactDedup(ExactDedupConfig(keep="longest")).run([short, longer], CTX)
    assert result.kept == [longer]
    scored_low = rec("Q", "A", quality_score=0.1)
    scored_high = rec("q", "a", quality_score=0.9)
    result = ExactDedup(ExactDedupConfig(keep="quality")).run([scored_low, scored_high], CTX)
    assert result.kept == [scored_high]


@pytest.mark.parametrize("n", [0, 1])
def test_exact_dedup_empty_and_single(n):
    records = [rec("hi", "hello")][:n]
    result = ExactDedup(ExactDedupConfig()).run(records, CTX)
    assert result.kept == records and result.removed == []


def test_exact_dedup_all_duplicates():
    records = [rec("Same prompt", "Same answer") for _ in range(5)]
    result = ExactDedup(ExactDedupConfig()).run(records, CTX)
    assert len(result.kept) == 1 and len(result.removed) == 4
    assert {r.cluster_id for r in result.removed} == {result.removed[0].cluster_id}


# ----------------------------------------------------------------------------- near-dup


def test_near_dup_finds_edited_copies_and_not_distinct_texts():
    rng = random.Random(0)
    originals = [rec(f"Summarize text {i}.", _essay(rng)) for i in range(40)]
    copies = []
    for o in originals[:10]:
        words = o.response.split()
        words[5] = "edited"
        copies.append(rec(o.prompt, " ".join(words)))
    result = NearDupDedup(NearDupConfig()).run(originals + copies, CTX)
    removed = {r.record.id for r in result.removed}
    assert removed == {c.id for c in copies}
    partner = {r.record.id: r.duplicate_of for r in result.removed}
    assert all(partner[c.id] == o.id for c, o in zip(copies, originals))
    assert all(r.detail.startswith("estimated Jaccard") for r in result.removed)
    assert result.counters["verified_pairs"] >= 10


def test_near_dup_two_workers_same_result():
    rng = random.Random(1)
    records = [rec(f"p{i}", _essay(rng, 40)) for i in range(600)] + [rec("p0", "x")] * 0
    records += [rec(r.prompt, r.response + " extra") for r in records[:50]]
    one = NearDupDedup(NearDupConfig()).run(records, CurateContext(workers=1))
    two = NearDupDedup(NearDupConfig()).run(records, CurateContext(workers=2))
    assert [r.record.id for r in one.removed] == [r.record.id for r in two.removed]
    assert len(one.removed) == 50


@pytest.mark.parametrize("texts", [[], ["only one record"], ["", ""], ["same text here for all"] * 4])
def test_near_dup_edge_cases(texts):
    records = [rec("p", t) for t in texts]
    result = NearDupDedup(NearDupConfig()).run(records, CTX)
    assert len(result.kept) + len(result.removed) == len(records)
    if len(texts) == 4:
        assert len(result.kept) == 1
    if texts == ["", ""]:
        # "p\n" has words, so the two are duplicates; records without any word are left alone.
        assert len(result.kept) == 1


def test_near_dup_non_english_and_very_long():
    rng = random.Random(3)
    german = "Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter durch den Wald"
    long_text = _essay(rng, 20000)
    records = [rec("a", german), rec("a", german.replace("Wald", "Wälder")), rec("b", long_text), rec("c", long_text + " end")]
    result = NearDupDedup(NearDupConfig(threshold=0.6)).run(records, CTX)
    assert len(result.removed) == 2


def _chain(shift: int = 25, length: int = 200) -> list[Record]:
    """A~B and B~C at 5-gram Jaccard ~0.77, A~C ~0.59: one union-find component (threshold 0.7).
    Equal word lengths, so keep 'best' falls back to input order (A first)."""
    words = [f"w{i:04d}" for i in range(length + 2 * shift)]
    return [rec("Rewrite this.", " ".join(words[s : s + length])) for s in (0, shift, 2 * shift)]


def test_near_dup_removes_only_records_close_to_the_kept_one():
    a, b, c = _chain()
    result = NearDupDedup(NearDupConfig()).run([a, b, c], CTX)
    # c is far from a (the record kept) though connected through b: it is kept, as its own representative.
    assert [r.id for r in result.kept] == [a.id, c.id]
    assert [(r.record.id, r.duplicate_of) for r in result.removed] == [(b.id, a.id)]
    sim = result.counters["similarity_to_kept"]
    assert sim["removed"] == 1 and sim["below_threshold"] == 0 and sim["min"] >= 0.7
    assert result.counters["split_components"] == 1 and result.counters["connected_components"] == 1
    assert "warnings" not in result.counters


def test_near_dup_chain_option_keeps_union_find_with_a_warning(caplog):
    a, b, c = _chain()
    result = NearDupDedup(NearDupConfig(chain=True)).run([a, b, c], CTX)
    assert [r.id for r in result.kept] == [a.id]
    assert {r.record.id: r.duplicate_of for r in result.removed} == {b.id: a.id, c.id: a.id}
    sim = result.counters["similarity_to_kept"]
    assert sim["below_threshold"] == 1 and sim["min"] < 0.7
    detail = {r.record.id: r.detail for r in result.removed}[c.id]
    assert float(detail.split()[2]) < 0.7  # the ledger states the low similarity
    assert "below 0.7" in result.counters["warnings"][0]
    assert any("chain: true" in m for m in caplog.messages)


def test_near_dup_removed_record_goes_to_the_closest_representative():
    # Two representatives (a, c) in one component; d is close to c only.
    a, b, c = _chain()
    words = c.response.split()
    d = rec("Rewrite this.", " ".join(words[:-1] + ["zzzzz"]))
    result = NearDupDedup(NearDupConfig()).run([a, b, c, d], CTX)
    partner = {r.record.id: r.duplicate_of for r in result.removed}
    assert partner == {b.id: a.id, d.id: c.id}
    assert {r.cluster_id for r in result.removed} == {f"near-{a.id}", f"near-{c.id}"}


# ----------------------------------------------------------------------------- quality


@pytest.mark.parametrize(
    "response",
    [
        '{"brand": "Acme", "colour": "red", "size": null}',  # valid JSON
        "Paris",  # one-word answer
        "42",
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",  # code
        "```python\nprint('hi')\n```",
        "- apples\n- pears\n- a long list item that has many words in it and no full stop at all",
        "The answer is yes",
        "Ein kurzer deutscher Satz über das Wetter heute.",
        "Visit https://example.com/docs for the full reference.",
        # Seen on real data (GPTeacher Codegen / Toolformer): code, regexes and tool calls are answers.
        "#!/bin/bash\n\nfind . -type f -mtime -7 -print\nfind . -type d -mtime -7 -print",
        "a=$1\nb=$2\n\nwhile [ $b -ne 0 ]; do\n    a=$b\ndone\n\necho 'GCD:' $a",
        r"^\(?[0-9]{3}\)?[-. ]?[0-9]{3}[-. ]?[0-9]{4}$",
        'int main() {\n    string text = "Hello, I am an AI language model!";\n    cout << count(text) << endl;\n    return 0;\n}',
        "The text of https://en.wikipedia.org/wiki/Hubble is request('https://en.wikipedia.org/wiki/Hubble').",
        "The weather in New York City today is: weather('What is the weather in New York City today?'). Here are the "
        "recent news headlines about New York City: news('New York City headlines'). Enjoy your day in the big city.",
        "Dear Sir, I write to you from my castle. The nights are long and the wolves are restless. Please contact me "
        "if you are open to a diplomatic discussion. Yours in hope and anticipation, Count Dracula",
        "    for (const int& n : a) {\n        std::cout << n << ' ';\n    }\n    for (const int& n : b) {\n        std::cout << n << ' ';\n"
        "    }\n    for (const int& n : c) {\n        std::cout << n << ' ';\n    }\n    std::cout << std::endl;\n    return 0;\n}",
    ],
)
def test_quality_keeps_legitimate_responses(response):
    checker = QualityChecker(QualityConfig())
    assert checker.failures("Some instruction about the task", "Some instruction about the task", response) == []


@pytest.mark.parametrize(
    "response, reason",
    [
        ("", "empty_response"),
        ("   \n ", "empty_response"),
        ("As an AI language model, I cannot have opinions about this.", "boilerplate"),
        ("I'm sorry, but I cannot help with that request.", "refusal"),
        ('{"brand": "Acme", "colour": "re', "truncated"),
        ("```python\ndef f(x):\n    return", "truncated"),
        ("The product is a blue cotton shirt made by Acme and it comes in size medium with a price of", "truncated"),
        ("The first step is to open the box. Then take out the device. After that connect the cable to the", "truncated"),
        ("buy now " * 40, "repetition"),
        ("@@@ ### $$$ %%% ^^^ &&& *** ((( ))) !!! ??? <<< >>>", "symbol_ratio"),
        ("Links: https://alpha.org/red/one https://beta.net/blue/two https://gamma.io/green/three", "url_ratio"),
    ],
)
def test_quality_flags(response, reason):
    checker = QualityChecker(QualityConfig())
    failures = checker.failures("Describe the product.", "Describe the product.", response)
    assert failures and failures[0][0] == reason, failures


def test_quality_echo_prompt_and_length_limits():
    prompt = "Write a short poem about the sea and the wind at night."
    checker = QualityChecker(QualityConfig(max_response_chars=100, min_response_words=2))
    assert checker.failures(prompt, prompt, prompt)[0][0] == "echo_prompt"
    assert checker.failures(prompt, prompt, "xx " * 40)[0][0] == "too_long"
    assert checker.failures(prompt, prompt, "Yes")[0][0] == "too_short"
    # Extractive answers copy a span of the prompt: not an echo.
    assert checker.failures(prompt, prompt, "the sea and the wind") == []


def test_truncation_never_flags_valid_json_or_short_answers():
    assert truncation_reason('[{"a": 1}, {"b": [1, 2, 3]}]') is None
    assert truncation_reason("Blue") is None
    assert truncation_reason('{"text": "a brace { inside a string"}') is None
    assert truncation_reason('{"a": 1, "b": [1, 2') is not None


def test_quality_step_runs_in_parallel_and_keeps_order():
    records = [rec(f"q{i}", "" if i % 3 == 0 else f"Answer number {i}.") for i in range(4500)]
    result = QualityFilter(QualityConfig()).run(records, CurateContext(workers=2))
    assert len(result.removed) == 1500 and all(r.reason == "empty_response" for r in result.removed)
    assert result.kept == [r for i, r in enumerate(records) if i % 3]


# ----------------------------------------------------------------------------- language


def test_language_filter_keeps_targets_and_short_texts():
    records = [
        rec("Translate nothing, just answer.", "The weather is lovely today and the sun is shining brightly."),
        rec("Beschreibe das Produkt.", "Das ist ein roter Pullover aus Baumwolle von einer bekannten Marke."),
        rec("Décris le produit.", "C'est un pull rouge en coton d'une marque bien connue et très populaire."),
        rec("Hi", "Ok"),  # too short to identify: kept
        # English about Latin names: whole-text language ID says Latin; without the names it is English.
        rec("Sentence 1: Quintus Caecilius Metellus Macedonicus was the second son of Roman politician and general "
            "Lucius Caecilius Metellus Diadematus. Is this true?", "Yes"),
    ]
    result = LanguageFilter(LanguageConfig(languages=["en"])).run(records, CTX)
    assert [r.record.response[:6] for r in result.removed] == ["Das is", "C'est "]
    assert all(r.reason == "wrong_language" for r in result.removed)
    keep_all = LanguageFilter(LanguageConfig(languages=["en", "de", "fr"])).run(records, CTX)
    assert keep_all.removed == []
    assert LanguageFilter(LanguageConfig(languages=[])).run(records, CTX).removed == []


# ----------------------------------------------------------------------------- decontamination


def test_decontaminate_against_jsonl_suite(tmp_path):
    suite = tmp_path / "suite.jsonl"
    items = [
        {"query": "Which gas do plants absorb from the air during photosynthesis in daylight?", "choices": ["CO2", "O2"], "gold": 0},
        {"query": "What is the boiling point of water at sea level in degrees Celsius?", "choices": ["100", "90"], "gold": 0},
    ]
    suite.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    records = [
        rec("Which gas do plants absorb from the air during photosynthesis in daylight?", "Carbon dioxide."),
        rec("Name a gas that plants need.", "Carbon dioxide."),
        rec("Tell me a fact.", "What is the boiling point of water at sea level in degrees Celsius? It is 100."),
    ]
    ctx = CurateContext(workers=1, eval_items_loader=lambda: read_eval_texts(str(suite)))
    result = Decontaminate(DecontaminateConfig()).run(records, ctx)
    assert {r.record.prompt for r in result.removed} == {records[0].prompt, records[2].prompt}
    assert "suite.jsonl:1:query" in result.removed[0].detail
    assert [r.eval_item for r in result.removed] == ["suite.jsonl:1:query", "suite.jsonl:2:query"]


def test_decontaminate_short_phrase_and_template_ngrams(tmp_path):
    # 6-word items are matched as whole phrases; n-grams shared by many items are template text.
    items = [(f"s:{i}", f"Answer the question below with one word please: what is item {i} called") for i in range(20)]
    items.append(("s:short", "zebra crossings glow purple every tuesday"))
    records = [rec("Remember: zebra crossings glow purple every tuesday, ok?", "ok"), rec("Answer the question below with one word please: what is a cat", "cat")]
    ctx = CurateContext(workers=1, eval_items_loader=lambda: items)
    result = Decontaminate(DecontaminateConfig(min_words=6)).run(records, ctx)
    assert [r.record.prompt for r in result.removed] == [records[0].prompt]
    # By default short texts are ignored, and one shared stock 8-gram is not contamination.
    assert Decontaminate(DecontaminateConfig()).run(records, ctx).removed == []
    stock = [("arc:1", "Question: Which of the following is NOT a mixture?")]
    train = [rec('I know the answer to the question "Which of the following is not a country: Peru or Tiger?"', "Tiger")]
    ctx = CurateContext(workers=1, eval_items_loader=lambda: stock)
    assert Decontaminate(DecontaminateConfig()).run(train, ctx).removed == []
    assert result.counters["template_ngrams_ignored"] > 0


def test_decontaminate_without_eval_items_is_a_no_op():
    records = [rec("a", "b")]
    result = Decontaminate(DecontaminateConfig()).run(records, CTX)
    assert result.kept == records and result.counters["eval_texts"] == 0


def test_read_eval_texts_formats(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"q": "first question", "nested": {"x": ["deep string"]}}]))
    (tmp_path / "b.txt").write_text("line one\n\nline two\n")
    texts = dict(read_eval_texts(str(tmp_path)))
    assert texts == {"a.json:0:q": "first question", "a.json:0:nested.x[0]": "deep string",
                     "b.txt:1": "line one", "b.txt:3": "line two"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": "yes"}\n{broken\n')
    from curatune.errors import DataError

    with pytest.raises(DataError, match="bad.jsonl: line 2"):
        read_eval_texts(str(bad))


# ----------------------------------------------------------------------------- balancing


def test_allocate_water_fills():
    quota = allocate(np.array([100, 5, 50]), np.array([1.0, 1.0, 1.0]), 60)
    assert quota.tolist() == [28, 5, 27] or quota.sum() == 60 and quota[1] == 5
    assert entropy([10, 10]) == pytest.approx(1.0)


def test_balance_cap_uniform_and_temperature():
    records = [rec(f"a{i}", "x", "apparel") for i in range(80)] + [rec(f"b{i}", "y", "books") for i in range(20)]
    capped = Balance(BalanceConfig(strategy="cap", max_per_group=30)).run(records, CTX)
    assert len(capped.kept) == 50 and {r.reason for r in capped.removed} == {"balance_cap"}
    uniform = Balance(BalanceConfig(strategy="uniform")).run(records, CTX)
    cats = [r.category for r in uniform.kept]
    assert cats.count("apparel") == cats.count("books") == 20
    assert uniform.counters["entropy_after"] == pytest.approx(1.0)
    temp = Balance(BalanceConfig(strategy="temperature", temperature=0.5, target_size=60)).run(records, CTX)
    cats = [r.category for r in temp.kept]
    assert len(temp.kept) == 60 and cats.count("apparel") == 40  # sqrt(80):sqrt(20) = 2:1
    assert temp.counters["entropy_after"] > temp.counters["entropy_before"]
    assert Balance(BalanceConfig()).run([], CTX).kept == []


def test_balance_cap_needs_a_cap():
    from curatune.errors import ConfigError

    with pytest.raises(ConfigError):
        Balance(BalanceConfig(strategy="cap")).run([rec("a", "b", "c")], CTX)


# ----------------------------------------------------------------------------- embeddings (semantic, clusters)


@pytest.mark.slow
def test_semantic_dedup_and_embedding_cache(tmp_path, monkeypatch):
    records = [
        rec("What is the capital of France?", "The capital of France is Paris."),
        rec("What's France's capital city?", "Paris is the capital of France."),
        rec("How do I bake bread?", "Mix flour, water, yeast and salt, knead, let it rise, and bake."),
        rec("Ein Satz auf Deutsch über Katzen.", "Katzen schlafen gern in der Sonne."),
    ]
    ctx = CurateContext(workers=1, cache_dir=tmp_path)
    # field=text: one embedding of the whole record against one threshold (the plain SemDeDup
    # mode; the default prompt_and_response rule is tested in test_curate_semantic.py).
    result = SemanticDedup(SemanticDedupConfig(field="text", threshold=0.85, clusters=1)).run(records, ctx)
    assert [r.record for r in result.removed] == [records[1]]
    assert result.removed[0].duplicate_of == records[0].id and result.removed[0].reason == "semantic_duplicate"
    assert list((tmp_path / "embeddings").rglob("*.npz"))
    # A re-run reads every vector from the cache: the embedder is never loaded.
    import curatune.curate.embeddings as emb

    monkeypatch.setattr(emb, "load_embedder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = SemanticDedup(SemanticDedupConfig(field="text", threshold=0.85, clusters=1)).run(records, ctx)
    assert [r.record for r in again.removed] == [records[1]]
    monkeypatch.undo()
    # Balancing without categories groups by k-means clusters of whole-record embeddings
    # (the semantic step embeds prompt and response views, so these are computed here).
    balanced = Balance(BalanceConfig(by="auto", clusters=2, strategy="cap", max_per_group=1)).run(records, ctx)
    assert balanced.counters["grouped_by"] == "cluster" and len(balanced.kept) == 2


# ----------------------------------------------------------------------------- model score


@pytest.mark.parametrize("score", ["ifd", "perplexity"])
def test_model_score_keeps_top_fraction(tiny_model_dir, score):
    from curatune.curate.model_score import ModelScore

    records = [rec(f"Extract the brand from: Acme shirt {i}", '{"brand": "Acme"}') for i in range(5)]
    records += [rec("Say something", "zzqx vvkw " * (i + 1)) for i in range(5)]
    cfg = ModelScoreConfig(score=score, model=str(tiny_model_dir), keep_top_fraction=0.6, batch_size=4)
    result = ModelScore(cfg).run(records, CurateContext(workers=1, device="cpu", dtype="float32"))
    assert len(result.kept) == 6 and len(result.removed) == 4
    assert all(r.reason == "low_model_score" for r in result.removed)
    assert all("model_score" in r.meta for r in result.kept)
    assert result.counters["score"] == score


def test_curate_summary_prints_the_similarity_to_kept_and_the_chain_warning():
    from rich.console import Console

    from curatune.curate.command import _similarity_line

    a, b, c = _chain()
    result = NearDupDedup(NearDupConfig(chain=True)).run([a, b, c], CTX)
    console = Console(record=True, width=200)
    _similarity_line({"name": "near_dup", "counters": result.counters}, console)
    text = console.export_text()
    assert "near_dup: similarity of removed records to the record kept: min 0." in text
    assert "warning:" in text and "chain: true removed 1 of 2" in text
