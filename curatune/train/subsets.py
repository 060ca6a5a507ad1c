"""Which records each cell trains on: the held-out carve and the nested subsets.

Order of operations (and why):

1. The training pool is the curated records (``curate/kept.parquet``) or the raw sources.
2. The held-out split is fixed *before* any subset is drawn, so no size or seed ever
   trains on it: either the configured ``eval_sources`` (also removed from the pool by
   id) or ``heldout_size`` records carved with ``heldout_seed``, stratified by category.
   Once written, ``train/heldout.parquet`` is reused as is, so a resumed sweep can never
   carve differently.
3. For each seed the remaining pool gets one ordering; subset(n) is its first n records,
   so subset(n_k) is contained in subset(n_k+1) by construction. With ``stratify`` the
   ordering interleaves categories so that every prefix keeps the pool's proportions.
4. With a *paired draw* (``train.draw = paired``) a curated pool takes its ordering from the
   raw records instead: the raw pool is ordered exactly as a ``train.data = raw`` run orders
   it, and the curated order is the kept records in that order. The curated subset of size n
   is then the raw subset of size n without the records curation removed, topped up with the
   next kept records, so the two differ only by curation (:class:`PairedDraw` counts how many
   records differ per size).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from curatune.errors import DataError
from curatune.records import Record, frame_to_records, records_to_frame
from curatune.runcheck import read_run_parquet
from curatune.rundir import RunDir, atomic_write_parquet

SUBSET_COLUMNS = ["seed", "size", "id", "order"]


@dataclass
class Split:
    """The training pool (held-out removed) and the held-out records."""

    pool: list[Record]
    heldout: list[Record]
    removed_from_pool: int = 0  # pool records dropped because they are held-out records
    notes: list[str] = field(default_factory=list)


def _category_key(record: Record) -> str:
    return record.category if record.category else ""


def _has_categories(records: list[Record]) -> bool:
    return len({_category_key(r) for r in records}) > 1


def canonical_order(records: list[Record]) -> list[Record]:
    """Sort by id (stable), so the draw does not depend on the order rows arrived in."""
    return sorted(records, key=lambda r: r.id)


def stratified_order(records: list[Record], seed: int, stratify: bool) -> list[int]:
    """A seeded ordering of ``records`` (indices) whose every prefix is near-proportional.

    Each category is shuffled; its i-th record gets the key (i + u) / n_category with u
    uniform in [0, 1), and the pool is sorted by key. A prefix of length n therefore holds
    about n * n_category / n_pool records of every category (off by at most one), and
    prefixes are nested because they are prefixes of one ordering.
    """
    rng = np.random.default_rng(seed)
    n = len(records)
    if not stratify or not _has_categories(records):
        return [int(i) for i in rng.permutation(n)]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        groups[_category_key(record)].append(i)
    keys = np.empty(n)
    for name in sorted(groups):
        members = np.array(groups[name])
        shuffled = members[rng.permutation(len(members))]
        keys[shuffled] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    # Ties are impossible in practice; argsort is stable anyway.
    return [int(i) for i in np.argsort(keys, kind="stable")]


def carve_heldout(records: list[Record], size: int, seed: int, stratify: bool) -> tuple[list[Record], list[Record]]:
    """Split ``records`` into (pool, heldout) with ``size`` held-out records."""
    if size == 0:
        return list(records), []
    if size >= len(records):
        raise DataError(
            f"data.heldout_size = {size} but only {len(records)} training records are available; "
            "lower data.heldout_size or give data.eval_sources"
        )
    ordered = canonical_order(records)
    order = stratified_order(ordered, seed, stratify)
    held = set(order[:size])
    heldout = [ordered[i] for i in sorted(held)]
    pool = [ordered[i] for i in range(len(ordered)) if i not in held]
    return pool, heldout


def make_split(pool_records: list[Record], eval_records: list[Record] | None, heldout_size: int,
               seed: int, stratify: bool, existing_heldout: list[Record] | None = None) -> Split:
    """Fix the held-out split and the pool it leaves.

    ``existing_heldout`` (from a previous run) wins over everything else: its ids are
    removed from the pool and nothing is carved again.
    """
    if existing_heldout is not None:
        held_ids = {r.id for r in existing_heldout}
        pool = [r for r in pool_records if r.id not in held_ids]
        return Split(pool, list(existing_heldout), len(pool_records) - len(pool),
                     ["reused the existing train/heldout.parquet"])
    if eval_records:
        held_ids = {r.id for r in eval_records}
        pool = [r for r in pool_records if r.id not in held_ids]
        return Split(pool, list(eval_records), len(pool_records) - len(pool))
    pool, heldout = carve_heldout(pool_records, heldout_size, seed, stratify)
    return Split(pool, heldout, 0)


@dataclass
class PairedDraw:
    """How a curated order was derived from the raw order (one per seed), and how far the
    curated subsets are from the raw subsets of the same size."""

    raw_pool_size: int
    not_in_raw: int  # kept records whose id no raw record has (curation changed them); ordered last
    kept_ranks: dict[int, list[int]]  # per seed: positions in the raw order of the records the curated order takes

    def differing(self, seed: int, size: int) -> int:
        """Records of the curated subset of ``size`` that are not in the raw subset of ``size``
        (as many raw-subset records are not in the curated one): the removed records of the raw
        subset, replaced by later kept records."""
        shared = sum(1 for rank in self.kept_ranks[seed][:size] if rank < size)
        return size - shared

    def summary(self, sizes: list[int]) -> dict:
        return {
            "raw_pool_size": self.raw_pool_size,
            "not_in_raw": self.not_in_raw,
            "differing_records": {str(seed): {str(n): self.differing(seed, n) for n in sizes} for seed in self.kept_ranks},
        }


def paired_order(pool: list[Record], raw_pool: list[Record], seed: int, stratify: bool) -> tuple[list[int], list[int], int]:
    """The order over ``pool`` (canonical order, indices) that follows the raw order of
    ``raw_pool``: (order, the raw-order rank of each record taken, records not in the raw pool).

    Records are matched by id; an id present several times in the raw pool (exact duplicates)
    is taken once, at its first place in the raw order. Pool records no raw record matches come
    last, in a seeded order of their own."""
    raw = canonical_order(raw_pool)
    raw_order = stratified_order(raw, seed, stratify)
    waiting: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(pool):
        waiting[record.id].append(index)
    order, ranks = [], []
    for rank, raw_index in enumerate(raw_order):
        slots = waiting.get(raw[raw_index].id)
        if slots:
            order.append(slots.pop(0))
            ranks.append(rank)
    rest = [i for slots in waiting.values() for i in slots]
    rest = [rest[i] for i in np.random.default_rng(seed).permutation(len(rest))]
    return order + rest, ranks + [len(raw_order) + i for i in range(len(rest))], len(rest)


@dataclass
class SubsetPlan:
    """Per seed: the ordering of the pool; subset(size) is its prefix."""

    pool: list[Record]  # canonical order (sorted by id)
    orders: dict[int, list[int]]
    sizes: list[int]
    oversized: list[int]
    paired: PairedDraw | None = None

    @classmethod
    def build(cls, pool: list[Record], seeds: list[int], sizes: list[int], stratify: bool,
              raw_pool: list[Record] | None = None) -> "SubsetPlan":
        """Orders per seed over ``pool``; with ``raw_pool``, the paired draw (module docstring)."""
        ordered = canonical_order(pool)
        paired = None
        if raw_pool is None:
            orders = {seed: stratified_order(ordered, seed, stratify) for seed in seeds}
        else:
            orders, ranks, missing = {}, {}, 0
            for seed in seeds:
                orders[seed], ranks[seed], missing = paired_order(ordered, raw_pool, seed, stratify)
            paired = PairedDraw(len(raw_pool), missing, ranks)
        fitting = [s for s in sizes if s <= len(ordered)]
        oversized = [s for s in sizes if s > len(ordered)]
        return cls(ordered, orders, fitting, oversized, paired)

    def subset(self, seed: int, size: int) -> list[Record]:
        if size > len(self.pool):
            raise DataError(f"subset size {size} is larger than the training pool ({len(self.pool)} records)")
        return [self.pool[i] for i in self.orders[seed][:size]]

    def frame(self) -> pd.DataFrame:
        """Long table (seed, size, id, order) of every subset; order = position in the draw."""
        rows = []
        for seed, order in self.orders.items():
            for size in self.sizes:
                for position, index in enumerate(order[:size]):
                    rows.append((seed, size, self.pool[index].id, position))
        return pd.DataFrame(rows, columns=SUBSET_COLUMNS)


def read_heldout(run_dir: RunDir) -> list[Record] | None:
    if not run_dir.heldout.exists():
        return None
    return frame_to_records(read_run_parquet(run_dir.heldout))


def write_heldout(run_dir: RunDir, heldout: list[Record]) -> None:
    atomic_write_parquet(run_dir.heldout, records_to_frame(heldout))


def category_counts(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[_category_key(r) or "(none)"] += 1
    return dict(sorted(counts.items()))


def max_prefix_imbalance(plan: SubsetPlan, seed: int) -> float:
    """Largest |count - expected| of any category in any planned prefix (for reports/tests)."""
    total = category_counts(plan.pool)
    worst = 0.0
    for size in plan.sizes:
        got = category_counts(plan.subset(seed, size))
        for name, n_pool in total.items():
            expected = size * n_pool / len(plan.pool)
            worst = max(worst, abs(got.get(name, 0) - expected))
    return worst if not math.isnan(worst) else 0.0
