"""Deduplication steps: exact (normalized text), near (MinHash + LSH) and semantic (SemDeDup)."""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np

from curatune.curate.base import CurateContext, Removal, Step, StepResult, chunked, text_of
from curatune.curate.config import ExactDedupConfig, NearDupConfig, SemanticDedupConfig
from curatune.curate.minhash import (
    _sign_chunk, connected_clusters, estimated_jaccard, lsh_params, verified_pairs,
)
from curatune.curate.parallel import effective_workers, parallel_map
from curatune.curate.text import normalize
from curatune.records import Record


def keep_order(records: Sequence[Record], policy: str) -> np.ndarray:
    """A preference rank per record (lower is kept first) for a keep policy.

    first: input order. longest: longest response, then input order. quality:
    ``meta.quality_score`` when numeric, else the heuristic score of the quality step.
    """
    n = len(records)
    position = np.arange(n, dtype=np.float64)
    if policy == "first":
        primary = np.zeros(n)
    elif policy == "longest":
        primary = -np.array([len(r.response.strip()) for r in records], dtype=np.float64)
    elif policy == "quality":
        from curatune.curate.quality import heuristic_quality

        primary = -np.array([_quality_score(r, heuristic_quality) for r in records], dtype=np.float64)
    else:  # pragma: no cover - the config validates the policy
        raise ValueError(policy)
    order = np.lexsort((position, primary))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _quality_score(record: Record, fallback: Callable[[Record], float]) -> float:
    value = record.meta.get("quality_score")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return fallback(record)


def resolve_clusters(
    records: Sequence[Record],
    labels: np.ndarray,
    policy: str,
    reason: str,
    prefix: str,
    describe: Callable[[int, int], str],
) -> StepResult:
    """Keep one record per cluster label (by ``policy``); ledger the rest against it."""
    rank = keep_order(records, policy)
    # The kept member of each label: the member with the lowest rank.
    order = np.lexsort((rank, labels))
    first_of_label = np.ones(len(order), dtype=bool)
    first_of_label[1:] = labels[order][1:] != labels[order][:-1]
    keeper = {int(labels[i]): int(i) for i in order[first_of_label]}
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    kept, removed = [], []
    clusters = 0
    for i, record in enumerate(records):
        label = int(labels[i])
        k = keeper[label]
        if k == i:
            kept.append(record)
            clusters += sizes[label] > 1
            continue
        removed.append(
            Removal(record, reason, describe(i, k), duplicate_of=records[k].id, cluster_id=f"{prefix}-{records[k].id}")
        )
    return StepResult(kept, removed, {"clusters": int(clusters)})


class ExactDedup(Step):
    """Removes records whose normalized text (case, whitespace, punctuation) is identical."""

    name = "exact"
    config_class = ExactDedupConfig
    reasons = ("exact_duplicate",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        labels_by_key: dict[str, int] = {}
        labels = np.empty(len(records), dtype=np.int64)
        with context.progress.task("exact dedup", len(records)) as task:
            for i, record in enumerate(records):
                key = hashlib.blake2b(normalize(text_of(record, cfg.field)).encode("utf-8"), digest_size=16).digest()
                labels[i] = labels_by_key.setdefault(key, len(labels_by_key))
                if i % 5000 == 4999:
                    task.advance(5000)
            task.close()
        return resolve_clusters(
            records, labels, cfg.keep, "exact_duplicate", "exact",
            lambda i, k: f"same normalized {cfg.field} as {records[k].id}",
        )


class NearDupDedup(Step):
    """MinHash + LSH over word n-gram shingles; candidate pairs verified by estimated Jaccard."""

    name = "near_dup"
    config_class = NearDupConfig
    reasons = ("near_duplicate",)

    def signatures(self, texts: list[str], context: CurateContext) -> np.ndarray:
        cfg = self.config
        workers = effective_workers(context.workers)
        # Enough chunks to balance the workers and keep the progress bar moving.
        # (below ~2000 records one process is faster than starting a pool).
        size = max(2000, min(5000, math.ceil(len(texts) / (workers * 4)) or 1))
        chunks = [(list(c), cfg.ngram, cfg.num_perm, cfg.seed) for c in chunked(texts, size)]
        with context.progress.task("near-dup: MinHash", len(texts)) as task:
            parts = parallel_map(_sign_chunk, chunks, workers, task, [len(c[0]) for c in chunks])
        if not parts:
            return np.zeros((0, cfg.num_perm), dtype=np.uint32)
        return np.concatenate(parts)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if len(records) < 2:
            return StepResult(list(records), [], {"candidates": 0, "verified_pairs": 0, "clusters": 0})
        sig = self.signatures([text_of(r, cfg.field) for r in records], context)
        # Records with no words have the empty signature; leave them to exact dedup.
        usable = (sig != np.uint32(0xFFFFFFFF)).any(axis=1)
        bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
        pairs = verified_pairs(sig, usable, bands, rows, cfg.threshold, cfg.max_bucket_compare)
        labels = connected_clusters(len(records), pairs.left, pairs.right)

        def describe(i: int, k: int) -> str:
            sim = estimated_jaccard(sig, np.array([i]), np.array([k]))[0]
            return f"estimated Jaccard {sim:.2f} with {records[k].id} ({cfg.ngram}-gram shingles)"

        result = resolve_clusters(records, labels, cfg.keep, "near_duplicate", "near", describe)
        result.counters.update(
            {"bands": bands, "rows": rows, "candidates": int(pairs.candidates), "verified_pairs": int(len(pairs.left))}
        )
        return result


class SemanticDedup(Step):
    """SemDeDup: k-means on sentence embeddings, then near-identical pairs inside each cluster."""

    name = "semantic"
    config_class = SemanticDedupConfig
    reasons = ("semantic_duplicate",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        from curatune.curate.embeddings import embed_texts, kmeans_labels

        cfg = self.config
        if len(records) < 2:
            return StepResult(list(records), [], {"clusters": 0, "pairs": 0})
        vectors = embed_texts(
            [text_of(r, cfg.field) for r in records], context,
            max_seq_length=cfg.max_seq_length, batch_size=cfg.batch_size,
        )
        k = cfg.clusters or max(1, int(round(math.sqrt(len(records) / 2))))
        k = min(k, len(records))
        groups = kmeans_labels(vectors, k, cfg.seed)
        left, right = [], []
        with context.progress.task("semantic: pairs in clusters", k) as task:
            for g in range(k):
                members = np.nonzero(groups == g)[0]
                if len(members) >= 2:
                    for start in range(0, len(members), 1024):
                        rows = members[start : start + 1024]
                        block = vectors[rows] @ vectors[members].T
                        i, j = np.nonzero(block >= cfg.threshold)
                        a, b = rows[i], members[j]
                        upper = a < b
                        left.append(a[upper])
                        right.append(b[upper])
                task.advance()
        if left:
            left_a, right_a = np.concatenate(left), np.concatenate(right)
        else:
            left_a = right_a = np.zeros(0, dtype=np.int64)
        labels = connected_clusters(len(records), left_a, right_a)

        def describe(i: int, k_: int) -> str:
            return f"cosine {float(vectors[i] @ vectors[k_]):.3f} with {records[k_].id}"

        result = resolve_clusters(records, labels, cfg.keep, "semantic_duplicate", "sem", describe)
        result.counters.update({"kmeans_clusters": k, "pairs": int(len(left_a))})
        return result
