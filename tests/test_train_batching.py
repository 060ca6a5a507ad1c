"""Padding-free (packed) and length-grouped batching, and the precision choice."""
from __future__ import annotations

from pathlib import Path

import pytest

from curatune.chat_format import IGNORE_INDEX, PaddingCollator, encode
from curatune.rundir import read_json
from curatune.train.batching import (
    PerBatchCollator,
    attention_cost_ratio,
    choose_batching,
    choose_precision,
    collator,
    cpu_has_native_bf16,
    packing_pays,
    packing_supported,
    trainer_arguments,
)
from curatune.train.cell import fingerprint
from curatune.train.sweep import run_sweep
from tests.train_helpers import curated_run_dir, make_records, tiny_config

torch = pytest.importorskip("torch")


def _model_and_tokenizer(model_dir: Path, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False  # as in a training cell: packing is detected only without a KV cache
    return model, tokenizer


def _features(tokenizer, records) -> list[dict]:
    out = []
    for record in records:
        enc = encode(tokenizer, record, 96)
        out.append({"input_ids": enc.input_ids, "labels": enc.labels})
    return out


def _varied_records():
    """Records of very different lengths, so padding is most of a padded batch."""
    from curatune.records import Record

    answers = ["ok", "a much longer answer " * 6, "medium answer here", "x " * 30]
    return [Record.make([{"role": "user", "content": f"question {i} " * (1 + 3 * i)},
                         {"role": "assistant", "content": answer}]) for i, answer in enumerate(answers)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_and_gradients_equal_padded(tiny_model_dir, attn):
    model, tokenizer = _model_and_tokenizer(tiny_model_dir, attn)
    model.eval()
    features = _features(tokenizer, _varied_records())
    lengths = [len(f["input_ids"]) for f in features]
    assert max(lengths) > 2 * min(lengths)  # the batch really is variable-length
    padded = PaddingCollator(tokenizer.pad_token_id)(features)
    packed = collator("packed", tokenizer.pad_token_id)(features)
    assert packed["input_ids"].shape == (1, sum(lengths))  # not a single pad token
    assert "attention_mask" not in packed  # the mask builder must see position ids alone
    # the same answer tokens are trained: the shifted labels hold the same targets
    assert (padded["labels"][:, 1:] != IGNORE_INDEX).sum() == (packed["labels"][:, 1:] != IGNORE_INDEX).sum()

    losses, grads = [], []
    for batch in (padded, packed):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_packing_without_position_ids_would_differ(tiny_model_dir):
    """What the position ids prevent: without them the packed examples attend to each other."""
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    model.eval()
    features = _features(tokenizer, _varied_records())
    packed = collator("packed", tokenizer.pad_token_id)(features)
    with torch.no_grad():
        kept_apart = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).logits
        mixed = model(input_ids=packed["input_ids"]).logits
    first = len(features[0]["input_ids"])
    assert torch.allclose(kept_apart[0, :first], mixed[0, :first], atol=1e-5)  # nothing before it
    assert (kept_apart[0, first:] - mixed[0, first:]).abs().max() > 1e-2


def test_packing_check_and_auto_choice(tiny_model_dir):
    model, _ = _model_and_tokenizer(tiny_model_dir)
    assert packing_supported(model)
    assert model.training is False or model.training is True  # mode is restored, not forced
    auto = choose_batching("auto", model)
    assert auto.mode == "auto" and auto.attention_ratio == pytest.approx(attention_cost_ratio(model))
    assert choose_batching("packed", model).mode == "packed"
    assert choose_batching("padded", model).mode == "padded"
    assert choose_batching("grouped", model).mode == "grouped"


def test_packing_check_says_no_to_a_model_whose_logits_do_not_line_up(tiny_model_dir):
    """peft prompt tuning returns logits for its virtual tokens too: the check answers False
    (the rows cannot be compared, so packing is not shown to be safe) instead of raising."""
    from peft import PromptTuningConfig, get_peft_model

    model, _ = _model_and_tokenizer(tiny_model_dir)
    peft_model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert packing_supported(peft_model) is False


def test_packing_check_rejects_an_attention_that_mixes_examples(tiny_model_dir):
    """An attention implementation that ignores the mask (plain causal over the whole row)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from curatune.errors import ModelError

    def whole_row_causal(module, query, key, value, attention_mask, **kwargs):
        kwargs.pop("is_causal", None)
        return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)

    AttentionInterface.register("curatune_test_whole_row", whole_row_causal)
    model, _ = _model_and_tokenizer(tiny_model_dir, "curatune_test_whole_row")
    assert not packing_supported(model)
    assert choose_batching("auto", model).mode == "padded"
    with pytest.raises(ModelError, match="packed"):
        choose_batching("packed", model)


def test_attention_cost_ratio_of_a_llama_from_its_shapes():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    # per layer: q, o 64x64; k, v 64x32; gate, up, down 64x128; plus the (tied) output layer
    linear = 3 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128) + 1000 * 64
    assert attention_cost_ratio(model) == pytest.approx(4 * 3 * 64 / (2 * linear))


def test_packing_pays_on_unequal_lengths_not_on_equal_long_ones():
    ratio = 2.6e-4  # SmolLM2-135M
    assert packing_pays([60, 300, 80, 120], ratio)  # codealpaca-like: most of a padded batch is padding
    assert packing_pays([84, 70, 98, 91], ratio)  # Multi30k-like: little padding, short rows
    assert not packing_pays([384, 384, 384, 384], ratio)  # ShareGPT cut at max length: nothing to save
    assert not packing_pays([384, 384, 384, 300], ratio)  # a little padding does not pay the longer attention
    assert not packing_pays([50, 50], 0.0)  # no padding: equal, so no reason to pack
    assert packing_pays([10, 50], 0.0)  # without attention cost any padding pays


def test_per_batch_collator_picks_each_batch_and_counts(tiny_model_dir):
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    features = _features(tokenizer, _varied_records())
    equal = [{"input_ids": [5] * 40, "labels": [5] * 40} for _ in range(4)]
    # SmolLM2-135M's ratio; the tiny model's own is ~40x larger (attention outweighs its small matrices)
    collate = PerBatchCollator(tokenizer.pad_token_id, 2.6e-4)
    packed, padded = collate(features), collate(equal)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features)) and "position_ids" in packed
    assert padded["input_ids"].shape == (4, 40) and "attention_mask" in padded
    assert collate.counts == {"packed": 1, "padded": 1}


def test_trainer_arguments_count_real_tokens():
    assert trainer_arguments("packed")["include_num_input_tokens_seen"] == "non_padding"
    assert trainer_arguments("padded")["include_num_input_tokens_seen"] == "non_padding"
    assert trainer_arguments("grouped")["train_sampling_strategy"] == "group_by_length"
    assert trainer_arguments("packed")["train_sampling_strategy"] == "random"


@pytest.mark.slow
def test_sweep_cells_packed_and_padded_learn_the_same(tmp_path, tiny_model_dir, monkeypatch):
    """Same batches, same losses step by step; done.json says which batching ran and why."""
    import curatune.train.batching as batching

    # the tiny model's attention outweighs its matrices, so auto would pad every batch: price
    # attention at 0 here so that auto packs every batch with padding
    monkeypatch.setattr(batching, "attention_cost_ratio", lambda model: 0.0)
    records = make_records(40)
    logs, tokens = {}, {}
    for mode in ("padded", "packed", "auto"):
        run_dir = curated_run_dir(tmp_path / mode, records)
        config = tiny_config(run_dir, tiny_model_dir, sizes=[8], methods=["full"], batching=mode,
                             per_device_batch_size=4, epochs=2)
        summary = run_sweep(config, run_dir.root, progress=False)
        assert not summary["failed"]
        cell = run_dir.root / "train" / "full" / "n8" / "s0"
        done = read_json(cell / "done.json")
        assert done["batching"] == mode and done["bf16"] is False
        assert read_json(cell / "cell.json")["batching"] == mode
        logs[mode] = [line["loss"] for line in map(__import__("json").loads, (cell / "train_log.jsonl").open())]
        tokens[mode] = done["train_tokens"]
        if mode == "auto":  # make_records' examples differ in length: the rule packs some batches
            assert done["batches"]["packed"] > 0 and "per batch" in done["batching_reason"]
    # real tokens counted alike: eos doubles as pad here, and packed batches still count it
    assert tokens["padded"] == tokens["packed"] == tokens["auto"]
    assert logs["padded"] == pytest.approx(logs["packed"], rel=1e-4)
    assert logs["padded"] == pytest.approx(logs["auto"], rel=1e-4)


def test_fingerprint_changes_only_for_grouped(tmp_path, tiny_model_dir):
    from curatune.rundir import CellSpec

    run_dir = curated_run_dir(tmp_path, make_records(20))
    spec = CellSpec("lora", 4, 0)
    prints = {mode: fingerprint(tiny_config(run_dir, tiny_model_dir, batching=mode), spec, ["a"])
              for mode in ("auto", "padded", "packed", "grouped")}
    assert prints["auto"] == prints["padded"] == prints["packed"]
    assert prints["grouped"] != prints["padded"]


def test_precision_choice(tmp_path, monkeypatch):
    with_bf16 = tmp_path / "cpuinfo-bf16"
    with_bf16.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "cpuinfo-avx2"
    without.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_has_native_bf16(with_bf16) and not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")

    assert choose_precision(False, on_cuda=False).bf16 is False
    assert choose_precision(True, on_cuda=False).bf16 is True
    assert choose_precision("auto", on_cuda=False).bf16 is False  # the default stays fp32 on CPU
    import curatune.train.batching as batching

    monkeypatch.setattr(batching, "cpu_has_native_bf16", lambda: True)
    choice = choose_precision("cpu", on_cuda=False)
    assert choice.bf16 is True and "native bf16" in choice.reason
    monkeypatch.setattr(batching, "cpu_has_native_bf16", lambda: False)
    assert choose_precision("cpu", on_cuda=False).bf16 is False


def test_grouped_batches_hold_less_padding(tmp_path, tiny_model_dir):
    """train.batching = grouped: the Trainer's length-grouped sampler, padded batches of similar lengths."""
    from transformers import Trainer

    from curatune.records import Record
    from curatune.rundir import CellSpec
    from curatune.train.cell import EncodedDataset, training_arguments

    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    records = [Record.make([{"role": "user", "content": "word " * (1 + (i * 7) % 16)},
                            {"role": "assistant", "content": "answer"}]) for i in range(64)]
    dataset = EncodedDataset(tokenizer, records, 512)
    assert len(dataset) == 64
    run_dir = curated_run_dir(tmp_path, make_records(20))
    padding = {}
    for mode in ("padded", "grouped"):
        config = tiny_config(run_dir, tiny_model_dir, batching=mode, per_device_batch_size=4)
        args = training_arguments(config, CellSpec("full", 64, 0), tmp_path / mode, 16, False, False, mode)
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=collator(mode, tokenizer.pad_token_id), processing_class=tokenizer)
        batches = list(trainer.get_train_dataloader())
        assert sum(len(b["input_ids"]) for b in batches) == 64  # every example once
        padding[mode] = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    assert padding["grouped"] < padding["padded"] / 2
