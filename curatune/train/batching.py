"""How a cell's examples become batches, and which precision a cell trains in.

Batching (``train.batching``):

* ``padded``: every example of a batch right-padded to the longest one (``PaddingCollator``).
  Compute on the padding is wasted; on variable-length chat data that is most of it.
* ``packed``: the examples of a batch concatenated into one row with position ids that restart
  at 0 for each example (transformers' ``DataCollatorWithFlattening``). No padding at all. The
  same examples form the same batches as with ``padded``, and the loss is the same mean over
  the same answer tokens: only the arithmetic differs (measured equal to ~1e-6 relative). It
  needs an attention that keeps the packed examples apart: transformers' mask builder turns
  restarting position ids into a block-diagonal causal mask for ``sdpa`` and ``eager`` (and
  flash-attention uses them as varlen boundaries), but only without a KV cache: the cell turns
  the cache off (``use_cache = False``) as it always has. A model whose attention ignores them would
  silently attend across examples, so ``auto`` checks it on the loaded model first
  (:func:`packing_supported`).
* ``grouped``: padded batches of examples of similar length (the Trainer's
  ``group_by_length`` sampler). Less padding, but the batches differ from the other two, so
  what the cell learns changes (it is part of the cell's fingerprint).
* ``auto`` (the default): per batch, ``packed`` when it computes less than ``padded``, where
  the check passes; else ``padded`` throughout. Packing saves the padding, but the packed row's
  attention is one (masked) square over all its tokens: on CPU, sdpa and eager compute the
  whole square, so four examples cut at 384 tokens cost more packed (1,536^2) than padded
  (4 x 384^2); measured 0.64-0.78x on such ShareGPT batches. :func:`packing_pays` compares the
  two with a cost model of the model's own shapes (:func:`attention_cost_ratio`).

Precision (``train.bf16``): ``auto`` is bf16 autocast on a CUDA GPU that supports it and fp32
elsewhere; ``cpu`` is ``auto`` plus bf16 autocast on a CPU with native bf16 instructions
(avx512_bf16 or AMX), which is opt-in until its task scores are checked against fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curatune.chat_format import PaddingCollator
from curatune.errors import ModelError

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic; without them bf16 is emulated (slow).
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class BatchingChoice:
    mode: str  # padded | packed | grouped | auto (per batch)
    reason: str  # why, for done.json
    attention_ratio: float = 0.0  # for auto: see attention_cost_ratio


def attention_cost_ratio(model) -> float:
    """Attention work per (query, key) pair over the weight-matrix work per token.

    A token costs ~2 x (weights of every linear layer) multiply-adds in the matrices, and each
    (query, key) pair 4 x layers x attention width (the score and the weighted value, forward;
    the backward pass doubles both alike). A sequence of n tokens costs about
    n x (1 + ratio x n) matrix-token units. SmolLM2-135M: 2.6e-4, so attention over 384 tokens
    adds 10 % and over 1,536 tokens 39 %.
    """
    import torch

    config = model.config
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads, width = getattr(config, "num_attention_heads", 0) or 0, getattr(config, "hidden_size", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (width // heads if heads else 0)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    if not (layers and heads and head_dim and linear):
        return 0.0
    return 4.0 * layers * heads * head_dim / (2.0 * linear)


def packing_pays(lengths: list[int], attention_ratio: float) -> bool:
    """True when one packed row of these examples computes less than padding them to the longest.

    padded: B rows of L = max(lengths) tokens, B x L x (1 + r L);
    packed: one row of T = sum(lengths) tokens, T x (1 + r T).
    """
    total, rows, longest = sum(lengths), len(lengths), max(lengths)
    return total * (1 + attention_ratio * total) < rows * longest * (1 + attention_ratio * longest)


class PerBatchCollator:
    """``train.batching: auto``: each batch packed when :func:`packing_pays`, else padded.

    Both give the same loss on the same batch (tests/test_train_batching.py), so the choice
    changes only the arithmetic. ``counts`` says how many batches went each way (done.json).
    """

    def __init__(self, pad_token_id: int, attention_ratio: float):
        self.padded = PaddingCollator(pad_token_id)
        self.packed = collator("packed", pad_token_id)
        self.attention_ratio = attention_ratio
        self.counts = {"packed": 0, "padded": 0}

    def __call__(self, features: list[dict]) -> dict:
        lengths = [len(f["input_ids"]) for f in features]
        mode = "packed" if packing_pays(lengths, self.attention_ratio) else "padded"
        self.counts[mode] += 1
        return (self.packed if mode == "packed" else self.padded)(features)


def packing_supported(model) -> bool:
    """True when a packed row gives the logits of its examples run one by one.

    Two short sequences, packed with restarting position ids, against each alone; the
    model's attention implementation decides whether they stay apart. A few milliseconds.
    """
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (1, 7), generator=generator)
    second = torch.randint(0, vocab, (1, 5), generator=generator)
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the comparison must be deterministic
    try:
        with torch.no_grad():
            # use_cache=False as in training: with a KV cache the mask builder skips packing
            alone = torch.cat([model(input_ids=first.to(device), use_cache=False).logits,
                               model(input_ids=second.to(device), use_cache=False).logits], dim=1)
            together = model(input_ids=packed.to(device), position_ids=positions.to(device),
                             use_cache=False).logits
    finally:
        model.train(was_training)
    if alone.shape != together.shape:  # e.g. logits for positions the caller did not give (virtual tokens)
        return False
    return bool(torch.allclose(alone.float(), together.float(), rtol=1e-3, atol=1e-3))


def _prompt_learning(model) -> bool:
    """True for a peft prompt or prefix tuning model: virtual tokens go before each row, and
    peft ignores position ids there, so a packed row's examples could not be kept apart."""
    configs = getattr(model, "peft_config", None)
    return isinstance(configs, dict) and any(getattr(c, "is_prompt_learning", False) for c in configs.values())


def choose_batching(setting: str, model) -> BatchingChoice:
    """The batching a cell uses for ``train.batching`` = ``setting`` on this model."""
    if _prompt_learning(model) and setting in ("auto", "packed"):
        if setting == "packed":
            raise ModelError("train.batching = packed: prompt and prefix tuning put virtual tokens before each "
                             "row and peft ignores position ids, so packed examples would attend to each other; "
                             "use batching auto, padded or grouped")
        return BatchingChoice("padded", "auto: prompt/prefix tuning (peft ignores position ids: no packing)")
    if setting != "auto":
        if setting == "packed" and not packing_supported(model):
            raise ModelError(
                "train.batching = packed: this model's attention "
                f"({getattr(model.config, '_attn_implementation', '?')}) does not keep packed examples "
                "apart (packed logits differ from unpacked ones); use batching auto, padded or grouped"
            )
        return BatchingChoice(setting, "set in the config")
    if packing_supported(model):
        ratio = attention_cost_ratio(model)
        return BatchingChoice("auto", f"auto: per batch, packed when it computes less than padded "
                              f"(packed logits match unpacked on this model; attention cost ratio {ratio:.2g})", ratio)
    return BatchingChoice("padded", "auto: this model's attention mixes packed examples")


def collator(mode: str, pad_token_id: int, attention_ratio: float = 0.0):
    """The data collator of a batching mode (grouped batches are padded; the sampler groups them)."""
    if mode == "auto":
        return PerBatchCollator(pad_token_id, attention_ratio)
    if mode == "packed":
        from transformers import DataCollatorWithFlattening  # heavy: transformers

        # separator -100 on each example's first label: the last token of one example never
        # learns to predict the first of the next (which is a prompt token, -100 anyway)
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    return PaddingCollator(pad_token_id)


def trainer_arguments(mode: str) -> dict[str, Any]:
    """TrainingArguments that go with a batching mode."""
    return {
        "train_sampling_strategy": "group_by_length" if mode == "grouped" else "random",
        # padded batches: their attention mask's sum; packed rows have no padding and no mask,
        # every token is real: CellTrainer counts them all (see there).
        "include_num_input_tokens_seen": "non_padding",
    }


def cell_trainer_class():
    """transformers' Trainer, counting every token of a packed batch as real.

    Without an attention mask, the Trainer's "non_padding" count compares the tokens with the
    pad id, which drops real tokens that equal it (eos, when it doubles as pad). A packed
    batch (position ids, no mask) has no padding at all, so its count is its size. If a later
    transformers renames the hook, the override is simply never called (the count is then a
    little low on packed batches, nothing else changes).
    """
    import torch
    from transformers import Trainer

    class CellTrainer(Trainer):
        def _track_num_input_tokens(self, inputs):
            if "attention_mask" not in inputs and "position_ids" in inputs:
                inputs = {**inputs, "attention_mask": torch.ones_like(inputs["input_ids"])}
            return super()._track_num_input_tokens(inputs)

    return CellTrainer


# ----------------------------------------------------------------------------- precision


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises bf16 instructions in /proc/cpuinfo (Linux).

    Elsewhere False: torch's ``get_cpu_capability()`` says AVX2/AVX512 but not whether bf16
    arithmetic is native, and emulated bf16 is slower than fp32.
    """
    try:
        flags = cpuinfo.read_text(errors="replace").split()
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@dataclass(frozen=True)
class PrecisionChoice:
    bf16: bool
    reason: str


def choose_precision(setting: str | bool, on_cuda: bool) -> PrecisionChoice:
    """bf16 autocast or fp32 for ``train.bf16`` = ``setting``, with the reason for done.json."""
    if isinstance(setting, bool):
        return PrecisionChoice(setting, "set in the config")
    if on_cuda:
        import torch  # heavy

        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(True, f"{setting}: CUDA GPU with bf16")
        return PrecisionChoice(False, f"{setting}: CUDA GPU without bf16")
    if setting == "cpu":
        if cpu_has_native_bf16():
            return PrecisionChoice(True, "cpu: CPU with native bf16 (avx512_bf16/amx)")
        return PrecisionChoice(False, "cpu: this CPU has no native bf16 (emulated bf16 is slower); fp32")
    return PrecisionChoice(False, "auto: fp32 on CPU (bf16 on CPU is opt-in: bf16 = cpu)")
