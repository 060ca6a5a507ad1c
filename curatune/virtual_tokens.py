"""Prompt- and prefix-tuned models (peft "prompt learning") behind the plain causal-LM interface.

A prompt-tuning adapter is a few learned input embeddings put before every input; a
prefix-tuning adapter is a learned key/value prefix in every attention layer. Either way,
what the real tokens see is a fixed key/value prefix of ``num_virtual_tokens`` positions:
for prompt tuning it is the base model's cache of the learned embeddings (they attend only
to each other, causally), for prefix tuning it is the learned cache itself.

:class:`VirtualTokenLM` holds that prefix and starts every forward pass and every
generation from it, so the evaluation code (log-likelihood scoring with shared-prefix
caches, ``logits_to_keep`` masks, explicit position ids, greedy decoding with its own
cache) runs unchanged: logits line up with the input ids, the caller's attention mask and
position ids cover only its own tokens (the wrapper adds the prefix's), and a cache the
wrapper returned carries the prefix on into the next call.

Why not peft's own forward and generate: peft puts prompt-tuning logits for the virtual
positions in front of the real ones (every caller would have to cut them), ignores
position ids, and with transformers 5.24 its prefix-tuning ``generate`` passes the prefix
as ``past_key_values`` while ``generate`` passes ``cache``; transformers then keeps one and
drops the other (it warns "Both `past_key_values` and `cache` are set"). The tests check
this wrapper against peft's own forward pass, position by position.

torch and transformers are imported inside functions: importing this module stays cheap.
"""
from __future__ import annotations

import inspect
from typing import Any

from curatune.errors import ModelError

#: curatune's method names of peft's prompt-learning adapters, and peft's names for them.
PROMPT_LEARNING = {"prompt_tuning": "PROMPT_TUNING", "prefix_tuning": "PREFIX_TUNING"}
#: Model types with state other than a full-attention key/value cache (the prefix cannot be one).
_NO_KV_PREFIX = {"mamba", "mamba2", "rwkv", "falcon_mamba", "jamba", "zamba", "zamba2", "bamba",
                 "recurrent_gemma", "xlstm", "lfm2", "granitemoehybrid", "qwen3_next"}


def virtual_token_problem(method: str, model: Any) -> str | None:
    """Why ``method`` (prompt_tuning or prefix_tuning) cannot work on ``model`` here, or None.

    Checked before training, so such a cell fails in seconds with the reason."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    model_type = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        return f"{method}: {model_type} is an encoder-decoder model; curatune trains causal LMs only"
    layer_types = getattr(config, "layer_types", None) or []
    if model_type in _NO_KV_PREFIX or any(t != "full_attention" for t in layer_types):
        return (f"{method}: {model_type} has recurrent or sliding-window layers, so a fixed key/value "
                "prefix (how curatune evaluates virtual tokens) does not apply; use lora, ia3 or full")
    if method == "prefix_tuning":
        forward = inspect.signature(model.forward).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in forward.values())
        if "past_key_values" not in forward and not takes_kwargs:
            import peft
            import transformers

            return (f"prefix_tuning: peft {peft.__version__} hands the prefix to the model as "
                    f"past_key_values, which {type(model).__name__}.forward in transformers "
                    f"{transformers.__version__} no longer accepts; use prompt_tuning or lora")
    return None


def is_virtual_token_adapter(peft_model: Any) -> bool:
    config = peft_model.peft_config[peft_model.active_adapter]
    return bool(getattr(config, "is_prompt_learning", False))


class VirtualTokenLM:
    """A prompt-learning ``PeftModel`` with the forward/generate interface of its base model."""

    def __init__(self, peft_model: Any):
        self.peft_model = peft_model
        self.base = peft_model.get_base_model()
        self.peft_config = peft_model.peft_config[peft_model.active_adapter]
        self.method = {v: k for k, v in PROMPT_LEARNING.items()}.get(str(self.peft_config.peft_type.value),
                                                                      str(self.peft_config.peft_type.value))
        self.num_virtual_tokens = int(self.peft_config.num_virtual_tokens)
        problem = virtual_token_problem(self.method, self.base)
        if problem:
            raise ModelError(problem)
        self._prefix: list[tuple[Any, Any]] | None = None  # per layer (keys, values) for batch 1
        # imported here: the scorer module imports torch, and this module stays cheap to import
        from curatune.evaluate.lm_scoring import cache_argument

        self._cache_argument = cache_argument(self.base)

    # ---- what callers read off a model
    @property
    def config(self):
        return self.base.config

    @property
    def generation_config(self):
        return self.base.generation_config

    @property
    def device(self):
        return self.base.device

    def parameters(self):
        return self.peft_model.parameters()

    def get_base_model(self):
        return self.base

    def get_input_embeddings(self):
        return self.base.get_input_embeddings()

    def get_output_embeddings(self):  # the retention probe checks the vocabulary against it
        return self.base.get_output_embeddings()

    def eval(self) -> "VirtualTokenLM":
        self.peft_model.eval()
        self._prefix = None  # weights may have changed since the prefix was computed
        return self

    def to(self, device) -> "VirtualTokenLM":
        self.peft_model.to(device)
        self._prefix = None
        return self

    # ---- the prefix
    def _prefix_layers(self) -> list[tuple[Any, Any]]:
        import torch

        from curatune.evaluate.lm_scoring import output_cache

        if self._prefix is None:
            with torch.no_grad():
                if self.method == "prefix_tuning":
                    cache = self.peft_model.get_prompt(batch_size=1)
                else:  # the base model's keys and values of the learned embeddings
                    embeds = self.peft_model.get_prompt(batch_size=1).to(self.base.dtype)
                    out = self.base(inputs_embeds=embeds, use_cache=True)
                    cache = output_cache(out)
                self._prefix = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
        return self._prefix

    def prefix_cache(self, batch_size: int):
        """A fresh cache holding the prefix for ``batch_size`` rows (forward passes extend it in place)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.base.config)
        for i, (keys, values) in enumerate(self._prefix_layers()):
            cache.update(keys.expand(batch_size, -1, -1, -1).contiguous(),
                         values.expand(batch_size, -1, -1, -1).contiguous(), i)
        return cache

    def _with_prefix_mask(self, mask):
        import torch

        ones = torch.ones((mask.shape[0], self.num_virtual_tokens), dtype=mask.dtype, device=mask.device)
        return torch.cat([ones, mask], dim=1)

    # ---- forward and generate
    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        return self.forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else legacy
        if cache is None:  # a first call: start from the prefix; a later one passes our cache back
            cache = self.prefix_cache(input_ids.shape[0])
        if attention_mask is not None:
            attention_mask = self._with_prefix_mask(attention_mask)
        if position_ids is not None:  # the caller counts its own tokens from 0; the prefix comes first
            position_ids = position_ids + self.num_virtual_tokens
        kwargs[self._cache_argument] = cache
        return self.base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)

    def generate(self, input_ids, attention_mask=None, stopping_criteria=None, **kwargs):
        """``generate`` of the base model from the prefix; returns prompt + new tokens, like it."""
        import torch

        n = self.num_virtual_tokens
        rows = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # generate skips the input positions the cache already holds: n placeholder ids stand for the prefix
        pad = self.base.generation_config.pad_token_id or 0
        placeholders = torch.full((rows, n), int(pad), dtype=input_ids.dtype, device=input_ids.device)
        criteria = _without_placeholders(stopping_criteria or [], n)
        kwargs[self._cache_argument] = self.prefix_cache(rows)
        out = self.base.generate(input_ids=torch.cat([placeholders, input_ids], dim=1),
                                 attention_mask=self._with_prefix_mask(attention_mask),
                                 stopping_criteria=criteria, **kwargs)
        return out[:, n:]


def _without_placeholders(criteria, n: int):
    """The caller's stopping criteria, shown the ids without the n prefix placeholders."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class WithoutPlaceholders(StoppingCriteria):
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, input_ids, scores, **kwargs):
            return self.inner(input_ids[:, n:], scores, **kwargs)

    return StoppingCriteriaList(WithoutPlaceholders(c) for c in criteria)
