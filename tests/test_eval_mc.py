"""Multiple-choice scoring: formats, lm-eval semantics, hand-checked log-likelihoods, batching."""
from __future__ import annotations

import bz2
import json

import numpy as np
import pytest
import torch

from curatune.errors import DataError
from curatune.evaluate.lm_scoring import LoglikelihoodScorer
from curatune.evaluate.multiple_choice import (
    MCItem,
    hellaswag_context_from_text,
    load_mc_items,
    score_multiple_choice,
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def direct_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """Hand-rolled reference: one unbatched forward over lm-eval's token split."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    ctx = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    seq = ctx + whole[len(ctx):]
    n = len(whole) - len(ctx)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0].float(), dim=-1)
    targets = torch.tensor(seq[1:])
    return float(logprobs.gather(1, targets[:, None]).squeeze(1)[-n:].sum())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ITEMS = [
    MCItem("q0", ("Question: Which object is a magnet attracted to?\nAnswer:",),
           ("iron nail", "a piece of paper that is long", "glass"), 0),
    MCItem("q1", ("Translate to German: A man is riding a bicycle.",),
           ("Ein Mann fährt Fahrrad.", "Acme", "The quick brown fox jumps over the lazy dog."), 0),
    MCItem("q2", ("def add(a, b):\n",), ("    return a + b", "    return a - b"), 0),  # trailing newline
    MCItem("w0", ("Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"),
           ("Sarah was a much better surgeon than Maria so Sarah", "Sarah was a much better surgeon than Maria so Maria"),
           1, "always got the harder cases."),
    MCItem("w1", ("Tom", "The dog"), ("Tom", "The dog"), 0, "ran into the garden."),  # options differ at token 0
]


# ---- loading ---------------------------------------------------------------------------------
def test_load_llm_foundry_and_partial_formats(tmp_path):
    mc = write_jsonl(tmp_path / "arc.jsonl", [
        {"query": "Question: Q1?", "choices": ["a", "b", "c"], "gold": 2},
        {"query": "Question: Q2?", "choices": ["x", "y"], "gold": 0},
    ])
    items = load_mc_items(mc)
    assert [i.example_id for i in items] == ["arc-0", "arc-1"]
    assert items[0].requests() == [("Question: Q1?", " a"), ("Question: Q1?", " b"), ("Question: Q1?", " c")]
    assert items[0].gold == 2 and not items[0].is_partial

    wino = write_jsonl(tmp_path / "wino.jsonl", [
        {"context_options": ["A so B", "A so C"], "continuation": "won the race.", "gold": 1}])
    (item,) = load_mc_items(wino)
    assert item.is_partial
    assert item.requests() == [("A so B", " won the race."), ("A so C", " won the race.")]
    assert item.prompt == "A so ___ won the race."


def test_load_hugging_face_row_formats_follow_lm_eval_task_configs(tmp_path):
    rows = [
        {"question": "Which is hot?", "choices": {"text": ["ice", "fire"], "label": ["A", "B"]}, "answerKey": "B"},
        {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0},
        {"ctx_a": "A man sits on a roof.", "ctx_b": "he", "activity_label": "Roofing",
         "endings": ["is ripping [title] tiles off.", "b", "c", "d"], "label": "0"},
        {"sentence": "Ann beat Bo because _ was faster.", "option1": "Ann", "option2": "Bo", "answer": "1"},
    ]
    arc, piqa, hella, wino = load_mc_items(write_jsonl(tmp_path / "hf.jsonl", rows))
    assert arc.contexts == ("Question: Which is hot?\nAnswer:",) and arc.choices == ("ice", "fire") and arc.gold == 1
    assert piqa.contexts == ("Question: Open a jar\nAnswer:",) and piqa.gold == 0
    assert hella.contexts == ("Roofing: A man sits on a roof. He",)
    assert hella.choices[0] == "is ripping. tiles off."
    assert wino.contexts == ("Ann beat Bo because Ann", "Ann beat Bo because Bo")
    assert wino.continuation == "was faster." and wino.gold == 0


def test_load_hellaswag_text_file(tmp_path):
    text = (
        "Roof shingle removal: A man is sitting on a roof. he\n3\n"
        "is using wrap to wrap a pair of skis.\nis ripping level tiles off.\nis holding a rubik's cube.\n"
        "starts pulling up roofing on a roof.\n"
        "Health: How to relax. Breathe slowly. Count to ten.\n0\nend a\nend b\nend  c\nend d\n"
    )
    path = tmp_path / "hellaswag_val.txt.bz2"
    path.write_bytes(bz2.compress(text.encode()))
    first, second = load_mc_items(path)
    # lm-eval: activity_label + ": " + ctx_a + " " + ctx_b.capitalize()
    assert first.contexts == ("Roof shingle removal: A man is sitting on a roof. He",)
    assert first.gold == 3 and first.choices[3] == "starts pulling up roofing on a roof."
    assert second.contexts == ("Health: How to relax. Breathe slowly. Count to ten.",)
    assert second.choices[2] == "end c"  # double space collapsed as lm-eval's preprocess does
    assert hellaswag_context_from_text("Clean and jerk: A lady walks. She bends down. the lady") == \
        "Clean and jerk: A lady walks. She bends down. The lady"


def test_limit_takes_the_same_seeded_subset(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [{"query": f"Q{i}", "choices": ["a", "b"], "gold": 0} for i in range(50)])
    a = load_mc_items(path, limit=10)
    b = load_mc_items(path, limit=10)
    c = load_mc_items(path, limit=10, seed=1)
    assert [i.example_id for i in a] == [i.example_id for i in b]
    assert [i.example_id for i in a] != [i.example_id for i in c]
    assert len(a) == 10 and len(load_mc_items(path, limit=500)) == 50
    ids = [int(i.example_id.split("-")[1]) for i in a]
    assert ids == sorted(ids)  # file order kept


@pytest.mark.parametrize(
    "row, message",
    [
        ({"query": "Q", "choices": ["a", "b"], "gold": 5}, "row 0: field 'gold'"),
        ({"query": "Q", "choices": "ab", "gold": 0}, "row 0: field 'choices'"),
        ({"prompt": "Q", "answer": "a"}, "row 0: unknown multiple-choice row"),
        ({"context_options": ["a", "b"], "continuation": 3, "gold": 0}, "row 0: field 'continuation'"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError, match=message) as err:
        load_mc_items(path)
    assert "bad.jsonl" in str(err.value)


def test_missing_file_and_offline_hub_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file"):
        load_mc_items(tmp_path / "nope.jsonl")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="offline"):
        load_mc_items("allenai/ai2_arc:ARC-Easy@test")
    with pytest.raises(DataError, match="offline"):
        load_mc_items("hf:Rowan/hellaswag")


# ---- scoring ---------------------------------------------------------------------------------
def test_logliks_match_a_direct_forward_pass(tiny):
    model, tok = tiny
    result = score_multiple_choice(model, tok, ITEMS, batch_size=4, progress=False)
    for item, row in zip(ITEMS, result.per_item):
        expected = [direct_loglik(model, tok, c, k) for c, k in item.requests()]
        np.testing.assert_allclose(row["logliks"], expected, atol=1e-4, rtol=0)
        assert row["acc"] == float(int(np.argmax(expected)) == item.gold)
        assert row["reference"] == item.choices[item.gold]
        assert row["output"] == item.choices[int(np.argmax(row["logliks"]))]
    assert result.metrics["acc"] == pytest.approx(np.mean([r["acc"] for r in result.per_item]))
    assert set(result.metrics) == {"acc", "acc_norm"}


def test_shared_prefix_cache_goes_through_the_supported_argument(tiny):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes
    in 5.40): the scorer passes the KV cache under whichever name the model's forward takes."""
    import inspect

    model, tok = tiny
    supported = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    seen: list[set] = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(set(kwargs)), with_kwargs=True)
    try:
        score_multiple_choice(model, tok, ITEMS, batch_size=4, progress=False)
    finally:
        hook.remove()
    with_cache = [keys for keys in seen if keys & {"cache", "past_key_values"}]
    assert with_cache, "no pass reused a shared-prefix cache"
    assert all(supported in keys and len(keys & {"cache", "past_key_values"}) == 1 for keys in with_cache)


def test_trailing_whitespace_moves_into_the_continuation(tiny):
    model, tok = tiny
    scorer = LoglikelihoodScorer(model, tok)
    moved = scorer.encode_pair("def add(a, b):\n", " return")
    assert moved == scorer.encode_pair("def add(a, b):", "\n return")
    assert list(moved.context) == tok.encode("def add(a, b):")
    whole = tok.encode("def add(a, b):\n return")
    assert list(moved.continuation) == whole[len(moved.context):]


def test_context_split_comes_from_encoding_the_whole_string(tiny):
    _, tok = tiny
    scorer = LoglikelihoodScorer(None, tok, max_length=64)
    request = scorer.encode_pair("Extract the bra", "nd")
    whole = tok.encode("Extract the brand")
    assert list(request.context) == tok.encode("Extract the bra")
    assert list(request.continuation) == whole[len(request.context):]


def test_acc_and_acc_norm_follow_lm_eval_definitions(tiny):
    model, tok = tiny
    candidates = [
        MCItem(f"c{i}", (ctx,), ("ok", long_choice), 0)
        for i, (ctx, long_choice) in enumerate([
            ("Question: Which object is a magnet attracted to? Answer:", "iron nail and a lot of other metal things"),
            ("Extract the brand, colour and size", '{"brand": "Acme", "colour": "red", "size": "M"}'),
            ("The quick brown fox", "jumps over the lazy dog."),
            ("Translate to German:", "Ein Mann fährt Fahrrad."),
        ])
    ]
    result = score_multiple_choice(model, tok, candidates, progress=False)
    differing = []
    for item, row in zip(candidates, result.per_item):
        lls = np.array(row["logliks"])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / [len(c) for c in item.choices]))
        assert row["acc"] == float(pred == 0) and row["acc_norm"] == float(pred_norm == 0)
        if pred != pred_norm:
            differing.append((item, pred_norm))
    assert differing, "expected a long choice to win only after length normalization"
    item, pred_norm = differing[0]
    flipped = MCItem(item.example_id, item.contexts, item.choices, pred_norm)
    row = score_multiple_choice(model, tok, [flipped], progress=False).per_item[0]
    assert (row["acc"], row["acc_norm"]) == (0.0, 1.0)


def test_partial_scoring_scores_the_shared_continuation_after_each_context(tiny):
    model, tok = tiny
    wino = [i for i in ITEMS if i.is_partial]
    result = score_multiple_choice(model, tok, wino, progress=False)
    for item, row in zip(wino, result.per_item):
        expected = [direct_loglik(model, tok, ctx, " " + item.continuation) for ctx in item.contexts]
        np.testing.assert_allclose(row["logliks"], expected, atol=1e-4, rtol=0)
        # lm-eval's choices for partial scoring are the context options: acc_norm divides by their length
        norm = int(np.argmax(np.array(expected) / [len(c) for c in item.contexts]))
        assert row["acc_norm"] == float(norm == item.gold)


def test_batching_and_prefix_sharing_do_not_change_scores(tiny):
    model, tok = tiny
    one = score_multiple_choice(model, tok, ITEMS, batch_size=1, progress=False)
    eight = score_multiple_choice(model, tok, ITEMS, batch_size=8, progress=False)
    plain = score_multiple_choice(model, tok, ITEMS, batch_size=8, progress=False, share_prefix=False)
    for a, b, c in zip(one.per_item, eight.per_item, plain.per_item):
        np.testing.assert_allclose(a["logliks"], b["logliks"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(a["logliks"], c["logliks"], atol=1e-5, rtol=0)
    assert one.metrics == eight.metrics == plain.metrics


def test_long_inputs_are_truncated_from_the_left_like_lm_eval(tiny):
    model, tok = tiny
    context = "The quick brown fox jumps over the lazy dog. " * 6 + "Answer:"
    item = MCItem("long", (context,), ("iron nail", "glass"), 0)
    max_length = 24
    row = score_multiple_choice(model, tok, [item], max_length=max_length, progress=False).per_item[0]
    scorer = LoglikelihoodScorer(model, tok, max_length=max_length)
    for choice, got in zip(item.choices, row["logliks"]):
        req = scorer.encode_pair(context, " " + choice)
        seq = list(req.context + req.continuation)[-(max_length + 1):]
        assert len(seq) - 1 == max_length
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0], dim=-1)
        n = len(req.continuation)
        expected = float(lp.gather(1, torch.tensor(seq[1:])[:, None]).squeeze(1)[-n:].sum())
        assert got == pytest.approx(expected, abs=1e-4)


def test_empty_context_uses_the_prefix_token(tiny):
    _, tok = tiny
    scorer = LoglikelihoodScorer(None, tok, max_length=64)
    request = scorer.encode_pair("", " iron nail")
    assert request.context == (tok.bos_token_id,)
    assert list(request.continuation) == tok.encode(" iron nail", add_special_tokens=False)


@pytest.mark.shared_data
def test_shared_benchmark_files_load(shared_data):
    mc = shared_data / "bench" / "mc"
    assert len(load_mc_items(mc / "arc_easy.jsonl", limit=20)) == 20
    piqa = load_mc_items(mc / "piqa.jsonl", limit=5)
    assert all(item.contexts[0].endswith("\n") for item in piqa)
    wino = load_mc_items(mc / "winogrande.jsonl", limit=5)
    assert all(item.is_partial for item in wino)
    hella = load_mc_items(shared_data / "bench" / "hellaswag" / "hellaswag_val_full.txt.bz2", limit=50)
    assert len(hella) == 50 and all(len(i.choices) == 4 for i in hella)
    assert hella[0].contexts[0].split(": ", 1)[1][0].isupper()


def test_peft_wrapped_model_scores_like_its_base(tiny):
    peft = pytest.importorskip("peft")
    model, tok = tiny
    import copy

    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    wrapped.eval()  # fresh LoRA adapters start as the identity (B = 0)
    base = score_multiple_choice(model, tok, ITEMS, progress=False)
    lora = score_multiple_choice(wrapped, tok, ITEMS, progress=False)
    for a, b in zip(base.per_item, lora.per_item):
        np.testing.assert_allclose(a["logliks"], b["logliks"], atol=1e-5, rtol=0)


def test_length_chunks_cover_every_row_once_within_the_row_cap():
    from curatune.evaluate.lm_scoring import _length_chunks

    lengths = [30, 29, 28, 12, 11, 10, 10, 3, 2, 2, 1]
    rows = list(range(len(lengths)))
    chunks = list(_length_chunks(rows, lengths, max_rows=4, overhead=16))
    assert [r for _, chunk in chunks for r in chunk] == rows
    assert all(len(chunk) <= 4 and chunk[0] == start for start, chunk in chunks)
    # a huge per-call overhead merges as far as the cap allows; none splits row by row
    assert len(list(_length_chunks(rows, lengths, max_rows=16, overhead=10**6))) == 1
    assert len(list(_length_chunks(rows, lengths, max_rows=16, overhead=0))) == len(set(lengths))
