"""Sentence embeddings with an on-disk cache keyed by content hash, and k-means.

A re-run (or another step, e.g. balancing after semantic dedup) reuses every vector
already computed for the same text, embedder, max_seq_length and dtype. Cache shards are
written atomically (temp file + rename) as soon as a chunk is embedded, so a killed run
never leaves a torn shard and resumes where it stopped.

Speed on CPU (measured on the shared 2-core development machine, see
bench/results/curate_semantic.md): texts are sorted by length so batches pad little;
every process runs torch with ONE intra-op thread and the work is split over
``curate.workers`` processes instead (torch's thread pool spins at barriers, which costs
2-3x the CPU when the cores are shared with other jobs); and on CPUs with native
bfloat16 (AVX512-BF16 / AMX) the model runs in bfloat16, ~3x faster than float32 with
vectors at cosine >= 0.998 to the float32 ones.
"""
from __future__ import annotations

import copy
import hashlib
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from curatune.curate.base import CurateContext, chunked
from curatune.curate.parallel import effective_workers
from curatune.models import load_embedder as models_load_embedder
from curatune.models import pick_device, resolve_embedder_path
from curatune.rundir import atomic_write_bytes

EmbedDtype = Literal["auto", "float32", "bfloat16"]

#: Texts per chunk: one cache shard, one unit of work for a worker process.
_CHUNK_TEXTS = 1024
#: Fewer missing texts than this are embedded in-process (starting workers costs seconds).
_MIN_TEXTS_FOR_WORKERS = 2048

_converted: dict[tuple, object] = {}


def load_embedder(name: str = "default", device: str = "auto"):
    """The SentenceTransformer for ``name`` (shared per process by curatune.models)."""
    return models_load_embedder(name, device=device)


def embedder_path(name: str = "default") -> str:
    return str(resolve_embedder_path(name))


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> bfloat16 where the hardware computes it natively, else float32."""
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return "bfloat16" if native else "float32"
    return "float32"


def _model_for(name: str, device: str, dtype: str, max_seq_length: int):
    """The embedder in ``dtype``; a converted copy, so the shared float32 model stays intact."""
    import torch

    model = load_embedder(name, device)
    if dtype != "float32":
        key = (id(model), dtype)
        if key not in _converted:
            _converted[key] = copy.deepcopy(model).to(getattr(torch, dtype))
        model = _converted[key]
    model.max_seq_length = max_seq_length
    return model


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Shards of (content hash -> vector) under ``root/embeddings/<embedder key>/``."""

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
                # numpy's "S16" drops trailing NUL bytes (1 key in 256 ends with one): restore them.
                key = bytes(key).ljust(16, b"\x00")
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


# The encoder settings a worker process uses (set once per worker by _init_worker).
_worker_settings: tuple | None = None


def _init_worker(name: str, device: str, dtype: str, max_seq_length: int, batch_size: int,
                 in_worker_process: bool = False) -> None:
    global _worker_settings
    _worker_settings = (name, device, dtype, max_seq_length, batch_size)
    if in_worker_process:
        import torch

        # A forked child must never enter an OpenMP parallel region: the pool it inherited
        # from the parent is dead and libgomp deadlocks. One thread runs every op inline.
        torch.set_num_threads(1)


def _encode_chunk(texts: list[str]) -> np.ndarray:
    """Embed one chunk with the settings of _init_worker, on one torch thread."""
    import torch

    name, device, dtype, max_seq_length, batch_size = _worker_settings
    model = _model_for(name, device, dtype, max_seq_length)
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        vectors = model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True,
            show_progress_bar=False,
        )
        vectors = vectors.float().cpu().numpy()
    finally:
        torch.set_num_threads(threads)
    # Normalized again in float32: bfloat16 output is normalized only to ~3 digits.
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def embed_texts(
    texts: list[str],
    context: CurateContext,
    *,
    max_seq_length: int = 128,
    batch_size: int = 64,
    dtype: EmbedDtype = "auto",
    description: str = "embedding",
) -> np.ndarray:
    """L2-normalized float32 embeddings of ``texts``, computing only what the cache lacks."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    device = pick_device(context.device)
    dtype = resolve_dtype(dtype, device)
    path = embedder_path(context.embedder)
    # float32 keeps the key of earlier versions, so their caches stay valid.
    suffix = "" if dtype == "float32" else f"|{dtype}"
    embedder_key = hashlib.blake2b(f"{path}|{max_seq_length}{suffix}".encode("utf-8"), digest_size=8).hexdigest()
    cache = EmbeddingCache(context.resolved_cache_dir(), embedder_key)
    keys = [_text_key(t) for t in texts]
    known = cache.load(set(keys))
    missing_keys = list(dict.fromkeys(k for k in keys if k not in known))
    if missing_keys:
        text_of = dict(zip(keys, texts))
        # Sorted by length, so every batch (and chunk) holds texts of similar length and
        # pads little: much faster on CPU.
        missing_keys.sort(key=lambda k: len(text_of[k]))
        key_chunks = [list(c) for c in chunked(missing_keys, _CHUNK_TEXTS)]
        settings = (context.embedder, device, dtype, max_seq_length, batch_size)
        workers = effective_workers(context.workers) if device == "cpu" else 1
        if len(missing_keys) < _MIN_TEXTS_FOR_WORKERS:
            workers = 1
        _model_for(*settings[:3], max_seq_length)  # load once here: forked workers inherit it
        # Longest chunks first, so no worker is left with a long chunk at the end.
        key_chunks.reverse()
        with context.progress.task(description, len(missing_keys)) as task:
            chunks = [[text_of[k] for k in chunk] for chunk in key_chunks]
            for i, vectors in enumerate(_encode_chunks(chunks, workers, settings)):
                cache.save(key_chunks[i], vectors)  # each chunk saved as done: a killed run resumes
                known.update(zip(key_chunks[i], vectors))
                task.advance(len(key_chunks[i]))
    return np.stack([known[k] for k in keys]).astype(np.float32)


def _encode_chunks(chunks: list[list[str]], workers: int, settings: tuple) -> Iterator[np.ndarray]:
    """Vectors of each chunk, in order, from ``workers`` processes (in-process when 1)."""
    if workers <= 1 or len(chunks) <= 1:
        _init_worker(*settings)
        for chunk in chunks:
            yield _encode_chunk(chunk)
        return
    # fork: workers inherit the loaded model (and start in milliseconds); they run torch
    # with one thread, so the parent's thread pool state does not matter.
    methods = multiprocessing.get_all_start_methods()
    mp_context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(workers, mp_context=mp_context, initializer=_init_worker, initargs=(*settings, True)) as pool:
        yield from pool.map(_encode_chunk, chunks)


def kmeans_labels(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster labels from k-means (mini-batch above 10k points: same result quality, far faster)."""
    n = len(vectors)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if n > 10_000:
        from sklearn.cluster import MiniBatchKMeans

        # One k-means++ initialisation: the clusters only bound the pair search (SemDeDup), and
        # three cost 10 s of the 15 s on 26k records without changing what is found.
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=4096)
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, random_state=seed, n_init=1)
    return model.fit_predict(vectors).astype(np.int64)
