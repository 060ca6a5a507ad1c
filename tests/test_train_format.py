"""Loss masking and chat formatting (curatune.chat_format) with the tiny tokenizer."""
from __future__ import annotations

import pytest

from curatune.records import Record
from curatune.chat_format import (
    IGNORE_INDEX,
    PLAIN_TEMPLATE,
    PaddingCollator,
    encode,
    ensure_chat_template,
    segments,
)
from curatune.train.cell import EncodedDataset


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trained_text(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX])


def _masked_text(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, l in zip(enc.input_ids, enc.labels) if l == IGNORE_INDEX])


def test_only_the_answer_and_its_end_marker_are_trained(tokenizer):
    record = Record.make([
        {"role": "system", "content": "You extract attributes."},
        {"role": "user", "content": "Acme red shoe, size 42"},
        {"role": "assistant", "content": '{"brand": "Acme"}'},
    ])
    enc = encode(tokenizer, record, max_length=512)
    assert _trained_text(tokenizer, enc) == '{"brand": "Acme"}<|im_end|>\n'
    masked = _masked_text(tokenizer, enc)
    assert "You extract attributes." in masked and "Acme red shoe" in masked
    assert masked.endswith("<|im_start|>assistant\n")
    # labels equal the inputs where trained (the model shifts them itself)
    assert all(l in (IGNORE_INDEX, t) for t, l in zip(enc.input_ids, enc.labels))
    # the whole sequence is the chat-template rendering
    full = tokenizer.apply_chat_template(record.messages, tokenize=False)
    assert tokenizer.decode(enc.input_ids) == full


def test_every_assistant_turn_is_trained_and_user_turns_are_not(tokenizer):
    record = Record.make([
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ])
    enc = encode(tokenizer, record, max_length=512)
    trained = _trained_text(tokenizer, enc)
    assert trained == "first answer<|im_end|>\nsecond answer<|im_end|>\n"
    assert "question" not in trained
    assert [t for _, t in segments(tokenizer, record.messages)] == [False, True, False, True]


def test_plain_template_is_documented_format_for_models_without_one(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    assert ensure_chat_template(tok) is True
    assert tok.chat_template == PLAIN_TEMPLATE
    assert ensure_chat_template(tok) is False
    record = Record.make([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ])
    text = tok.apply_chat_template(record.messages, tokenize=False)
    assert text == "### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\nHello<|im_end|>\n\n"
    enc = encode(tok, record, max_length=512)
    assert _trained_text(tok, enc) == "Hello<|im_end|>\n\n"
    assert _masked_text(tok, enc).endswith("### Assistant:\n")


def test_long_examples_are_cut_and_answerless_ones_dropped(tokenizer):
    long_answer = Record.make([{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 200}])
    long_prompt = Record.make([{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "a"}])
    enc = encode(tokenizer, long_answer, max_length=32)
    assert len(enc.input_ids) == len(enc.labels) == 32 and enc.truncated
    dataset = EncodedDataset(tokenizer, [long_answer, long_prompt], max_length=32)
    assert len(dataset) == 1
    assert dataset.truncated == 1 and dataset.without_target == 1


def test_collator_pads_right_and_masks_padding():
    collate = PaddingCollator(pad_token_id=0)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
