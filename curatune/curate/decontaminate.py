"""Decontamination: drop training records that share n-grams with evaluation items.

Evaluation texts come from ``data.eval_sources`` (held-out target-task data) and every
``evaluate.suites[].path`` (benchmark files), read generically: each string field of each
JSONL/JSON item is one evaluation text, so any suite format works without a parser. For an
``lm_eval`` suite the path is a task YAML: its local ``dataset_kwargs.data_files`` are read
(:func:`lm_eval_data_files`); a registry task's hub dataset is not seen.

A record is contaminated when the fraction of n-grams it shares with one evaluation
text, relative to the shorter of the two, reaches ``min_overlap`` and at least
``min_shared_ngrams`` are shared. Texts shorter than ``ngram`` words but with at least
``min_words`` (when set below ``ngram``) are matched as a whole phrase. N-grams that
occur in many evaluation texts are template wording ("Which of the following is
true?"), not item content, and are ignored.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from curatune.curate.base import (
    CurateContext,
    Removal,
    Step,
    StepResult,
    chunked,
    text_of,
)
from curatune.curate.config import DecontaminateConfig
from curatune.curate.parallel import parallel_imap
from curatune.curate.text import WordHasher, ngram_hashes, words
from curatune.errors import DataError
from curatune.jsonl import iter_jsonl
from curatune.records import Record

_TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".tsv", ".parquet")


# ----------------------------------------------------------------------------- reading eval texts


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    if name.endswith(".bz2"):
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _strings(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _strings(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _strings(child, f"{prefix}[{i}]")


def _expand(path: str) -> list[Path]:
    p = Path(os.path.expanduser(path))
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file() and _base_suffix(f) in _TEXT_SUFFIXES)
    if any(ch in path for ch in "*?["):
        return sorted(Path(f) for f in glob.glob(os.path.expanduser(path), recursive=True) if Path(f).is_file())
    if not p.exists():
        raise DataError(f"{path}: evaluation file not found (decontamination)")
    return [p]


def _base_suffix(path: Path) -> str:
    name = path.name.lower()
    for compressed in (".gz", ".bz2"):
        if name.endswith(compressed):
            name = name[: -len(compressed)]
    return os.path.splitext(name)[1]


def read_eval_texts(path: str) -> list[tuple[str, str]]:
    """Every string field of every item of an evaluation file (or folder/glob) as (id, text)."""
    out: list[tuple[str, str]] = []
    for file in _expand(path):
        suffix = _base_suffix(file)
        if suffix == ".parquet":
            frame = pd.read_parquet(file)
            for i, row in enumerate(frame.to_dict("records")):
                out += [(f"{file.name}:{i + 1}:{k}", v) for k, v in _strings(_plain(row), "")]
            continue
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
            for i, row in enumerate(frame.to_dict("records")):
                out += [(f"{file.name}:{i + 2}:{k}", v) for k, v in _strings(row, "")]
            continue
        with _open_text(file) as handle:
            if suffix == ".json":
                try:
                    data = json.load(handle)
                except ValueError as exc:
                    raise DataError(f"{file}: not valid JSON ({exc})") from None
                items = data if isinstance(data, list) else [data]
                for i, item in enumerate(items):
                    out += [(f"{file.name}:{i}:{k}", v) for k, v in _strings(item, "")]
            elif suffix == ".jsonl":
                for line_no, item in iter_jsonl(handle, str(file)):
                    out += [(f"{file.name}:{line_no}:{k}", v) for k, v in _strings(item, "")]
            else:  # plain text: one evaluation text per line
                for line_no, line in enumerate(handle, 1):
                    if line.strip():
                        out.append((f"{file.name}:{line_no}", line.rstrip("\n")))
    return out


class _TaskYamlLoader(yaml.SafeLoader):
    """Safe YAML that reads lm-eval task files: their ``!function module.name`` tags become None
    (only the plain data_files keys matter here)."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def lm_eval_data_files(path: str) -> list[Path]:
    """The local data files of the lm-eval task YAML(s) at ``path`` (a file, or a folder of them):
    their ``dataset_kwargs.data_files`` (and those of files they ``include``), relative ones taken
    against the folder of ``path``, as the lm_eval suite kind loads them."""
    root = Path(os.path.expanduser(path))
    yamls = sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.yml")) if root.is_dir() else [root]
    base = root if root.is_dir() else root.parent
    found: dict[Path, None] = {}
    for file in yamls:
        for name in _task_data_files(file, depth=0):
            candidate = Path(os.path.expanduser(name))
            candidate = candidate if candidate.is_absolute() else base / candidate
            if candidate.is_file():
                found[candidate.resolve()] = None
    return list(found)


def _task_data_files(file: Path, depth: int) -> list[str]:
    try:
        config = yaml.load(file.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{file}: cannot read the lm-eval task YAML ({exc})") from None
    if not isinstance(config, dict):
        return []
    names: list[str] = []
    files = (config.get("dataset_kwargs") or {}).get("data_files") if isinstance(config.get("dataset_kwargs"), dict) else None
    for value in (files.values() if isinstance(files, dict) else [files]):
        names += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    included = config.get("include")
    if isinstance(included, str) and depth < 5 and (file.parent / included).is_file():
        names += _task_data_files(file.parent / included, depth + 1)
    return names


def _plain(row: dict) -> dict:
    # Parquet cells may be numpy arrays; turn them into lists so _strings walks them.
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}


# ----------------------------------------------------------------------------- the index


class EvalIndex:
    """Sorted n-gram hashes of evaluation texts, with the text each came from."""

    def __init__(self, items: list[tuple[str, str]], ngram: int, min_words: int, max_share: float = 0.01, min_template_count: int = 5):
        self.ngram = ngram
        hasher = WordHasher()
        self.ids: list[str] = []
        self.sizes: list[int] = []
        long_docs: list[list[str]] = []
        phrases: dict[int, list[list[str]]] = defaultdict(list)
        phrase_unit: dict[int, list[int]] = defaultdict(list)
        for item_id, text in items:
            tokens = words(text)
            if len(tokens) >= ngram:
                self.ids.append(item_id)
                long_docs.append(tokens)
            elif len(tokens) >= min_words:
                self.ids.append(item_id)
                phrases[len(tokens)].append(tokens)
                phrase_unit[len(tokens)].append(len(self.ids) - 1)
                long_docs.append([])  # keeps unit positions aligned
        hashes, offsets = ngram_hashes(long_docs, ngram, hasher)
        unit = np.repeat(np.arange(len(long_docs)), np.diff(offsets))
        # One entry per (unit, n-gram): repeats inside a text count once.
        pairs = np.unique(np.stack([hashes, unit.astype(np.uint64)], axis=1), axis=0) if len(hashes) else np.zeros((0, 2), np.uint64)
        gram, unit = pairs[:, 0], pairs[:, 1].astype(np.int64)
        # Template n-grams: shared by many evaluation texts.
        uniq, inverse, counts = np.unique(gram, return_inverse=True, return_counts=True)
        limit = max(min_template_count, int(max_share * max(len(self.ids), 1)))
        common = counts[inverse] > limit
        self.template_grams = int((counts > limit).sum())
        gram, unit = gram[~common], unit[~common]
        order = np.argsort(gram, kind="stable")
        self.gram, self.unit = gram[order], unit[order]
        self.unit_size = np.bincount(self.unit, minlength=len(self.ids)).astype(np.int64)
        # Short texts: whole-phrase hashes per length (a phrase is one "n-gram" of its own length).
        self.phrases: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for length, docs in phrases.items():
            phrase_hashes, _ = ngram_hashes(docs, length, hasher)
            units = np.array(phrase_unit[length], dtype=np.int64)
            order = np.argsort(phrase_hashes, kind="stable")
            self.phrases[length] = (phrase_hashes[order], units[order])
            self.unit_size[units] = 1

    def __len__(self) -> int:
        return len(self.ids)


_INDEX: EvalIndex | None = None


def _set_index(index: EvalIndex) -> None:
    global _INDEX
    _INDEX = index


def _match_chunk(args: tuple[list[str], float, int]) -> list[tuple[str, float] | None]:
    texts, min_overlap, min_shared = args
    index = _INDEX
    assert index is not None, "_set_index runs first in every worker"
    token_lists = [words(t) for t in texts]
    out: list[tuple[str, float] | None] = [None] * len(texts)
    hashes, offsets = ngram_hashes(token_lists, index.ngram, _HASHER)
    if len(index.gram) and len(hashes):
        hit = _in_sorted(index.gram, hashes)
        doc_of = np.repeat(np.arange(len(texts)), np.diff(offsets))
        for d in np.unique(doc_of[hit]):
            own = np.unique(hashes[offsets[d] : offsets[d + 1]])
            lo = np.searchsorted(index.gram, own, side="left")
            present = index.gram[np.minimum(lo, len(index.gram) - 1)] == own
            shared, lo = own[present], lo[present]
            hi = np.searchsorted(index.gram, shared, side="right")
            units = np.concatenate([index.unit[a:b] for a, b in zip(lo, hi)])
            unit_ids, counts = np.unique(units, return_counts=True)
            overlap = counts / np.minimum(len(own), np.maximum(index.unit_size[unit_ids], 1))
            overlap[counts < min_shared] = 0.0
            best = int(np.argmax(overlap))
            if overlap[best] >= min_overlap:
                out[d] = (index.ids[unit_ids[best]], float(overlap[best]))
    for length, (phrase_hashes, units) in index.phrases.items():
        # Only records at least as long as the phrase can contain it.
        candidates = [d for d, t in enumerate(token_lists) if out[d] is None and len(t) >= length]
        if not candidates:
            continue
        grams, goff = ngram_hashes([token_lists[d] for d in candidates], length, _HASHER)
        pos = np.searchsorted(phrase_hashes, grams)
        pos = np.minimum(pos, len(phrase_hashes) - 1)
        hit = phrase_hashes[pos] == grams
        if hit.any():
            doc_of = np.repeat(np.arange(len(candidates)), np.diff(goff))
            for g in np.nonzero(hit)[0]:
                d = candidates[doc_of[g]]
                if out[d] is None:
                    out[d] = (index.ids[units[pos[g]]], 1.0)
    return out


_HASHER = WordHasher()


def _in_sorted(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.isin(queries, sorted_values)`` by binary search: ``np.isin`` sorts the index again on
    every call, which made one record's lookup cost O(index size) (23 min on Multi30k's 29k pairs)."""
    pos = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[pos] == queries


class Decontaminate(Step):
    config_class = DecontaminateConfig
    reasons = ("contaminated",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        items = list(context.eval_items_loader() if context.eval_items_loader else [])
        for path in cfg.extra_paths:
            items += read_eval_texts(path)
        if not items or not records:
            return StepResult(list(records), [], {"eval_texts": len(items)})
        index = EvalIndex(items, cfg.ngram, cfg.min_words)
        # Texts built a chunk at a time as workers take them, not the whole corpus at once.
        chunks = (([text_of(r, "text") for r in c], cfg.min_overlap, cfg.min_shared_ngrams) for c in chunked(records, 2000))
        with context.progress.task("decontamination", len(records)) as task:
            parts = list(parallel_imap(
                _match_chunk, chunks, context.workers, task, lambda chunk: len(chunk[0]),
                initializer=_set_index, initargs=(index,),
            ))
        kept, removed = [], []
        for record, match in zip(records, (m for part in parts for m in part)):
            if match is None:
                kept.append(record)
            else:
                item_id, overlap = match
                removed.append(Removal(record, "contaminated", f"{overlap:.0%} n-gram overlap with eval item {item_id}",
                                       eval_item=item_id))
        return StepResult(kept, removed, {"eval_texts": len(index), "template_ngrams_ignored": index.template_grams})
