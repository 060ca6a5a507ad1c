"""Text normalization and vectorized word n-gram hashing shared by the curation steps.

Hashing is done in bulk with numpy: each distinct word is hashed once (blake2b, cached
per process, so hashes are stable across processes and machines), then every n-gram
hash of a whole batch of documents is computed with a handful of array operations
instead of a Python loop per shingle.
"""
from __future__ import annotations

import hashlib
import operator
import re
import unicodedata

import numpy as np

_NON_WORD = re.compile(r"[^\w\s]+")
_UINT64 = np.uint64

# Odd 64-bit multipliers, one per n-gram position (fixed: hashes must be stable).
_POSITION_MULTIPLIERS = np.array(
    [
        (0x9E3779B97F4A7C15 * (2 * i + 1) + 0x632BE59BD9B4E019 * i) % (1 << 64) | 1
        for i in range(64)
    ],
    dtype=np.uint64,
)


def normalize(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used by exact dedup."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (the unit of every n-gram here)."""
    return _NON_WORD.sub(" ", text.lower()).split()


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, vectorized: spreads every input bit over the output."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> _UINT64(33)
    x *= _UINT64(0xFF51AFD7ED558CCD)
    x ^= x >> _UINT64(33)
    x *= _UINT64(0xC4CEB9FE1A85EC53)
    x ^= x >> _UINT64(33)
    return x


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (the one datasketch's affine32 scheme applies)."""
    x = x.astype(np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


class WordHasher:
    """Maps words to stable 64-bit hashes, hashing each distinct word once."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def hash_words(self, tokens: list[str]) -> np.ndarray:
        cache = self._cache
        for word in set(tokens).difference(cache):
            cache[word] = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if not tokens:
            return np.zeros(0, dtype=np.uint64)
        if len(tokens) == 1:
            return np.array([cache[tokens[0]]], dtype=np.uint64)
        # itemgetter looks every word up in C: ~3x faster than a generator over the dict.
        return np.array(operator.itemgetter(*tokens)(cache), dtype=np.uint64)


def ngram_hashes(token_lists: list[list[str]], n: int, hasher: WordHasher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram of each document, in one flat array.

    Returns ``(hashes, offsets)``: document ``i`` owns ``hashes[offsets[i]:offsets[i+1]]``.
    A document shorter than ``n`` words gets one shingle of all its words (so short texts
    still compare); an empty document gets none.
    """
    hasher = hasher or WordHasher()
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    flat = hasher.hash_words([w for tokens in token_lists for w in tokens])
    starts = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    total = int(starts[-1])

    # Window sums over the flat token stream; windows that cross a document boundary are dropped.
    width = total - n + 1
    if width > 0:
        window = np.zeros(width, dtype=np.uint64)
        for i in range(n):
            window += flat[i : i + width] * _POSITION_MULTIPLIERS[i]
        window = fmix64(window)
    else:
        window = np.zeros(0, dtype=np.uint64)

    counts = np.where(lengths >= n, lengths - n + 1, np.where(lengths > 0, 1, 0))
    offsets = np.zeros(len(token_lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint64)

    long_docs = np.nonzero(lengths >= n)[0]
    if len(long_docs):
        # Positions of valid windows: for each long doc, starts[d] .. starts[d]+count-1.
        doc_counts = counts[long_docs]
        base = np.repeat(starts[long_docs], doc_counts)
        within = np.arange(int(doc_counts.sum())) - np.repeat(np.cumsum(doc_counts) - doc_counts, doc_counts)
        dest = np.repeat(offsets[long_docs], doc_counts) + within
        out[dest] = window[base + within]
    for d in np.nonzero((lengths > 0) & (lengths < n))[0]:
        # Short documents: one shingle over all their words (length mixed in so "a b" != "a b c").
        tokens = flat[starts[d] : starts[d + 1]]
        value = (tokens * _POSITION_MULTIPLIERS[: len(tokens)]).sum(dtype=np.uint64) + _UINT64(len(tokens))
        out[offsets[d]] = fmix64(np.array([value], dtype=np.uint64))[0]
    return out, offsets


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`jaccard` of two sets given as sorted arrays of unique values (``np.unique``)."""
    if not len(a) and not len(b):
        return 1.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


def shingle_set(text: str, n: int) -> set[int]:
    """Exact shingle set of one text (for tests, detail strings and benchmarks)."""
    hashes, _ = ngram_hashes([words(text)], n)
    return set(hashes.tolist())
