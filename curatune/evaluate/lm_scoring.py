"""Log-likelihood of continuations, with lm-evaluation-harness semantics and shared prefixes.

This is the engine under the forgetting-side scorers (multiple choice, LAMBADA, rolling
perplexity). It reproduces EleutherAI lm-evaluation-harness's ``HFLM`` exactly where the
numbers come from:

* tokenization (``HFLM.tok_encode`` / ``TemplateLM._encode_pair``): trailing whitespace of
  the context moves to the front of the continuation; the continuation's tokens are those
  of ``encode(context + continuation)`` after the first ``len(encode(context))`` tokens; an
  empty context is replaced by the prefix token (BOS, else EOS);
* truncation: ``(context + continuation)[-(max_length + 1):][:-1]`` is the model input,
  so long inputs lose tokens on the left;
* the score of a continuation is the sum of its tokens' log-softmax log-probabilities;
  ``is_greedy`` says whether every continuation token was the argmax.

What differs is only how the work is batched. Requests that belong together (the choices
of one multiple-choice item, the options of one Winogrande item) form a *group*; the
tokens the group's inputs have in common at the start (the question, for a multiple-choice
item) run through the model once, and the differing tails run on top of that shared
key/value cache, one row per request. Logits (and the log-softmax over the vocabulary, the
costly part for a small model) are computed only at the positions that are scored.
Log-softmax runs in float32 whatever the model dtype (lm-eval uses the logits' dtype; the
two agree for float32 models).
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

DEFAULT_MAX_LENGTH = 2048  # lm-eval's HFLM._DEFAULT_MAX_LENGTH
_SEQLEN_CONFIG_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_TOKENIZER_INFINITY = 1000000000000000019884624838656



@dataclass
class ItemScores:
    """What every log-likelihood scorer returns: corpus metrics and one row per scored item."""

    metrics: dict[str, float]
    per_item: list[dict[str, Any]]

    @property
    def n_items(self) -> int:
        return len(self.per_item)


@dataclass(frozen=True)
class Request:
    """One continuation to score: token ids of the context and of the continuation."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Scored:
    """Result for one request (lm-eval's ``(logprob, is_greedy)`` plus the token count)."""

    loglik: float
    is_greedy: bool
    n_tokens: int
    #: the argmax token at each continuation position (teacher-forced greedy prediction)
    greedy_tokens: tuple[int, ...] = ()


def resolve_max_length(model, tokenizer) -> int:
    """The model's context length, found where lm-eval's ``resolve_max_length`` looks."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in _SEQLEN_CONFIG_ATTRS:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is not None and model_max != _TOKENIZER_INFINITY:
        return int(model_max)
    return DEFAULT_MAX_LENGTH


class LoglikelihoodScorer:
    """Scores groups of (context, continuation) requests on a causal LM.

    ``batch_size`` bounds the rows of every forward pass, as lm-eval's ``batch_size`` does, so
    the two are comparable: up to that many groups' prefixes run together, then their
    requests' tails in chunks of at most that many rows. ``share_prefix=False`` scores every request as its own full sequence
    (lm-eval's way), which tests use to check the shared-prefix path.
    """

    def __init__(self, model, tokenizer, *, max_length: int | None = None, batch_size: int = 16,
                 share_prefix: bool = True, progress: bool = False, desc: str = "scoring"):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length or resolve_max_length(model, tokenizer))
        self.batch_size = max(1, int(batch_size))
        # a KV cache of a right-padded prefix is only reusable for plain full-attention models
        self.share_prefix = share_prefix and (model is None or supports_prefix_sharing(model))
        self._bos_text: str | None = None
        self.progress = progress
        self.desc = desc
        # whether the model computes logits only at masked positions; probed on first use
        self._mask_logits_ok: bool | None = None

    # ---- tokenization (lm-eval HFLM semantics) -------------------------------------------
    @property
    def prefix_token_id(self) -> int:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    def tok_encode(self, text: str) -> list[int]:
        """``HFLM.tok_encode``: the tokenizer's own special-token default, except no second BOS."""
        kwargs = {}
        if self._bos_text is None:
            self._bos_text = self.tokenizer.decode(self.prefix_token_id)
        if self._bos_text and text.startswith(self._bos_text):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def encode_pair(self, context: str, continuation: str) -> Request:
        """Token ids of one request, exactly as lm-eval's ``loglikelihood`` builds them."""
        if context == "":
            cont = list(self.tokenizer.encode(continuation, add_special_tokens=False))
            if not cont:
                raise ValueError("cannot score an empty continuation")
            if cont[0] != self.prefix_token_id:
                return Request((self.prefix_token_id,), tuple(cont))
            return Request(tuple(cont[:1]), tuple(cont[1:]))
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:  # "Question: ...\n" + " answer" -> "Question: ..." + "\n answer"
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return Request(tuple(ctx), tuple(whole[len(ctx):]))

    # ---- scoring -------------------------------------------------------------------------
    def score_texts(self, groups: Sequence[Sequence[tuple[str, str]]]) -> list[list[Scored]]:
        """Score groups of (context, continuation) strings; see :meth:`score_groups`."""
        return self.score_groups([[self.encode_pair(c, k) for c, k in g] for g in groups])

    def score_groups(self, groups: Sequence[Sequence[Request]]) -> list[list[Scored]]:
        """Score every request; requests of one group share their common input prefix.

        Results come back in the order given, whatever order the batches ran in.
        """
        prepared = [[self._window(r) for r in g] for g in groups]
        if not self.share_prefix:
            # every request on its own: one full sequence per request, as lm-eval does
            flat = self._run([[w] for group in prepared for w in group])
            out, i = [], 0
            for group in prepared:
                out.append([s[0] for s in flat[i:i + len(group)]])
                i += len(group)
            return out
        return self._run(prepared)

    def _window(self, request: Request) -> tuple[tuple[int, ...], int]:
        """The scored token sequence (left-truncated to max_length + 1) and its continuation length.

        The model input is ``seq[:-1]``; position t predicts ``seq[t + 1]``; the last
        ``n_cont`` targets are scored.
        """
        n_cont = len(request.continuation)
        if n_cont == 0 or not request.context:
            raise ValueError("a request needs a non-empty context and continuation after tokenization")
        if n_cont > self.max_length:
            raise ValueError(f"continuation of {n_cont} tokens exceeds max_length {self.max_length}")
        return (request.context + request.continuation)[-(self.max_length + 1):], n_cont

    def _run(self, groups: list[list[tuple[tuple[int, ...], int]]]) -> list[list[Scored]]:
        # A unit is what shares one prefix pass: a whole group, or one request of a group whose
        # inputs have no token in common (a Winogrande option at the very start of the text).
        units: list[tuple[int, list[int]]] = []
        for g, group in enumerate(groups):
            if len(group) > 1 and _shared_prefix_len([seq[:-1] for seq, _ in group]) < 1:
                units.extend((g, [j]) for j in range(len(group)))
            else:
                units.append((g, list(range(len(group)))))
        # longest shared prefix first (the part pass 1 pads), then longest input, as lm-eval
        # sorts: padding stays small and memory peaks happen early
        def unit_key(unit):
            inputs = [groups[unit[0]][j][0][:-1] for j in unit[1]]
            prefix = len(inputs[0]) if len(inputs) == 1 else _shared_prefix_len(inputs)
            return -prefix, -max(map(len, inputs))

        units.sort(key=unit_key)
        # batch_size bounds the rows of every forward pass: pass 1 has one row per unit, and
        # pass 2's rows (one per request of a multi-request unit) go in chunks of at most that
        batches = [units[k:k + self.batch_size] for k in range(0, len(units), self.batch_size)]

        results: list[list[Scored | None]] = [[None] * len(group) for group in groups]
        bar = _progress(sum(len(g) for g in groups), self.desc, self.progress)
        with torch.inference_mode():
            for batch in batches:
                scored = self._score_batch([[groups[g][j] for j in js] for g, js in batch])
                for (g, js), unit_scores in zip(batch, scored):
                    for j, s in zip(js, unit_scores):
                        results[g][j] = s
                bar.update(sum(len(js) for _, js in batch))
        bar.close()
        return results  # type: ignore[return-value]

    def _score_batch(self, groups: list[list[tuple[tuple[int, ...], int]]]) -> list[list[Scored]]:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inputs = [[seq[:-1] for seq, _ in group] for group in groups]
        # Pass 1 runs each group's shared prefix; every scored position in it must predict the
        # same target for all the group's requests (see _shared_prefix_len). A single request
        # runs whole in pass 1.
        prefixes = [len(inps[0]) if len(inps) == 1 else _shared_prefix_len(inps) for inps in inputs]
        multi = [i for i, group in enumerate(groups) if len(group) > 1]

        # pass 1: one row per group (its shared prefix), right-padded; keep the KV cache
        ids = torch.full((len(groups), max(prefixes)), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        targets = torch.zeros_like(ids)
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        for i, (group, p) in enumerate(zip(groups, prefixes)):
            ids[i, :p] = torch.tensor(inputs[i][0][:p])
            mask[i, :p] = 1
            for seq, n_cont in group:  # scored positions inside the prefix (targets agree there)
                start = len(seq) - 1 - n_cont
                if start < p:
                    keep[i, start:p] = True
                    targets[i, start:p] = torch.tensor(seq[start + 1:p + 1])
        tok1, greedy1, cache = self._forward(ids, mask, keep, targets, None, None, use_cache=bool(multi))
        found = dict(zip(map(tuple, keep.nonzero().tolist()), zip(tok1, greedy1)))

        # pass 2: one row per request of a multi-request group, on top of its group's cache;
        # rows sorted by tail length and cut into chunks of similar length (little padding)
        rows = sorted(((i, j) for i in multi for j in range(len(groups[i]))),
                      key=lambda ij: -(len(inputs[ij[0]][ij[1]]) - prefixes[ij[0]]))
        tail_found: dict[tuple[int, int], tuple[float, int]] = {}
        if rows and not hasattr(cache, "reorder_cache"):  # a model without a transformers Cache
            raise RuntimeError(f"{type(self.model).__name__} returned no reusable KV cache; "
                               "score with share_prefix=False")
        tail_lengths = [len(inputs[i][j]) - prefixes[i] for i, j in rows]
        overhead = CALL_OVERHEAD_TOKENS.get(_model_device(self.model).type, DEFAULT_CALL_OVERHEAD_TOKENS)
        for chunk_start, chunk in _length_chunks(rows, tail_lengths, self.batch_size, overhead):
            chunk_cache = copy.deepcopy(cache) if chunk_start + len(chunk) < len(rows) else cache
            tail_found.update(self._score_tails(groups, inputs, prefixes, chunk, chunk_start, mask, chunk_cache))

        row_of = {key: r for r, key in enumerate(rows)}
        out: list[list[Scored]] = []
        for i, (group, p) in enumerate(zip(groups, prefixes)):
            scored = []
            for j, (seq, n_cont) in enumerate(group):
                total, argmaxes = 0.0, []
                for t in range(len(seq) - 1 - n_cont, len(seq) - 1):
                    lp, best = found[(i, t)] if t < p else tail_found[(row_of[(i, j)], t - p)]
                    total += lp
                    argmaxes.append(best)
                is_greedy = tuple(argmaxes) == tuple(seq[-n_cont:])
                scored.append(Scored(total, is_greedy, n_cont, tuple(argmaxes)))
            out.append(scored)
        return out

    def _score_tails(self, groups, inputs, prefixes, rows, first_row, prefix_mask, cache):
        """Pass 2 for some rows: their tails on a per-row copy of their group's prefix cache.
        Returns {(row number, tail position): (log-prob, argmax)}."""
        device = _model_device(self.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(inputs[i][j]) - prefixes[i] for i, j in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        targets = torch.zeros_like(ids)
        keep = torch.zeros(ids.shape, dtype=torch.bool)
        positions = torch.zeros_like(ids)
        for r, (i, j) in enumerate(rows):
            seq, n_cont = groups[i][j]
            p = prefixes[i]
            tail = inputs[i][j][p:]
            ids[r, :len(tail)] = torch.tensor(tail)
            mask[r, :len(tail)] = 1
            start = max(0, len(seq) - 1 - n_cont - p)
            keep[r, start:len(tail)] = True
            targets[r, start:len(tail)] = torch.tensor(seq[p + start + 1:])
            positions[r] = p + torch.arange(width)  # continue the prefix's positions
        group_of_row = torch.tensor([i for i, _ in rows], device=device)
        cache.reorder_cache(group_of_row)  # each row gets its own copy of its group's prefix
        full_mask = torch.cat([prefix_mask.to(device)[group_of_row], mask.to(device)], dim=1)
        token_lp, argmax, _ = self._forward(ids, full_mask, keep, targets, positions, cache, use_cache=False)
        return {(first_row + r, c): found for (r, c), found in zip(keep.nonzero().tolist(), zip(token_lp, argmax))}

    def _forward(self, ids, mask, keep, targets, positions, cache, *, use_cache: bool):
        """Run the model; return per kept position the target's log-prob, the argmax token,
        and the KV cache. Logits are computed only at kept positions when the model
        supports ``logits_to_keep`` with a boolean mask (transformers >= 5)."""
        device = _model_device(self.model)
        kwargs = dict(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=use_cache)
        if positions is not None:
            kwargs["position_ids"] = positions.to(device)
        if cache is not None:
            kwargs[cache_argument(self.model)] = cache
        keep_dev = keep.to(device)
        logits = None
        if self._mask_logits_ok is None and not _accepts_logits_to_keep(self.model):
            self._mask_logits_ok = False
        if self._mask_logits_ok is None and cache is None:
            # probe once, on a first pass (a failed probe must not have touched a cache)
            try:
                output = self.model(**kwargs, logits_to_keep=keep_dev)
                ok = output.logits.ndim == 2 and output.logits.shape[0] == int(keep.sum())
            except (TypeError, ValueError, IndexError, RuntimeError):
                ok = False
            self._mask_logits_ok = ok
            if ok:
                logits = output.logits
        elif self._mask_logits_ok:
            output = self.model(**kwargs, logits_to_keep=keep_dev)
            logits = output.logits
        if logits is None:
            output = self.model(**kwargs)
            logits = output.logits[keep_dev]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        wanted = targets.to(device)[keep_dev]
        token_lp = logprobs.gather(1, wanted[:, None]).squeeze(1)
        return token_lp.tolist(), logprobs.argmax(dim=-1).tolist(), output_cache(output)


#: What one extra forward pass costs, in padded tokens: on CPU a small model streams all its
#: weights from memory once per call (SmolLM2-135M: ~90 ms a call, ~5 ms a token, 1 thread);
#: on an accelerator per-token cost is tiny next to per-call launch overhead.
CALL_OVERHEAD_TOKENS = {"cpu": 16}
DEFAULT_CALL_OVERHEAD_TOKENS = 512


def _length_chunks(items: list, lengths: list[int], max_rows: int, overhead: int = 16):
    """Cut items (sorted by length, longest first) into runs of at most ``max_rows``, each padded
    to its longest, so that the total cost sum(overhead + run size * run width) is smallest
    (exact dynamic programme). Yields (index of the run's first item, run)."""
    n = len(items)
    best = [0.0] + [float("inf")] * n  # best[k]: cheapest cost of the first k items
    cut = [0] * (n + 1)
    for k in range(1, n + 1):
        for start in range(max(0, k - max_rows), k):
            cost = best[start] + overhead + (k - start) * lengths[start]
            if cost < best[k]:
                best[k], cut[k] = cost, start
    bounds = []
    k = n
    while k > 0:
        bounds.append((cut[k], k))
        k = cut[k]
    for start, end in reversed(bounds):
        yield start, items[start:end]


def _shared_prefix_len(inputs: Sequence[Sequence[int]]) -> int:
    """Tokens a group runs once: its inputs' common prefix, less one token so that (a) the
    last common position, whose next token differs between requests, is scored in pass 2
    and (b) every request keeps at least one token for its own row."""
    return min(_common_prefix_len(inputs), min(map(len, inputs))) - 1


def supports_prefix_sharing(model) -> bool:
    """Whether the shared-prefix path is exact for this model: every layer is full attention
    with a key/value cache (no sliding windows, no recurrent state that padding would enter)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return getattr(config, "model_type", "") not in {"mamba", "mamba2", "rwkv", "falcon_mamba", "jamba", "zamba"}


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        token = first[k]
        if any(s[k] != token for s in seqs[1:]):
            return k
    return n


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def cache_argument(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` from transformers 5.24 on
    (``past_key_values`` still works there but warns, and goes away in 5.40), else
    ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    except (TypeError, ValueError):  # pragma: no cover
        return "past_key_values"


def output_cache(output):
    """The KV cache a forward pass returned, under its new name (``cache``) or its old one."""
    if "cache" in getattr(type(output), "__dataclass_fields__", {}):
        return output.cache
    return getattr(output, "past_key_values", None)


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()

    return tqdm(total=total, desc=desc, unit="req", leave=False)


def flatten(groups: Iterable[Iterable[Scored]]) -> list[Scored]:
    return [s for g in groups for s in g]
