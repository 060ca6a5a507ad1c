"""Balancing: even out groups (categories, or k-means clusters of embeddings) by sampling."""
from __future__ import annotations

import math

import numpy as np

from curatune.curate.base import CurateContext, Removal, Step, StepResult, text_of
from curatune.curate.config import BalanceConfig
from curatune.curate.embeddings import embed_texts, kmeans_labels
from curatune.errors import ConfigError
from curatune.records import Record


def entropy(counts: list[int] | np.ndarray) -> float:
    """Shannon entropy (bits) of a group-size distribution."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if not len(c):
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def allocate(sizes: np.ndarray, weights: np.ndarray, target: int) -> np.ndarray:
    """Water-filling: split ``target`` in proportion to ``weights`` without exceeding ``sizes``."""
    quota = np.zeros(len(sizes), dtype=np.int64)
    open_ = sizes > 0
    remaining = min(int(target), int(sizes.sum()))
    while remaining > 0 and open_.any():
        share = weights * open_
        share = share / share.sum() * remaining
        want = np.minimum(np.floor(share).astype(np.int64), sizes - quota)
        if want.sum() == 0:
            # Hand out the last few records one by one to the groups with the largest remainders.
            order = np.argsort(-(share - np.floor(share)), kind="stable")
            for g in order:
                if remaining == 0:
                    break
                if open_[g] and quota[g] < sizes[g]:
                    quota[g] += 1
                    remaining -= 1
            break
        quota += want
        remaining -= int(want.sum())
        open_ = quota < sizes
    return quota


class Balance(Step):
    config_class = BalanceConfig
    reasons = ("balance_cap", "balance_sample")

    def groups(self, records: list[Record], context: CurateContext) -> tuple[np.ndarray, list[str], str]:
        cfg = self.config
        with_category = sum(r.category is not None for r in records)
        by = cfg.by
        if by == "auto":
            distinct = {r.category for r in records if r.category is not None}
            by = "category" if with_category >= 0.5 * len(records) and len(distinct) >= 2 else "cluster"
        if by == "category":
            names = sorted({r.category if r.category is not None else "(none)" for r in records})
            lookup = {n: i for i, n in enumerate(names)}
            labels = np.array([lookup[r.category if r.category is not None else "(none)"] for r in records])
            return labels, names, "category"

        vectors = embed_texts([text_of(r, "text") for r in records], context)
        k = min(cfg.clusters, len(records))
        labels = kmeans_labels(vectors, k, cfg.seed)
        return labels, [f"cluster-{i}" for i in range(k)], "cluster"

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if not records:
            return StepResult([], [], {"groups": 0})
        if cfg.strategy == "cap" and cfg.max_per_group is None and cfg.target_size is None:
            raise ConfigError("curate.steps balance: strategy 'cap' needs max_per_group (or target_size)")
        labels, names, grouped_by = self.groups(records, context)
        sizes = np.bincount(labels, minlength=len(names)).astype(np.int64)
        present = sizes > 0
        cap = cfg.max_per_group
        if cfg.strategy == "cap":
            if cap is None:
                cap = math.ceil(cfg.target_size / max(int(present.sum()), 1))
            quota = np.minimum(sizes, cap)
            reason_for = np.array(["balance_cap"] * len(names), dtype=object)
        else:
            weights = np.where(present, 1.0 if cfg.strategy == "uniform" else sizes.astype(np.float64) ** cfg.temperature, 0.0)
            capped = np.minimum(sizes, cap) if cap is not None else sizes
            if cfg.target_size is not None:
                target = cfg.target_size
            else:
                # Largest total at which every group can supply its exact share.
                p = weights / weights.sum()
                target = int(np.floor(np.min(capped[present] / p[present])))
            quota = allocate(capped, weights, target)
            reason_for = np.where(quota < capped, "balance_sample", "balance_cap").astype(object)
        if cfg.target_size is not None and cfg.strategy == "cap" and quota.sum() > cfg.target_size:
            quota = allocate(quota, quota.astype(np.float64), cfg.target_size)

        rng = np.random.default_rng(cfg.seed)
        keep = np.zeros(len(records), dtype=bool)
        for g in np.nonzero(present)[0]:
            members = np.nonzero(labels == g)[0]
            chosen = rng.choice(members, size=int(quota[g]), replace=False) if quota[g] < len(members) else members
            keep[chosen] = True
        kept, removed = [], []
        for i, record in enumerate(records):
            if keep[i]:
                kept.append(record)
            else:
                g = labels[i]
                removed.append(
                    Removal(record, str(reason_for[g]), f"{grouped_by} {names[g]!r}: kept {quota[g]} of {sizes[g]}")
                )
        after = np.bincount(labels[keep], minlength=len(names))
        counters = {
            "grouped_by": grouped_by,
            "groups": int(present.sum()),
            "entropy_before": round(entropy(sizes), 4),
            "entropy_after": round(entropy(after), 4),
            "max_entropy": round(math.log2(max(int(present.sum()), 1)), 4),
        }
        return StepResult(kept, removed, counters)
