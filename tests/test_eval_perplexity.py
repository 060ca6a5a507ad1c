"""Rolling perplexity (lm-eval loglikelihood_rolling) and LAMBADA, checked against direct forwards."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from curatune.errors import DataError
from curatune.evaluate.perplexity import (
    LambadaItem,
    TextItem,
    load_lambada_items,
    load_text_items,
    rolling_perplexity,
    rolling_windows,
    score_lambada,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Translate to German: A man is riding a bicycle.",
    'Extract the brand, colour and size from the product description as JSON. {"brand": "Acme"}',
    "def add(a, b):\n    return a + b\n",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def token_logprobs(model, seq):
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0].float(), dim=-1)
    return lp.gather(1, torch.tensor(seq[1:])[:, None]).squeeze(1)


def test_rolling_windows_predict_every_token_once_with_maximal_context():
    tokens = list(range(100, 123))  # 23 tokens
    windows = rolling_windows(tokens, prefix_token=0, max_length=8)
    predicted = [t for w in windows for t in w.continuation]
    assert predicted == tokens
    assert windows[0].context == (0,) and windows[0].continuation == tuple(tokens[:8])
    # later windows: context + continuation fill max_length + 1 tokens (lm-eval's disjoint windows)
    for w in windows[1:]:
        assert len(w.context) + len(w.continuation) == 9
        end = tokens.index(w.continuation[-1]) + 1
        assert list(w.context + w.continuation) == tokens[end - 9:end]
    assert rolling_windows([], 0, 8) == []


def test_rolling_windows_match_lm_eval_when_installed():
    utils = pytest.importorskip("lm_eval.utils")
    tokens = list(range(1, 40))
    for max_len in (1, 5, 16, 39, 64):
        ours = [(list(w.context), list(w.continuation)) for w in rolling_windows(tokens, 0, max_len)]
        theirs = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(tokens, 0, max_len, 1)]
        assert ours == [(list(a), list(b)) for a, b in theirs]


def test_perplexity_matches_direct_computation_short_texts(tiny):
    model, tok = tiny
    result = rolling_perplexity(model, tok, TEXTS, batch_size=2, progress=False)
    total_ll = 0.0
    for text, row in zip(TEXTS, result.per_item):
        seq = [tok.bos_token_id] + tok.encode(text)
        expected = float(token_logprobs(model, seq).sum())
        assert row["loglik"] == pytest.approx(expected, abs=1e-4)
        assert row["n_tokens"] == len(seq) - 1
        total_ll += expected
    words = sum(len(re.split(r"\s+", t)) for t in TEXTS)
    nbytes = sum(len(t.encode()) for t in TEXTS)
    ntok = sum(r["n_tokens"] for r in result.per_item)
    m = result.metrics
    assert m["word_perplexity"] == pytest.approx(math.exp(-total_ll / words), rel=1e-5)
    assert m["byte_perplexity"] == pytest.approx(math.exp(-total_ll / nbytes), rel=1e-5)
    assert m["bits_per_byte"] == pytest.approx(-total_ll / nbytes / math.log(2), rel=1e-5)
    assert m["token_perplexity"] == pytest.approx(math.exp(-total_ll / ntok), rel=1e-5)


def test_perplexity_with_windows_matches_direct_windowed_computation(tiny):
    model, tok = tiny
    text = " ".join(TEXTS)
    tokens = tok.encode(text)
    max_length = 12
    assert len(tokens) > 3 * max_length
    expected = 0.0
    for w in rolling_windows(tokens, tok.bos_token_id, max_length):
        seq = list(w.context + w.continuation)
        expected += float(token_logprobs(model, seq)[-len(w.continuation):].sum())
    one = rolling_perplexity(model, tok, [text], max_length=max_length, batch_size=1, progress=False)
    eight = rolling_perplexity(model, tok, [TextItem("doc", text)], max_length=max_length, batch_size=8, progress=False)
    assert one.per_item[0]["loglik"] == pytest.approx(expected, abs=1e-4)
    assert abs(one.per_item[0]["loglik"] - eight.per_item[0]["loglik"]) < 1e-5
    assert eight.per_item[0]["example_id"] == "doc" and one.per_item[0]["n_tokens"] == len(tokens)


def test_load_text_items_jsonl_and_txt(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    assert [i.text for i in load_text_items(jsonl)] == TEXTS
    assert len(load_text_items(jsonl, limit=2)) == 2
    txt = tmp_path / "docs.txt"
    txt.write_text("first paragraph\nstill first\n\n\nsecond one\n")
    assert [i.text for i in load_text_items(txt)] == ["first paragraph\nstill first", "second one"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl: row 1: no text field"):
        load_text_items(bad)
    with pytest.raises(DataError, match="no such file"):
        load_text_items(tmp_path / "missing.jsonl")


def test_lambada_acc_is_greedy_match_and_perplexity_is_exp_mean(tiny, tmp_path):
    model, tok = tiny
    path = tmp_path / "lambada.jsonl"
    path.write_text(
        json.dumps({"context": "The quick brown fox jumps over the lazy", "continuation": "dog"}) + "\n"
        + json.dumps({"text": "Translate to German: A man is riding a bicycle"}) + "\n"
    )
    items = load_lambada_items(path)
    assert items[0] == LambadaItem("lambada-0", "The quick brown fox jumps over the lazy", " dog")
    assert items[1].context == "Translate to German: A man is riding a" and items[1].continuation == " bicycle"
    # an item the model gets right by construction: its own greedy next token
    ctx = "Question: Which object is a magnet"
    ids = tok.encode(ctx)
    with torch.no_grad():
        best = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    own = LambadaItem("own", ctx, tok.decode(ids + [best])[len(ctx):])
    items.append(own)
    result = score_lambada(model, tok, items, progress=False)
    lls = []
    for item, row in zip(items, result.per_item):
        context_ids = tok.encode(item.context)
        cont = tok.encode(item.context + item.continuation)[len(context_ids):]
        lp = token_logprobs(model, context_ids + cont)[-len(cont):]
        assert row["loglik"] == pytest.approx(float(lp.sum()), abs=1e-4)
        lls.append(float(lp.sum()))
    assert result.per_item[-1]["acc"] == 1.0 and result.per_item[-1]["output"] == own.continuation
    assert result.metrics["acc"] == pytest.approx(sum(r["acc"] for r in result.per_item) / 3)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(-sum(lls) / 3), rel=1e-5)


@pytest.mark.shared_data
def test_shared_lambada_loads(shared_data):
    items = load_lambada_items(shared_data / "bench" / "mc" / "lambada_openai.jsonl", limit=10)
    assert len(items) == 10 and all(i.continuation.startswith(" ") for i in items)
