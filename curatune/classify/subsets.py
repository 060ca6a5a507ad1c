"""The test split and the nested, balanced few-shot subsets of a classification run.

The test split is carved first (the same number of examples of every class, seeded), so every
cell and the zero-shot baseline are scored on the same items and paired tests apply. Each seed
then orders every class's remaining examples once; the subset with k examples per class is the
first k of each class in that order, so the 16-per-class subset holds the 8-per-class one
(nested: a larger cell sees what a smaller one saw, plus more) and every class has exactly k
(balanced).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curatune.errors import DataError

SUBSET_COLUMNS = ["seed", "size", "id", "label"]


@dataclass
class Split:
    test: pd.DataFrame  # id, text, label, source
    pool: pd.DataFrame  # the rest: what subsets are drawn from

    @property
    def classes(self) -> list[str]:
        return sorted(self.test["label"].unique())


def carve_test(records: pd.DataFrame, per_class: int, largest_size: int, seed: int) -> Split:
    """``per_class`` test examples of every class; the rest is the pool. Every class must keep
    ``largest_size`` examples in the pool, else the error names the class and what fits."""
    counts = records["label"].value_counts()
    short = {str(label): int(n) for label, n in counts.items() if n < per_class + largest_size}
    if short:
        fewest = min(short.values())
        raise DataError(
            f"classes {short} have too few examples for {per_class} test + {largest_size} training examples per "
            f"class; lower classify.heldout_per_class to at most {max(fewest - largest_size, 0)} or the largest of "
            f"classify.sizes_per_class to at most {fewest - per_class}"
        )
    order = records.sample(frac=1.0, random_state=np.random.RandomState(seed)).reset_index(drop=True)
    rank = order.groupby("label").cumcount()
    test = order[rank < per_class].sort_values("id").reset_index(drop=True)
    pool = order[rank >= per_class].sort_values("id").reset_index(drop=True)
    return Split(test, pool)


def nested_subsets(pool: pd.DataFrame, sizes: list[int], seeds: list[int]) -> pd.DataFrame:
    """One row per (seed, size, id): the ids of each subset (SUBSET_COLUMNS)."""
    rows = []
    for seed in seeds:
        # Sorting by id first makes the order a function of the seed and the data only, not of the file order.
        order = pool.sort_values("id").sample(frac=1.0, random_state=np.random.RandomState(seed))
        rank = order.groupby("label").cumcount().to_numpy()
        for size in sorted(sizes):
            chosen = order[rank < size]
            rows.append(pd.DataFrame({"seed": seed, "size": size, "id": chosen["id"].to_numpy(),
                                      "label": chosen["label"].to_numpy()}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=SUBSET_COLUMNS)
