"""MinHash signatures, LSH banding and n-gram hashing against datasketch and exact Jaccard."""
from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash

from curatune.curate.minhash import (
    _sign_chunk, connected_clusters, lsh_params, permutations, signatures_from_hashes, verified_pairs,
)
from curatune.curate.text import jaccard, ngram_hashes, normalize, shingle_set, words


def test_signatures_equal_datasketch_for_the_same_shingle_hashes():
    rng = np.random.default_rng(0)
    a, b = permutations(64, 3)
    docs = [rng.integers(0, 2**32, size=int(rng.integers(0, 400)), dtype=np.uint64).astype(np.uint32) for _ in range(60)]
    docs[5] = np.zeros(0, dtype=np.uint32)  # an empty document
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    sig = signatures_from_hashes(np.concatenate(docs), offsets, a, b)
    for doc, row in zip(docs, sig):
        reference = MinHash(num_perm=64, seed=3, hashfunc=lambda x: x)
        reference.update_batch([int(v) for v in doc])
        assert np.array_equal(reference.hashvalues, row)


def test_signatures_span_block_boundaries(monkeypatch):
    import curatune.curate.minhash as mh

    monkeypatch.setattr(mh, "_BLOCK_CELLS", 64 * 10)  # 10 shingles per block: documents straddle blocks
    rng = np.random.default_rng(1)
    a, b = permutations(64, 1)
    docs = [rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32) for n in (3, 25, 1, 9, 40)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    sig = mh.signatures_from_hashes(np.concatenate(docs), offsets, a, b)
    for doc, row in zip(docs, sig):
        reference = MinHash(num_perm=64, seed=1, hashfunc=lambda x: x)
        reference.update_batch([int(v) for v in doc])
        assert np.array_equal(reference.hashvalues, row)


def test_ngram_hashes_match_per_document_shingle_sets():
    docs = [words("the quick brown fox jumps over the lazy dog"), [], words("short text"), words("a b c d e")]
    hashes, offsets = ngram_hashes(docs, 5)
    assert list(np.diff(offsets)) == [5, 0, 1, 1]
    # Batch hashing gives the same shingles as hashing each document alone.
    for i, doc in enumerate(docs):
        alone, _ = ngram_hashes([doc], 5)
        assert np.array_equal(hashes[offsets[i] : offsets[i + 1]], alone)
    # Word order matters, and a short text differs from a longer one that starts the same.
    assert shingle_set("a b c d e", 5) != shingle_set("e d c b a", 5)
    assert shingle_set("a b", 5) != shingle_set("a b c", 5)


def test_normalize_ignores_case_whitespace_and_punctuation():
    assert normalize("Hello,   WORLD!\n") == normalize("hello world") == "hello world"
    assert normalize("Grüße aus Köln") == "grüße aus köln"


def test_estimated_jaccard_tracks_exact_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    base = [rng.choice(vocab) for _ in range(300)]
    texts, exact = [], []
    for edits in (0, 10, 30, 60, 120):
        copy = list(base)
        for _ in range(edits):
            copy[rng.randrange(len(copy))] = rng.choice(vocab)
        texts.append(" ".join(copy))
        exact.append(jaccard(shingle_set(" ".join(base), 5), shingle_set(texts[-1], 5)))
    sig = _sign_chunk(([" ".join(base)] + texts, 5, 256, 1))
    for i, j in enumerate(exact):
        est = float((sig[0] == sig[i + 1]).mean())
        assert abs(est - j) < 0.09, (est, j)


def test_lsh_params_favour_recall_above_threshold():
    bands, rows = lsh_params(0.7, 128)
    assert bands * rows <= 128
    p = lambda s: 1 - (1 - s**rows) ** bands  # noqa: E731
    assert p(0.8) > 0.99 and p(0.3) < 0.05


def test_verified_pairs_and_clusters():
    rng = random.Random(2)
    vocab = [f"w{i}" for i in range(5000)]
    originals = [" ".join(rng.choice(vocab) for _ in range(120)) for _ in range(30)]
    copies = [t.replace(t.split()[10], "changed", 1) for t in originals[:10]]
    sig = _sign_chunk((originals + copies, 5, 128, 1))
    bands, rows = lsh_params(0.7, 128)
    pairs = verified_pairs(sig, np.ones(len(sig), bool), bands, rows, 0.7)
    found = {tuple(sorted(p)) for p in zip(pairs.left.tolist(), pairs.right.tolist())}
    assert found == {(i, 30 + i) for i in range(10)}
    labels = connected_clusters(len(sig), pairs.left, pairs.right)
    assert all(labels[i] == labels[30 + i] for i in range(10))
    assert len(set(labels[10:30].tolist())) == 20


def test_huge_bucket_of_identical_texts_is_bounded_and_clustered():
    sig = _sign_chunk((["same words in every record of this bucket"] * 3000, 5, 64, 1))
    bands, rows = lsh_params(0.7, 64)
    pairs = verified_pairs(sig, np.ones(len(sig), bool), bands, rows, 0.7)
    labels = connected_clusters(len(sig), pairs.left, pairs.right)
    assert len(set(labels.tolist())) == 1
    # One leader per bucket and band: linear, not quadratic, in the bucket size.
    assert pairs.candidates <= bands * 3000


@pytest.mark.parametrize("n", [1, 2, 7])
def test_tiny_inputs(n):
    sig = _sign_chunk((["one two three"] * n, 5, 32, 1))
    assert sig.shape == (n, 32)
