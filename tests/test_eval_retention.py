"""Retention probe: base KL == 0, drift after perturbation, storage roundtrip, exact top-k KL."""
from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch

from curatune.errors import DataError, ModelError
from curatune.evaluate.retention import (
    RetentionReference,
    coarse_kl,
    load_retention_prompts,
    retention_scores,
)

PROMPTS = ["What is the capital of France?", "Add 2 and 3.", "Write a haiku about rain.", "Say hello."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def reference(tiny):
    model, tok = tiny
    return RetentionReference.build(model, tok, PROMPTS, max_new_tokens=6, top_k=16, batch_size=3, progress=False)


def test_packaged_prompts_are_varied_and_well_formed():
    prompts = load_retention_prompts()
    assert 50 <= len(prompts) <= 60
    assert len({p["id"] for p in prompts}) == len(prompts)
    assert len({p["prompt"] for p in prompts}) == len(prompts)
    categories = Counter(p["category"] for p in prompts)
    assert {"facts", "arithmetic", "instructions", "writing", "reasoning"} <= set(categories)
    assert max(categories.values()) <= 12


def test_reference_holds_chat_formatted_prompts_and_greedy_answers(tiny, reference):
    model, tok = tiny
    assert len(reference.answers) == len(PROMPTS)
    for formatted, prompt, ids, answer in zip(reference.formatted, PROMPTS, reference.prompt_ids, reference.answer_ids):
        assert formatted.startswith("<|im_start|>user\n" + prompt) and formatted.endswith("<|im_start|>assistant\n")
        assert 1 <= len(answer) <= 6
        # unbatched greedy decoding reproduces the stored answer
        seq = list(ids)
        with torch.no_grad():
            for expected in answer:
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
                assert nxt == expected
                seq.append(nxt)
    assert reference.topk_ids.shape == (sum(map(len, reference.answer_ids)), 16)


def test_base_model_has_zero_kl_and_its_own_answer_logprob(tiny, reference):
    model, tok = tiny
    result = retention_scores(model, tok, reference, batch_size=2, progress=False)
    assert result.metrics["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["answer_agreement"] == 1.0
    # base_answer_logprob: mean token log-prob of the stored answers, by a direct forward
    lps = []
    for ids, answer in zip(reference.prompt_ids, reference.answer_ids):
        seq = list(ids) + list(answer)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0], dim=-1)
        lps.extend(lp[len(ids) - 1:].gather(1, torch.tensor(answer)[:, None]).squeeze(1).tolist())
    assert result.metrics["base_answer_logprob"] == pytest.approx(sum(lps) / len(lps), abs=1e-5)
    row = result.per_item[0]
    assert {"example_id", "prompt", "reference", "output", "kl_divergence", "base_answer_logprob"} <= set(row)
    assert row["output"] == row["reference"]


def test_perturbed_weights_drift(tiny, reference):
    model, tok = tiny
    perturbed = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    result = retention_scores(perturbed, tok, reference, generate=False, progress=False)
    assert result.metrics["kl_divergence"] > 1e-3
    assert "answer_agreement" not in result.metrics
    # The per-prompt rows weighted by their answer tokens give the suite's token means back, so a
    # paired test on the rows (curatune compare) tests the number the report shows.
    tokens = [row["n_answer_tokens"] for row in result.per_item]
    assert tokens == [len(a) for a in reference.answer_ids]
    for metric in ("kl_divergence", "base_answer_logprob"):
        weighted = sum(row[metric] * n for row, n in zip(result.per_item, tokens)) / sum(tokens)
        assert weighted == pytest.approx(result.metrics[metric], rel=1e-5)
    base = retention_scores(model, tok, reference, generate=False, progress=False)
    assert result.metrics["base_answer_logprob"] < base.metrics["base_answer_logprob"]


def test_coarse_kl_is_exact_with_full_top_k_and_a_lower_bound_otherwise():
    torch.manual_seed(0)
    base = torch.log_softmax(torch.randn(5, 40) * 2, dim=-1)
    other = torch.log_softmax(torch.randn(5, 40) * 2, dim=-1)
    full = (base.exp() * (base - other)).sum(dim=1)
    everything = base.topk(40, dim=-1)
    rest_none = torch.full((5,), float("-inf"))
    exact = coarse_kl(everything.indices, everything.values, rest_none, other)
    torch.testing.assert_close(exact, full, atol=1e-5, rtol=1e-5)
    top = base.topk(8, dim=-1)
    masked = base.scatter(1, top.indices, float("-inf"))
    coarse = coarse_kl(top.indices, top.values, torch.logsumexp(masked, dim=1), other)
    assert bool((coarse <= full + 1e-6).all()) and bool((coarse > 0).all())
    assert float(coarse_kl(top.indices, top.values, torch.logsumexp(masked, dim=1), base).abs().max()) < 1e-6


def test_save_load_roundtrip(tiny, reference, tmp_path):
    model, tok = tiny
    path = reference.save(tmp_path / "eval" / "retention.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["retention.safetensors"]  # no temp files left
    loaded = RetentionReference.load(path)
    assert loaded.answers == reference.answers and loaded.answer_ids == reference.answer_ids
    assert loaded.prompts == reference.prompts and loaded.meta == reference.meta
    assert torch.equal(loaded.topk_ids, reference.topk_ids) and torch.equal(loaded.topk_logprobs, reference.topk_logprobs)
    a = retention_scores(model, tok, reference, generate=False, progress=False).metrics
    b = retention_scores(model, tok, loaded, generate=False, progress=False).metrics
    assert a == b


def test_bad_reference_files_and_mismatched_tokenizers_are_clear_errors(tiny, reference, tmp_path):
    model, tok = tiny
    with pytest.raises(DataError, match="no retention reference"):
        RetentionReference.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a curatune retention reference"):
        RetentionReference.load(junk)
    other = copy.deepcopy(reference)
    other.prompt_ids = [[i + 1 for i in ids] for ids in other.prompt_ids]
    with pytest.raises(ModelError, match="different tokenizer"):
        retention_scores(model, tok, other, progress=False)


def test_prompts_file_errors_name_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(DataError, match="prompts.jsonl: line 2: field 'prompt'"):
        load_retention_prompts(path)


def test_greedy_decoding_uses_the_supported_cache_argument(tiny):
    """transformers 5.24 deprecates `past_key_values=` (removed in 5.40); the probe must not rely on it."""
    import warnings

    from curatune.evaluate.retention import greedy_answers

    model, tok = tiny
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        answers = greedy_answers(model, tok, ids, max_new_tokens=4, batch_size=2)
    assert all(1 <= len(a) <= 4 for a in answers)
