"""Sentence embeddings with an on-disk cache keyed by content hash, and k-means.

A re-run (or another step, e.g. balancing after semantic dedup) reuses every vector
already computed for the same text, embedder and max_seq_length. Cache shards are
written atomically (temp file + rename), so a killed run never leaves a torn shard.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from curatune.curate.base import CurateContext
from curatune.rundir import atomic_write_bytes

_SHARD_RECORDS = 4096


def load_embedder(name: str = "default", device: str = "auto"):
    """The SentenceTransformer for ``name`` (shared per process by curatune.models)."""
    from curatune.models import load_embedder as models_load_embedder

    return models_load_embedder(name, device=device)


def embedder_path(name: str = "default") -> str:
    from curatune.models import resolve_embedder_path

    return str(resolve_embedder_path(name))


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Shards of (content hash -> vector) under ``root/<embedder key>/``."""

    def __init__(self, root: Path, embedder_key: str):
        self.dir = Path(root) / "embeddings" / embedder_key

    def load(self, wanted: set[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        if not self.dir.exists():
            return found
        for shard in sorted(self.dir.glob("*.npz")):
            try:
                with np.load(shard) as data:
                    keys, vectors = data["keys"], data["vectors"]
            except (OSError, ValueError, KeyError):
                continue  # an unreadable shard is recomputed, never trusted
            for key, vector in zip(keys, vectors):
                key = bytes(key)
                if key in wanted:
                    found[key] = vector
        return found

    def save(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(keys, dtype="S16"), vectors=vectors.astype(np.float32))
        name = hashlib.blake2b(b"".join(keys), digest_size=12).hexdigest()
        atomic_write_bytes(self.dir / f"{name}.npz", buffer.getvalue())


def embed_texts(texts: list[str], context: CurateContext, *, max_seq_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """L2-normalized float32 embeddings of ``texts``, computing only what the cache lacks."""
    path = embedder_path(context.embedder)
    embedder_key = hashlib.blake2b(f"{path}|{max_seq_length}".encode("utf-8"), digest_size=8).hexdigest()
    cache = EmbeddingCache(context.resolved_cache_dir(), embedder_key)
    keys = [_text_key(t) for t in texts]
    known = cache.load(set(keys))
    missing_keys = list(dict.fromkeys(k for k in keys if k not in known))
    if missing_keys:
        text_of = dict(zip(keys, texts))
        model = load_embedder(context.embedder, context.device)
        model.max_seq_length = max_seq_length
        # Sort by length so each batch pads little: much faster on CPU.
        missing_keys.sort(key=lambda k: len(text_of[k]))
        with context.progress.task("embedding", len(missing_keys)) as task:
            for start in range(0, len(missing_keys), _SHARD_RECORDS):
                shard_keys = missing_keys[start : start + _SHARD_RECORDS]
                vectors = model.encode(
                    [text_of[k] for k in shard_keys], batch_size=batch_size,
                    normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
                ).astype(np.float32)
                cache.save(shard_keys, vectors)  # each shard saved as done: a killed run resumes
                known.update(zip(shard_keys, vectors))
                task.advance(len(shard_keys))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def kmeans_labels(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster labels from k-means (mini-batch above 10k points: same result quality, far faster)."""
    n = len(vectors)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if n > 10_000:
        from sklearn.cluster import MiniBatchKMeans

        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, random_state=seed, n_init=1)
    return model.fit_predict(vectors).astype(np.int64)
