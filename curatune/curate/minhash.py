"""MinHash signatures in bulk, LSH banding, and verified duplicate clusters.

Signatures use datasketch's permutations and its default ``affine32`` scheme, so a
signature here equals ``datasketch.MinHash(num_perm, seed)`` updated with the same 32-bit
shingle hashes (tests check this). What differs from calling datasketch per record is
the batching: the shingles of thousands of documents are permuted in one numpy
operation and reduced with ``np.minimum.reduceat``, and the chunks are spread over
processes. Banding and bucket grouping are vectorized as well (sort + run detection)
instead of a Python dict per band.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datasketch import MinHash

from curatune.curate.text import WordHasher, fmix32, fmix64, ngram_hashes, words

_MAX32 = np.uint32(0xFFFFFFFF)
_BAND_MULTIPLIERS = fmix64(np.arange(1, 1025, dtype=np.uint64)) | np.uint64(1)

# Cells (num_perm x shingles) per block: a 16 MB buffer that stays warm in cache.
_BLOCK_CELLS = 4_000_000


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of datasketch's affine32 permutations for ``num_perm`` and ``seed``."""
    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)


def signatures_from_hashes(hashes32: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures of many documents from their flat uint32 shingle hashes.

    Document ``i`` owns ``hashes32[offsets[i]:offsets[i+1]]``; a document with no
    shingle gets the empty signature (all 0xFFFFFFFF), like an empty datasketch MinHash.
    The permuted values are laid out (num_perm, shingles) in a reused cache-sized buffer:
    that layout makes ``reduceat`` run over contiguous memory (~7x faster than the
    (shingles, num_perm) layout with fresh allocations).
    """
    n_docs = len(offsets) - 1
    out = np.full((n_docs, len(a)), _MAX32, dtype=np.uint32)
    mixed = fmix32(hashes32)
    nonempty = np.nonzero(offsets[1:] > offsets[:-1])[0]
    if not len(nonempty):
        return out
    block_shingles = max(1, _BLOCK_CELLS // len(a))
    ends = offsets[nonempty + 1]
    buffer = np.empty((len(a), block_shingles), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    i = 0
    while i < len(nonempty):
        start = offsets[nonempty[i]]
        # Whole documents per block, so reduceat segments never straddle blocks.
        j = max(int(np.searchsorted(ends, start + block_shingles, side="right")), i + 1)
        docs = nonempty[i:j]
        stop = offsets[docs[-1] + 1]
        width = stop - start
        view = buffer[:, :width] if width <= block_shingles else np.empty((len(a), width), dtype=np.uint32)
        np.multiply(a_col, mixed[None, start:stop], out=view)
        view += b_col
        out[docs] = np.minimum.reduceat(view, offsets[docs] - start, axis=1).T
        i = j
    return out


def _sign_chunk(args: tuple[list[str], int, int, int]) -> np.ndarray:
    texts, ngram, num_perm, seed = args
    a, b = permutations(num_perm, seed)
    hashes, offsets = ngram_hashes([words(t) for t in texts], ngram, _HASHER)
    # The upper 32 bits of the 64-bit shingle hash: the 32-bit input datasketch expects.
    hashes32 = (hashes >> np.uint64(32)).astype(np.uint32)
    return signatures_from_hashes(hashes32, offsets, a, b)


_HASHER = WordHasher()  # per process; each worker builds its own word cache


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.1, fn_weight: float = 0.9) -> tuple[int, int]:
    """Bands ``b`` and rows ``r`` (b*r <= num_perm) minimizing weighted FP and FN areas.

    The same objective as datasketch's MinHashLSH, with false negatives weighted higher
    because every candidate pair is verified afterwards (a false positive costs only a
    comparison, a false negative is a missed duplicate).
    """
    s_lo = np.linspace(0.0, threshold, 200)
    s_hi = np.linspace(threshold, 1.0, 200)
    best, best_err = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p_lo = 1 - (1 - s_lo**rows) ** bands
            p_hi = 1 - (1 - s_hi**rows) ** bands
            err = fp_weight * np.trapezoid(p_lo, s_lo) + fn_weight * np.trapezoid(1 - p_hi, s_hi)
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


@dataclass
class DuplicatePairs:
    """Verified pairs (left, right) of record positions with their estimated Jaccard."""

    left: np.ndarray
    right: np.ndarray
    similarity: np.ndarray
    candidates: int  # pairs compared before verification


def estimated_jaccard(sig: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    if not len(left):
        return np.zeros(0, dtype=np.float64)
    out = np.empty(len(left), dtype=np.float64)
    step = max(1, 2_000_000 // sig.shape[1])
    for s in range(0, len(left), step):
        out[s : s + step] = (sig[left[s : s + step]] == sig[right[s : s + step]]).mean(axis=1)
    return out


def verified_pairs(
    sig: np.ndarray,
    usable: np.ndarray,
    bands: int,
    rows: int,
    threshold: float,
    max_rounds: int = 200,
) -> DuplicatePairs:
    """Candidate pairs from LSH buckets, kept only when their estimated Jaccard >= threshold.

    In each bucket the first record is a leader; every other member is compared with it,
    those that pass join it, the rest form the bucket for the next round with a new
    leader. This is exact for buckets of two and bounded (``max_rounds``) for huge
    buckets of templated text, where all-pairs comparison would be quadratic.
    """
    lefts, rights, sims = [], [], []
    candidates = 0
    positions = np.nonzero(usable)[0]
    for band in range(bands):
        cols = sig[positions, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = fmix64((cols * _BAND_MULTIPLIERS[:rows]).sum(axis=1, dtype=np.uint64))
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        same_as_next = sorted_keys[1:] == sorted_keys[:-1]
        if not same_as_next.any():
            continue
        # Bucket id per sorted position; keep only members of buckets with >= 2 records.
        bucket = np.concatenate([[0], np.cumsum(~same_as_next)])
        sizes = np.bincount(bucket)
        member = sizes[bucket] >= 2
        members = positions[order[member]]
        bucket_of = bucket[member]
        for _ in range(max_rounds):
            if len(members) < 2:
                break
            first = np.concatenate([[True], bucket_of[1:] != bucket_of[:-1]])
            leader_index = np.nonzero(first)[0]
            leader_of = members[leader_index][np.cumsum(first) - 1]
            others = ~first
            lhs, rhs = leader_of[others], members[others]
            candidates += len(lhs)
            sim = estimated_jaccard(sig, lhs, rhs)
            passed = sim >= threshold
            lefts.append(lhs[passed])
            rights.append(rhs[passed])
            sims.append(sim[passed])
            # Next round: members that neither led nor joined a leader.
            remaining = np.zeros(len(members), dtype=bool)
            remaining[np.nonzero(others)[0][~passed]] = True
            members, bucket_of = members[remaining], bucket_of[remaining]
            if not len(members):
                break
            sizes = np.bincount(bucket_of)
            keep = sizes[bucket_of] >= 2
            members, bucket_of = members[keep], bucket_of[keep]
    if lefts:
        left, right, sim = np.concatenate(lefts), np.concatenate(rights), np.concatenate(sims)
    else:
        left = right = np.zeros(0, dtype=np.int64)
        sim = np.zeros(0, dtype=np.float64)
    return DuplicatePairs(left, right, sim, candidates)


def connected_clusters(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Union-find over the verified pairs: a cluster label per record (singletons too)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels
