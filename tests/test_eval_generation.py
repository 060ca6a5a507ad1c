"""Batched greedy generation on the tiny model: same answers as one-by-one, stops, formatting."""
from __future__ import annotations

import pytest
import torch

from curatune.evaluate.generation import (
    GenerationSettings,
    cut_at_stop,
    encode_prompts,
    format_prompt,
    generate,
    prompt_messages,
)

QUESTIONS = [
    "Extract the brand from: Acme red shirt",
    "Translate to German: A man is riding a bicycle down a long and dusty road in the summer.",
    "Question: Which object is a magnet attracted to?",
    "hi",
    "Extract the brand, colour and size from the product description as JSON: a blue cotton Acme jumper, size M.",
    "def add(a, b):",
    "The quick brown fox",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model runs fastest on one thread, above all on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """The tiny model with larger random weights, so greedy answers are long and varied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return model, tokenizer


def _prompts(tokenizer):
    return [format_prompt(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_batched_left_padded_equals_unbatched(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    settings = GenerationSettings(max_new_tokens=24, batch_size=4)
    batched = generate(model, tokenizer, prompts, settings, progress=False).outputs
    single = [
        generate(model, tokenizer, [p], GenerationSettings(max_new_tokens=24, batch_size=1), progress=False).outputs[0]
        for p in prompts
    ]
    assert batched == single
    assert len(set(batched)) > 3 and all(batched)  # real, varied answers, in the caller's order
    # batch composition must not matter either
    reversed_batched = generate(model, tokenizer, prompts[::-1], GenerationSettings(24, 3), progress=False).outputs
    assert reversed_batched == batched[::-1]


def test_stop_strings_cut_and_stop(tiny):
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    full = generate(model, tokenizer, prompts, GenerationSettings(max_new_tokens=24, batch_size=4), progress=False).outputs
    # a stop string that occurs inside some answers but not at their start
    candidates = [o[len(o) // 2 : len(o) // 2 + 2] for o in full if len(o.strip()) > 6]
    stop = next(c for c in candidates if c.strip() and all(not o.startswith(c) for o in full))
    stopped = generate(
        model, tokenizer, prompts, GenerationSettings(max_new_tokens=24, batch_size=4, stop=[stop]), progress=False
    ).outputs
    assert any(stop in o for o in full)
    for long, short in zip(full, stopped):
        assert stop not in short
        assert short == cut_at_stop(long, [stop]).strip()


def test_eos_ends_answer(tiny_model_dir):
    """With the EOS logit forced highest after two tokens, answers stop there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    calls = {"n": 0}

    def force_eos(module, args, output):
        calls["n"] += 1
        if calls["n"] > 2:  # prefill + one decoding step, then EOS
            output.logits[:, -1, :] = -1e9
            output.logits[:, -1, eos] = 0.0
        return output

    handle = model.register_forward_hook(force_eos)
    try:
        out = generate(model, tokenizer, _prompts(tokenizer)[:1], GenerationSettings(max_new_tokens=30), progress=False)
    finally:
        handle.remove()
    ids = tokenizer(out.outputs[0], add_special_tokens=False)["input_ids"] if out.outputs[0] else []
    assert len(ids) <= 2 and calls["n"] == 3


def test_max_new_tokens_bounds_the_answer(tiny, monkeypatch):
    model, tokenizer = tiny
    new_tokens = []
    original = model.generate

    def recording_generate(*args, **kwargs):
        out = original(*args, **kwargs)
        new_tokens.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", recording_generate)
    out = generate(model, tokenizer, _prompts(tokenizer), GenerationSettings(max_new_tokens=5, batch_size=4), progress=False)
    assert new_tokens == [5, 5] and all(out.outputs)


def test_long_prompts_are_cut_from_the_start(tiny):
    model, tokenizer = tiny
    limit = model.config.max_position_embeddings
    long_prompt = format_prompt(tokenizer, [{"role": "user", "content": "fox " * (limit + 50)}])
    out = generate(model, tokenizer, [long_prompt], GenerationSettings(max_new_tokens=8), progress=False)
    assert out.truncated_prompts == 1 and len(out.outputs) == 1


def test_prompt_formatting_matches_training(tiny_model_dir):
    from transformers import AutoTokenizer

    from curatune.chat_format import PLAIN_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Colour?"},
        {"role": "assistant", "content": "red"},
    ]
    assert prompt_messages(messages) == messages[:2]
    text = format_prompt(tokenizer, messages)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "red" not in text
    ids = encode_prompts(tokenizer, [text])[0]
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]

    # a tokenizer without a chat template gets training's plain template, and is not modified
    tokenizer.chat_template = None
    plain = format_prompt(tokenizer, messages)
    assert plain == "### System:\nBe brief.\n\n### User:\nColour?\n\n### Assistant:\n"
    assert tokenizer.chat_template is None
    assert "### Assistant:" in PLAIN_TEMPLATE


def test_empty_prompt_list(tiny):
    model, tokenizer = tiny
    assert generate(model, tokenizer, [], progress=False).outputs == []


def test_cut_at_stop_earliest():
    assert cut_at_stop("abc</s>def\n\nxyz", ["\n\n", "</s>"]) == "abc"
    assert cut_at_stop("abc", ["", "zz"]) == "abc"
