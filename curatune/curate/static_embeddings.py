"""Static embeddings: a token table distilled from the sentence embedder, cached on disk.

A static model (model2vec) embeds a text as the mean of one vector per token: no
transformer runs at embedding time, so it is ~100x cheaper than MiniLM on CPU. Its table
is *distilled* from the configured sentence embedder (``model.embedder``, by default the
embedded all-MiniLM-L6-v2): every vocabulary token goes once through the embedder, the
outputs are reduced by PCA and weighted by SIF (model2vec's ``distill_from_model``).
Everything happens offline from the local model folder; the hub is never asked.

The table is distilled once per source model and settings and cached under
``<cache_dir>/static/<key>/`` (written to a temporary folder, then renamed into place, so a
killed run never leaves a half-written table). The key covers the source folder, the
size and modification time of its model and tokenizer files (a reinstalled or changed
model is distilled again), the distillation settings and the model2vec version.

Measured against MiniLM on the demo's planted paraphrases and on 26k T0 records:
bench/results/curate_semantic_static.md.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from curatune.curate.base import CurateContext
from curatune.errors import ModelError
from curatune.models import resolve_embedder_path
from curatune.rundir import atomic_write_json
from curatune.runlock import restore_default_modes

if TYPE_CHECKING:
    from model2vec import StaticModel

#: Files of a model folder whose change means the table must be distilled again.
_SOURCE_FILE_PATTERNS = ("*.safetensors", "*.bin", "config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json")
#: Written last into a table folder: a folder without it is not a finished table.
SETTINGS_FILE = "distillation.json"

_loaded: dict[Path, "StaticModel"] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class DistillSettings:
    """How the static table is distilled (all part of the cache key)."""

    #: PCA dimensions of the table (model2vec's default is 256; MiniLM has 384).
    dims: int = 256
    #: SIF weighting of frequent tokens (model2vec's default).
    sif_coefficient: float = 1e-4
    #: How a token's transformer outputs become its vector.
    pooling: str = "mean"


def source_fingerprint(source: Path) -> list[tuple[str, int, int]]:
    """(file, size, mtime_ns) of the source model's weights and tokenizer files."""
    found = {p for pattern in _SOURCE_FILE_PATTERNS for p in source.glob(pattern)}
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in found)


def table_key(source: Path, settings: DistillSettings) -> str:
    identity = {
        "source": str(source.resolve()),
        "files": source_fingerprint(source),
        "settings": asdict(settings),
        "model2vec": importlib.metadata.version("model2vec"),
        "table_dtype": "float32",
    }
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode("utf-8"), digest_size=10).hexdigest()


def distill_table(source: Path, settings: DistillSettings, out_dir: Path) -> None:
    """Distil a static model from the sentence-transformers (or transformers) folder ``source``."""
    # Heavy imports (torch, transformers) only when a table is actually distilled.
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(str(source), trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: cannot load the embedder to distil a static table from it: {exc}") from None
    static = distill_from_model(
        model=model, tokenizer=tokenizer, device="cpu", pca_dims=settings.dims,
        sif_coefficient=settings.sif_coefficient, quantize_to="float32", pooling=settings.pooling,
    )
    static.save_pretrained(str(out_dir))
    restore_default_modes(out_dir)  # shared cache; safetensors writes 0600


class StaticTableCache:
    """Distilled tables under ``root/static/<key>/``, one folder per source model and settings."""

    def __init__(self, root: Path):
        self.dir = Path(root) / "static"

    def folder(self, source: Path, settings: DistillSettings) -> Path:
        """The finished table folder for ``source`` and ``settings``, distilling it if missing."""
        target = self.dir / table_key(source, settings)
        if (target / SETTINGS_FILE).exists():
            return target
        self.dir.mkdir(parents=True, exist_ok=True)
        # Distilled into a temporary folder beside the target and renamed into place: readers
        # see a whole table or none.
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=self.dir))
        try:
            distill_table(source, settings, scratch)
            atomic_write_json(scratch / SETTINGS_FILE, {"source": str(source), **asdict(settings)})
            if target.exists():  # an unfinished table (no settings file) from a killed run
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.rename(scratch, target)
            except OSError:
                if not (target / SETTINGS_FILE).exists():  # not a concurrent run that finished first
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target


def load_static_model(context: CurateContext, settings: DistillSettings) -> StaticModel:
    """The static model distilled from ``context.embedder`` (loaded once per process)."""
    source = Path(resolve_embedder_path(context.embedder))
    folder = StaticTableCache(context.resolved_cache_dir()).folder(source, settings)
    with _load_lock:
        if folder not in _loaded:
            from model2vec import (
                StaticModel,  # imports torch: loaded only when the static embedder runs
            )

            _loaded[folder] = StaticModel.from_pretrained(folder, normalize=True)
        return _loaded[folder]


def embed_static(texts: list[str], context: CurateContext, *, dims: int = 256, max_seq_length: int = 128) -> np.ndarray:
    """L2-normalized float32 static embeddings of ``texts`` (first ``max_seq_length`` tokens).

    Each distinct text is embedded once (instruction data repeats answers like 'Yes' often).
    A text without known tokens (empty) gets the zero vector: similar to nothing.
    """
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_static_model(context, DistillSettings(dims=dims))
    index_of: dict[str, int] = {}
    rows = np.fromiter((index_of.setdefault(t, len(index_of)) for t in texts), dtype=np.int64, count=len(texts))
    with context.progress.task("semantic: static embedding", len(index_of)) as task:
        vectors = model.encode(list(index_of), max_length=max_seq_length, use_multiprocessing=False)
        task.advance(len(index_of))
    vectors = vectors.astype(np.float32, copy=False)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors[rows]
