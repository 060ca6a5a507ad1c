"""Batched greedy generation on the tiny model: same answers as one-by-one, stops, formatting."""
from __future__ import annotations

import pytest
import torch

from curatune.evaluate.generation import (
    GenerationSettings,
    GreedyDecoder,
    cut_at_stop,
    encode_prompts,
    eos_token_ids,
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


def test_max_new_tokens_bounds_the_answer(tiny):
    model, tokenizer = tiny
    prompts = encode_prompts(tokenizer, _prompts(tokenizer))
    decoder = GreedyDecoder(model, tokenizer, 5, eos_token_ids(model, tokenizer), [], tokenizer.pad_token_id or 0)
    answers = decoder.decode(prompts)
    assert all(len(a) <= 5 for a in answers) and max(map(len, answers)) == 5


def _reference_generate(model, tokenizer, prompts, settings):
    """transformers' own greedy ``generate`` on the same left-padded batches (the reference)."""
    from transformers import GenerationConfig

    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=settings.max_new_tokens,
                              eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None,
                              stop_strings=settings.stop or None)
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs = [""] * len(prompts)
    for start in range(0, len(order), settings.batch_size):
        batch = order[start:start + settings.batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        with torch.no_grad():
            generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                       tokenizer=tokenizer)
        for row, i in enumerate(batch):
            new = generated[row, width:].tolist()
            new = new[:next((k for k, t in enumerate(new) if t in eos), len(new))]
            outputs[i] = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), settings.stop).strip()
    return outputs


@pytest.mark.parametrize("stop", [[], ["e"]])
def test_answers_equal_transformers_generate(tiny, stop):
    """The loop that drops finished rows picks the same tokens as transformers' greedy generate."""
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    settings = GenerationSettings(max_new_tokens=20, batch_size=4, stop=stop)
    ours = generate(model, tokenizer, prompts, settings, progress=False).outputs
    assert ours == _reference_generate(model, tokenizer, prompts, settings)
    if stop:  # the stop string really ended some answers early
        full = generate(model, tokenizer, prompts, GenerationSettings(20, 4), progress=False).outputs
        assert sum(o != f for o, f in zip(ours, full)) >= 2


def test_finished_rows_leave_the_batch(tiny):
    """Once half a batch has finished, the finished rows are not computed any further
    (generate() keeps every row until the slowest one ends)."""
    model, tokenizer = tiny
    prompts = encode_prompts(tokenizer, _prompts(tokenizer))

    class FiveEndEarly(GreedyDecoder):
        """Prompts 0-4 end after two tokens, 5 and 6 run to max_new_tokens."""
        seen: dict[int, int] = {}

        def _ends(self, answer, token):
            order = self.seen.setdefault(id(answer), len(self.seen))
            answer.append(token)
            return order < 5 and len(answer) >= 2

    rows_per_call = []

    def record(module, args, kwargs):
        rows_per_call.append(kwargs["input_ids"].shape[0])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        answers = FiveEndEarly(model, tokenizer, 10, [], [], tokenizer.pad_token_id or 0).decode(prompts)
    finally:
        handle.remove()
    assert [len(a) for a in answers] == [2] * 5 + [10, 10]
    # prefill and the first step with all 7 rows, then only the 2 running ones
    assert rows_per_call == [7, 7] + [2] * 8


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
