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
* ``auto``: ``packed`` where the check passes, else ``padded``.

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
    mode: str  # padded | packed | grouped
    reason: str  # why, for done.json


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
    return bool(torch.allclose(alone.float(), together.float(), rtol=1e-3, atol=1e-3))


def choose_batching(setting: str, model) -> BatchingChoice:
    """The batching a cell uses for ``train.batching`` = ``setting`` on this model."""
    if setting != "auto":
        if setting == "packed" and not packing_supported(model):
            raise ModelError(
                "train.batching = packed: this model's attention "
                f"({getattr(model.config, '_attn_implementation', '?')}) does not keep packed examples "
                "apart (packed logits differ from unpacked ones); use batching auto, padded or grouped"
            )
        return BatchingChoice(setting, "set in the config")
    if packing_supported(model):
        return BatchingChoice("packed", "auto: packed logits match unpacked on this model")
    return BatchingChoice("padded", "auto: this model's attention mixes packed examples")


def collator(mode: str, pad_token_id: int):
    """The data collator of a batching mode (grouped batches are padded; the sampler groups them)."""
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
        # packed rows have no padding and no attention mask: every token is real. (Counting
        # "non_padding" without a mask would drop real tokens equal to the pad id, e.g. eos.)
        "include_num_input_tokens_seen": "all" if mode == "packed" else "non_padding",
    }


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
