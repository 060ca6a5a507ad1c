"""Prompt and prefix tuning: the evaluation wrapper against peft's own forward pass, and the sweep."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from train_helpers import curated_run_dir, make_records, tiny_config

from curatune.evaluate.generation import GenerationSettings, generate
from curatune.evaluate.lm_scoring import LoglikelihoodScorer
from curatune.evaluate.retention import RetentionReference, greedy_answers, retention_scores
from curatune.models import load_cell_model
from curatune.rundir import list_cells, read_json
from curatune.train.sweep import run_sweep
from curatune.virtual_tokens import VirtualTokenLM, virtual_token_problem

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Question: Which object is a magnet attracted to?",
         "Extract the brand"]


def _peft_model(tiny_model_dir, method: str):
    """A prompt/prefix-tuned tiny model whose virtual tokens are moved away from their init."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = (PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, prompt_tuning_init="SAMPLE_VOCAB")
              if method == "prompt_tuning" else PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    model = get_peft_model(base, config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def _peft_logits(model, ids):
    """peft's own forward; prompt tuning puts the virtual positions' logits first: cut them."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return logits[:, -ids.shape[1]:]


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_wrapper_matches_peft_forward_and_greedy_decoding(tiny_model_dir, method):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _peft_model(tiny_model_dir, method)
    wrapped = VirtualTokenLM(model)
    ids = torch.tensor([tokenizer.encode(TEXTS[0])])
    with torch.no_grad():
        ours = wrapped(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        plain = model.get_base_model()(input_ids=ids).logits
    assert torch.allclose(ours, _peft_logits(model, ids), atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-3)  # the virtual tokens do change the output

    # greedy generation, batched and left-padded, equals token-by-token argmax of peft's forward
    outputs = generate(wrapped, tokenizer, TEXTS, GenerationSettings(max_new_tokens=6, batch_size=3))
    for text, out in zip(TEXTS, outputs.outputs):
        seq = torch.tensor([tokenizer.encode(text)])
        for _ in range(6):
            nxt = _peft_logits(model, seq)[:, -1].argmax(-1, keepdim=True)
            if int(nxt) == tokenizer.eos_token_id:
                break
            seq = torch.cat([seq, nxt], dim=1)
        expected = tokenizer.decode(seq[0, len(tokenizer.encode(text)):], skip_special_tokens=True).strip()
        assert out == expected

    # the retention probe's own decoding loop (left padding, position ids, its own KV cache)
    prompts = [tokenizer.encode(t) for t in TEXTS]
    answers = greedy_answers(wrapped, tokenizer, prompts, 5, batch_size=3)
    for prompt, answer in zip(prompts, answers):
        seq = torch.tensor([prompt])
        for token in answer:
            assert int(_peft_logits(model, seq)[0, -1].argmax()) == token
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_loglikelihood_scoring_through_the_prefix(tiny_model_dir, method):
    """Shared-prefix scoring (caches, position ids, masked logits) equals whole-sequence scoring,
    and both equal the log-probabilities of peft's own forward pass."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _peft_model(tiny_model_dir, method)
    wrapped = VirtualTokenLM(model)
    groups = [[("Question: Which object is a magnet", c) for c in (" attracted to?", " iron nail", " dog.")],
              [("The quick brown", " fox"), ("The quick brown", " dog")]]
    shared = LoglikelihoodScorer(wrapped, tokenizer, batch_size=4).score_texts(groups)
    alone = LoglikelihoodScorer(wrapped, tokenizer, batch_size=4, share_prefix=False).score_texts(groups)
    scorer = LoglikelihoodScorer(None, tokenizer)
    for group, s_group, a_group in zip(groups, shared, alone):
        for (context, cont), s, a in zip(group, s_group, a_group):
            assert s.loglik == pytest.approx(a.loglik, abs=1e-4)
            request = scorer.encode_pair(context, cont)
            seq = torch.tensor([request.context + request.continuation])
            logprobs = torch.log_softmax(_peft_logits(model, seq[:, :-1]).float(), -1)[0]
            n = len(request.continuation)
            expected = sum(float(logprobs[len(request.context) - 1 + k, request.continuation[k]]) for k in range(n))
            assert s.loglik == pytest.approx(expected, abs=1e-4)


def test_models_without_a_full_attention_cache_are_refused(tiny_model_dir):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                         max_window_layers=1, layer_types=["full_attention", "sliding_attention"])
    problem = virtual_token_problem("prompt_tuning", Qwen2ForCausalLM(config))
    assert problem.startswith("prompt_tuning: qwen2 has recurrent or sliding-window layers")
    from transformers import AutoModelForCausalLM

    assert virtual_token_problem("prefix_tuning", AutoModelForCausalLM.from_pretrained(tiny_model_dir)) is None


def test_unsupported_model_gives_a_failed_cell_not_a_crash(tmp_path, tiny_model_dir):
    """A sliding-window model: both methods fail in seconds with the reason; lora on it still trains."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    model_dir = tmp_path / "sliding"
    shutil.copytree(tiny_model_dir, model_dir)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    tiny = json.loads((tiny_model_dir / "config.json").read_text())
    config = Qwen2Config(vocab_size=tiny["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                         max_window_layers=1, layer_types=["full_attention", "sliding_attention"],
                         bos_token_id=tiny["bos_token_id"], eos_token_id=tiny["eos_token_id"],
                         pad_token_id=tiny["pad_token_id"], tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    run_dir = curated_run_dir(tmp_path / "run", make_records(12))
    cfg = tiny_config(run_dir, model_dir, methods=["prompt_tuning", "prefix_tuning", "lora"], sizes=[4])
    summary = run_sweep(cfg, run_dir, progress=False)
    assert summary["cells_done"] == 1
    for method in ("prompt_tuning", "prefix_tuning"):
        failed = read_json(run_dir.cell(method, 4, 0) / "failed.json")
        assert failed["error"].startswith(f"ModelError: {method}: qwen2 has recurrent or sliding-window layers")


@pytest.mark.slow
def test_prompt_and_prefix_tuning_cells_train_save_and_evaluate(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    methods = ["prompt_tuning", "prefix_tuning"]
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, methods=methods, sizes=[8],
                         prompt_tuning={"num_virtual_tokens": 4}, prefix_tuning={"num_virtual_tokens": 4})
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["cells_done"] == 2 and not summary["failed"]
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    for cell in list_cells(run_dir):
        done = read_json(cell.path / "done.json")
        assert done["learning_rate"] == config.train.learning_rate(cell.method)
        # peft ignores position ids for virtual tokens, so batching auto must not pack these rows
        assert done["batching"] == "padded" and "prompt/prefix" in done["batching_reason"]
        hidden, layers, kv_dim = 64, 2, 32  # the tiny model: 2 of 4 heads of 16 are key/value heads
        assert done["trainable_parameters"] == {"prompt_tuning": 4 * hidden,
                                                "prefix_tuning": 4 * layers * 2 * kv_dim}[cell.method]
        assert done["weights_bytes"] > 0
        adapter = json.loads((cell.path / "final" / "adapter_config.json").read_text())
        assert adapter["peft_type"] == cell.method.upper()
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cell.path / "final")
        model, tokenizer = load_cell_model(cell, "final", dtype="float32", device="cpu")
        early, _ = load_cell_model(cell, "early", dtype="float32", device="cpu")
        assert isinstance(model, VirtualTokenLM)
        with torch.no_grad():
            ours = model(input_ids=ids).logits
            assert torch.allclose(ours, _peft_logits(loaded.eval(), ids), atol=1e-5)
            assert not torch.allclose(ours, early(input_ids=ids).logits, atol=1e-6)  # training moved on
        # the retention probe scores the wrapper like any model (it reads its output embeddings)
        reference = RetentionReference.build(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer,
                                             ["Name a colour.", "Count to three."], max_new_tokens=4)
        scores = retention_scores(model, tokenizer, reference, generate=False, progress=False)
        assert scores.n_items == 2
