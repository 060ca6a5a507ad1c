"""Zero-shot multiple-choice benchmarks scored as EleutherAI lm-evaluation-harness does.

An item is a context and several candidate continuations (ARC, PIQA, HellaSwag, ...), or
several contexts and one shared continuation ("partial scoring", Winogrande). Every choice
is scored by the summed log-likelihood of its continuation ``" " + choice`` (lm-eval's
``target_delimiter``) given the context:

* ``acc``: the choice with the highest log-likelihood is the gold one;
* ``acc_norm``: the same after dividing each log-likelihood by ``len(choice)`` in
  characters, the choice string without the delimiter (lm-eval's ``completion_len``). For
  partial scoring lm-eval's choices are the context options, so it divides by their length;
  so does this module.

Tokenization, whitespace handling and truncation are lm-eval's (see
:mod:`curatune.evaluate.lm_scoring`); ``bench/eval_lmeval.py`` checks that predictions and
log-likelihoods agree with lm-eval item by item.

Input formats (:func:`load_mc_items`), detected per row:

* llm-foundry ``{"query", "choices", "gold"}``;
* llm-foundry partial scoring ``{"context_options", "continuation", "gold"}``;
* Hugging Face rows of HellaSwag (``ctx_a``, ``ctx_b``, ``activity_label``, ``endings``,
  ``label``), ARC (``question``, ``choices{text,label}``, ``answerKey``), PIQA (``goal``,
  ``sol1``, ``sol2``, ``label``) and Winogrande (``sentence``, ``option1``, ``option2``,
  ``answer``), turned into prompts exactly as lm-eval's task configs do;
* the HellaSwag text file (``.txt`` or ``.txt.bz2``, 6 lines per item);
* a Hugging Face hub dataset ``NAME[:CONFIG][@SPLIT]`` (optionally prefixed ``hf:``), when
  the hub is reachable.
"""
from __future__ import annotations

import bz2
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from curatune.errors import DataError
from curatune.evaluate.lm_scoring import ItemScores, LoglikelihoodScorer
from curatune.jsonl import iter_jsonl

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question.

    ``contexts`` holds one context shared by all choices, or (partial scoring) one context
    per choice; then ``continuation`` is the text scored after each of them. ``choices``
    are what lm-eval calls the choices: the candidate continuations, or for partial
    scoring the context options. ``gold`` indexes ``choices``.
    """

    example_id: str
    contexts: tuple[str, ...]
    choices: tuple[str, ...]
    gold: int
    continuation: str | None = None
    source: str = field(default="", compare=False)

    @property
    def is_partial(self) -> bool:
        return self.continuation is not None

    @property
    def prompt(self) -> str:
        """What a person reads: the question, or the continuation every option leads to."""
        if self.is_partial:  # "Sarah was a better surgeon than Maria so ___ always got the easier cases."
            shared = os.path.commonprefix(list(self.contexts))
            shared = shared[: shared.rfind(" ") + 1] if " " in shared else ""
            return f"{shared}___{TARGET_DELIMITER}{self.continuation}"
        return self.contexts[0]

    def requests(self) -> list[tuple[str, str]]:
        """The (context, continuation) pairs lm-eval scores for this item, one per choice."""
        if self.is_partial:
            return [(ctx, f"{TARGET_DELIMITER}{self.continuation}") for ctx in self.contexts]
        return [(self.contexts[0], f"{TARGET_DELIMITER}{choice}") for choice in self.choices]


# ---- loading ---------------------------------------------------------------------------------
def load_mc_items(path: str | os.PathLike, limit: int | None = None, seed: int = 0) -> list[MCItem]:
    """Read multiple-choice items from a file (any format above) or a hub dataset.

    ``limit`` keeps a fixed, seeded subset of that many items (in file order), the same
    items on every call with the same ``seed``.
    """
    spec = str(path)
    local = Path(spec).expanduser()
    if local.exists():
        if local.is_dir():
            raise DataError(f"{local}: is a directory; give a .jsonl, .json or HellaSwag .txt(.bz2) file")
        name = local.name.lower()
        if name.endswith((".txt", ".txt.bz2")):
            items = _read_hellaswag_text(local)
        else:
            items = [_item_from_row(row, f"{local}", i, _stem(local)) for i, row in _read_rows(local)]
    elif _looks_like_hub_name(spec):
        items = _load_hub(spec)
    else:
        raise DataError(f"{spec}: no such file (and not a Hugging Face dataset name like 'allenai/ai2_arc:ARC-Easy@test')")
    if not items:
        raise DataError(f"{spec}: no multiple-choice items found")
    return _subset(items, limit, seed)


def _subset(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".bz2", ".jsonl", ".json", ".txt"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def _read_rows(path: Path) -> Iterable[tuple[int, dict]]:
    """Rows of a JSONL file or of a JSON array, with their 0-based row number."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of items")
        yield from enumerate(data)
        return
    for row, (_, obj) in enumerate(iter_jsonl(text.splitlines(), str(path))):
        yield row, obj


def _item_from_row(row: Any, where: str, index: int, prefix: str) -> MCItem:
    """One item from a dict in any supported row format (error names file, row and field)."""
    at = f"{where}: row {index}"
    if not isinstance(row, dict):
        raise DataError(f"{at}: expected a JSON object, got {type(row).__name__}")
    example_id = str(row.get("id") or row.get("example_id") or f"{prefix}-{index}")
    if "context_options" in row:
        contexts = _strings(row, "context_options", at)
        continuation = _string(row, "continuation", at)
        return MCItem(example_id, contexts, contexts, _gold(row, "gold", len(contexts), at), continuation, prefix)
    if "query" in row and "choices" in row:
        choices = _strings(row, "choices", at)
        return MCItem(example_id, (_string(row, "query", at),), choices, _gold(row, "gold", len(choices), at),
                      source=prefix)
    if "ctx_a" in row and "endings" in row:  # HellaSwag (lm-eval tasks/hellaswag/utils.py)
        ctx = f"{_string(row, 'ctx_a', at)} {str(row.get('ctx_b') or '').capitalize()}"
        query = hellaswag_preprocess(f"{_string(row, 'activity_label', at)}: {ctx}")
        choices = tuple(hellaswag_preprocess(e) for e in _strings(row, "endings", at))
        return MCItem(example_id, (query,), choices, _gold(row, "label", len(choices), at), source=prefix)
    if "question" in row and isinstance(row.get("choices"), dict) and "answerKey" in row:  # ARC
        texts = _strings(row["choices"], "text", f"{at}: field 'choices'")
        labels = [str(x) for x in row["choices"].get("label", [])]
        if str(row["answerKey"]) not in labels:
            raise DataError(f"{at}: field 'answerKey' {row['answerKey']!r} is not one of the choice labels {labels}")
        return MCItem(example_id, (f"Question: {_string(row, 'question', at)}\nAnswer:",), texts,
                      labels.index(str(row["answerKey"])), source=prefix)
    if "goal" in row and "sol1" in row:  # PIQA
        choices = (_string(row, "sol1", at), _string(row, "sol2", at))
        return MCItem(example_id, (f"Question: {_string(row, 'goal', at)}\nAnswer:",), choices,
                      _gold(row, "label", 2, at), source=prefix)
    if "sentence" in row and "option1" in row:  # Winogrande (lm-eval preprocess_winogrande.py)
        sentence = _string(row, "sentence", at)
        if "_" not in sentence:
            raise DataError(f"{at}: field 'sentence' has no '_' blank")
        idx = sentence.index("_")
        contexts = tuple(sentence[:idx] + _string(row, k, at) for k in ("option1", "option2"))
        answer = str(row.get("answer", ""))
        if answer not in ("1", "2"):
            raise DataError(f"{at}: field 'answer' must be '1' or '2', got {answer!r}")
        return MCItem(example_id, contexts, contexts, int(answer) - 1, sentence[idx + 1:].strip(), prefix)
    raise DataError(
        f"{at}: unknown multiple-choice row (fields {sorted(row)}); expected "
        "{query, choices, gold} or {context_options, continuation, gold} (or HF HellaSwag/ARC/PIQA/Winogrande rows)"
    )


def _string(row: dict, key: str, at: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{at}: field '{key}' must be a string, got {type(value).__name__}")
    return value


def _strings(row: dict, key: str, at: str) -> tuple[str, ...]:
    value = row.get(key)
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
        raise DataError(f"{at}: field '{key}' must be a list of at least two strings")
    return tuple(value)


def _gold(row: dict, key: str, n_choices: int, at: str) -> int:
    value = row.get(key)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n_choices:
        raise DataError(f"{at}: field '{key}' must be a choice index in 0..{n_choices - 1}, got {value!r}")
    return value


# ---- HellaSwag -------------------------------------------------------------------------------
def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``tasks/hellaswag/utils.preprocess``."""
    text = text.strip()
    # Brackets are artifacts of the WikiHow part of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


# The text file holds ``activity_label + ": " + ctx`` with ctx = ctx_a + " " + ctx_b, while
# lm-eval builds ``ctx_a + " " + ctx_b.capitalize()``. ctx_b (ActivityNet items) is the
# unfinished lower-case sentence after ctx_a's last full stop; capitalizing that recovers
# lm-eval's prompt for those items. WikiHow items end in a full sentence and stay as they are.
_CTX_B = re.compile(r"^(.*[.!?][\"')]?)\s+([a-z][^.!?]*)$", re.S)


def hellaswag_context_from_text(line: str) -> str:
    label, sep, ctx = line.partition(": ")
    if not sep:
        return hellaswag_preprocess(line)
    match = _CTX_B.match(ctx)
    if match:
        ctx = f"{match.group(1)} {match.group(2).capitalize()}"
    return hellaswag_preprocess(f"{label}: {ctx}")


def _read_hellaswag_text(path: Path) -> list[MCItem]:
    opener = bz2.open if path.name.lower().endswith(".bz2") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise DataError(f"{path}: expected 6 lines per HellaSwag item, got {len(lines)} lines")
    items = []
    stem = _stem(path)
    for k in range(len(lines) // 6):
        block = lines[6 * k: 6 * k + 6]
        at = f"{path}: item {k} (line {6 * k + 2})"
        if not block[1].strip().isdigit() or not 0 <= int(block[1]) < 4:
            raise DataError(f"{at}: gold label must be 0..3, got {block[1]!r}")
        choices = tuple(hellaswag_preprocess(e) for e in block[2:6])
        items.append(MCItem(f"{stem}-{k}", (hellaswag_context_from_text(block[0]),), choices, int(block[1]),
                            source=stem))
    return items


# ---- Hugging Face hub ------------------------------------------------------------------------
_HUB_NAME = re.compile(r"^(hf:)?[\w.-]+(/[\w.-]+)?(:[\w.-]+)?(@[\w.\[\]:%-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".txt", ".bz2", ".csv", ".parquet")


def _looks_like_hub_name(spec: str) -> bool:
    if spec.startswith("hf:"):
        return True
    return bool(_HUB_NAME.match(spec)) and "/" in spec and not spec.lower().endswith(_FILE_SUFFIXES)


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``[hf:]NAME[:CONFIG][@SPLIT]`` -> (name, config, split)."""
    spec = spec[3:] if spec.startswith("hf:") else spec
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    return name, config or None, split or None


def _load_hub(spec: str) -> list[MCItem]:
    name, config, split = parse_hub_spec(spec)
    offline = any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"}
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "CURATUNE_OFFLINE"))
    hint = "download it once and point to a local .jsonl instead"
    if offline:
        raise DataError(f"{spec}: Hugging Face hub dataset requested but the hub is offline (HF_HUB_OFFLINE); {hint}")
    try:
        import datasets

        if split is None:
            splits = datasets.get_dataset_split_names(name, config)
            split = next((s for s in ("validation", "test", "train") if s in splits), splits[0])
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, missing dataset, missing config: all the user's to fix
        raise DataError(f"{spec}: cannot load Hugging Face dataset {name!r} (config {config}, split {split}): "
                        f"{type(e).__name__}: {e}; {hint}") from None
    prefix = f"{name.split('/')[-1]}-{split}"
    return [_item_from_row(dict(row), spec, i, prefix) for i, row in enumerate(rows)]


# ---- scoring ---------------------------------------------------------------------------------
def score_multiple_choice(model, tokenizer, items: Sequence[MCItem], batch_size: int = 16, *,
                          max_length: int | None = None, progress: bool = True,
                          share_prefix: bool = True) -> ItemScores:
    """Accuracy (``acc``) and length-normalized accuracy (``acc_norm``), lm-eval style.

    ``batch_size`` counts scored sequences (one per choice) per forward pass, like lm-eval's.
    """
    if not items:
        raise DataError("no multiple-choice items to score")
    scorer = LoglikelihoodScorer(model, tokenizer, max_length=max_length, batch_size=batch_size,
                                 share_prefix=share_prefix, progress=progress, desc="multiple choice")
    scored = scorer.score_texts([item.requests() for item in items])
    per_item = []
    for item, results in zip(items, scored):
        lls = np.array([r.loglik for r in results], dtype=np.float64)
        lengths = np.array([float(len(c)) for c in item.choices])
        pred = int(np.argmax(lls))
        with np.errstate(divide="ignore", invalid="ignore"):
            pred_norm = int(np.argmax(lls / lengths))
        per_item.append({
            "example_id": item.example_id,
            "prompt": item.prompt,
            "reference": item.choices[item.gold],
            "output": item.choices[pred],
            "acc": float(pred == item.gold),
            "acc_norm": float(pred_norm == item.gold),
            "logliks": lls.tolist(),
        })
    metrics = {
        "acc": float(np.mean([r["acc"] for r in per_item])),
        "acc_norm": float(np.mean([r["acc_norm"] for r in per_item])),
    }
    return ItemScores(metrics, per_item)
