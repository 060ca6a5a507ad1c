"""Who is removed against whom inside a near-duplicate cluster.

Union-find over verified pairs joins A~B and B~C even when A and C share little: on GPTeacher
Toolformer (threshold 0.7) 964 of 1,638 removals were below 0.7 to the record kept, down to
0.35, in one component of 253 records. :func:`assign_representatives` fixes that without
losing the best-copy rule: inside each connected component the members are visited in keep
order (best first); a member whose estimated Jaccard to an already kept representative is at
least the threshold (and whose answers agree with it, when that check is on) is removed
against the closest such representative; any other member becomes a representative itself
and is kept. So every removed record is within the threshold of the record it names in
``duplicate_of``, and that record ranks before it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from curatune.curate.minhash import estimated_jaccard

#: Edges of the similarity-to-kept histogram in the report (the last bin is [0.9, 1.0]).
SIMILARITY_BINS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class Assignment:
    """``kept_for[i]``: the index of the record that record ``i`` is removed against, or -1 (kept).
    ``similarity[i]``: estimated Jaccard of record ``i`` to that record (nan when kept)."""

    kept_for: np.ndarray
    similarity: np.ndarray
    components: int  # connected components with two or more records
    split_components: int  # components that keep more than one representative
    largest_component: int


def assign_representatives(
    sig: np.ndarray,
    labels: np.ndarray,
    rank: np.ndarray,
    threshold: float,
    chain: bool,
    answers_agree: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Assignment:
    """Removal targets for every record, given its component ``labels`` and keep ``rank``.

    ``chain``: the whole component goes to its best-ranked member (plain union-find).
    Otherwise members are tested against the representatives kept so far (see module doc).
    ``answers_agree(left, right)``: an extra per-pair test applied to the representatives, or None.
    """
    n = len(labels)
    kept_for = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan)
    sizes = np.bincount(labels) if n else np.zeros(0, dtype=np.int64)
    shared = np.flatnonzero(sizes[labels] > 1) if n else np.zeros(0, dtype=np.int64)
    # Members grouped by component, best rank first inside each.
    order = shared[np.lexsort((rank[shared], labels[shared]))]
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]]) if len(order) else []
    bounds = list(zip(starts, list(starts[1:]) + [len(order)]))
    split = 0
    for start, stop in bounds:
        members = order[start:stop]
        if chain:
            keeper = members[0]
            rest = members[1:]
            kept_for[rest] = keeper
            similarity[rest] = estimated_jaccard(sig, rest, np.full(len(rest), keeper))
            continue
        representatives = [int(members[0])]
        for i in members[1:].tolist():
            reps = np.asarray(representatives)
            sims = (sig[reps] == sig[i]).mean(axis=1)
            close = sims >= threshold
            if answers_agree is not None and close.any():
                candidates = reps[close]
                agree = answers_agree(np.full(len(candidates), i), candidates)
                close[np.flatnonzero(close)[~agree]] = False
            if close.any():
                # The closest representative; argmax takes the best-ranked among equals.
                best = int(np.argmax(np.where(close, sims, -1.0)))
                kept_for[i] = reps[best]
                similarity[i] = sims[best]
            else:
                representatives.append(i)
        split += len(representatives) > 1
    return Assignment(kept_for, similarity, len(bounds), split, int(sizes.max()) if n else 0)


def similarity_report(similarity: np.ndarray, threshold: float) -> dict:
    """Counts per similarity bin of the removed records to their kept record, plus min/median."""
    values = similarity[~np.isnan(similarity)]
    counts, _ = np.histogram(values, bins=SIMILARITY_BINS)
    bins = {f"{lo:.1f}-{hi:.1f}": int(c) for lo, hi, c in zip(SIMILARITY_BINS, SIMILARITY_BINS[1:], counts)}
    return {
        "bins": bins,
        "removed": int(len(values)),
        "below_threshold": int((values < threshold).sum()),
        "min": round(float(values.min()), 3) if len(values) else None,
        "median": round(float(np.median(values)), 3) if len(values) else None,
    }
