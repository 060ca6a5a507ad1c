"""Train one cell of the sweep grid (one method, subset size and seed) with the transformers Trainer.

What runs is a stock ``transformers.Trainer`` on a causal LM (optionally wrapped by
peft); curatune adds only callbacks (a JSONL log, the early checkpoint, progress) and one
override of the Trainer's token count for packed batches (``cell_trainer_class``).

A cell folder ``train/<method>/n<size>/s<seed>/`` (``train/<method>/lr<lr>/n<size>/s<seed>/`` in a
learning-rate grid) goes through these states:

* nothing, or leftovers of a killed attempt -> the next attempt starts clean, or resumes
  from the last complete trainer checkpoint in ``checkpoints/`` (``checkpoint_steps`` > 0);
* ``failed.json`` -> the error of the last attempt; the next sweep retries the cell;
* ``done.json`` -> finished. Written last, after the weights; never touched again.

Weights folders (``early/``, ``final/``) are written to a temporary sibling and renamed
into place, so a reader never sees half a model.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from curatune.chat_format import (
    ChatSettings,
    apply_chat_settings,
    encode,
)
from curatune.config import ExperimentConfig
from curatune.errors import (
    ModelError,
    WriteError,
    disk_errors_named,
    environment_error,
    is_disk_error,
)
from curatune.model_card import RunFacts, base_model_id, describe_weights_folder
from curatune.models import ensure_pad_token, load_weights_dir, resolve_model_path
from curatune.records import Record, frame_to_records
from curatune.runcheck import damaged_done_marker
from curatune.rundir import (
    CELL,
    CHECKPOINTS,
    DONE,
    EARLY,
    FAILED,
    FINAL,
    LOG,
    CellInfo,
    CellSpec,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
)
from curatune.runlock import restore_default_modes
from curatune.tracking import tensorboard_callback, trainer_report_to
from curatune.train.batching import (
    PerBatchCollator,
    cell_trainer_class,
    choose_batching,
    choose_precision,
    collator,
    trainer_arguments,
)
from curatune.train.config import ADAPTER_METHODS
from curatune.train.validation import read_validation, validation_loss
from curatune.virtual_tokens import (
    PROMPT_LEARNING,
    VirtualTokenLM,
    virtual_token_problem,
)

#: Settings that change what a cell learns; a finished cell trained with other values is stale.
_FINGERPRINT_TRAIN_KEYS = (
    "data", "stratify", "heldout_seed", "length", "epochs", "steps", "per_device_batch_size",
    "gradient_accumulation_steps", "lr_scheduler", "warmup_ratio", "weight_decay", "max_grad_norm",
    "max_seq_length", "early_fraction",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_main_process() -> bool:
    """True outside distributed launches and on rank 0 inside them: only it writes files."""
    return os.environ.get("RANK", "0") == "0"


# ----------------------------------------------------------------------------- settings


def fingerprint(config: ExperimentConfig, spec: CellSpec, subset_ids: list[str]) -> dict[str, Any]:
    """Everything that decides what this cell learns, as plain JSON."""
    train = config.train
    settings = {k: getattr(train, k) for k in _FINGERPRINT_TRAIN_KEYS}
    if spec.method in ("lora", "qlora"):
        settings["lora"] = train.lora.model_dump(mode="json")
    else:
        settings["full"] = train.full.model_dump(mode="json")
    if spec.method == "qlora":
        settings["qlora"] = train.qlora.model_dump(mode="json")
    if spec.method not in ("full", "lora", "qlora"):
        settings[spec.method] = train.method_settings(spec.method).model_dump(mode="json")
    chat = _chat_fingerprint(train)
    if chat:  # only when set: cells trained before these settings existed stay current
        settings["chat"] = chat
    if spec.lr is not None:  # a grid cell: its own rate overrides the method's configured one
        settings["learning_rate"] = spec.lr
    if train.batching == "grouped":  # other batchings train on the same batches: not a change
        settings["batching"] = train.batching
    settings["base_model"] = config.model.base
    settings["subset_sha1"] = hashlib.sha1("\n".join(subset_ids).encode()).hexdigest()
    return json.loads(json.dumps(settings, default=str))


def _chat_fingerprint(train: Any) -> dict[str, Any]:
    """The chat settings that differ from their defaults (the template by its hash)."""
    chat: dict[str, Any] = {}
    template = train.chat_template_text()
    if template:
        chat["chat_template_sha1"] = hashlib.sha1(template.encode("utf-8")).hexdigest()
    if train.system_prompt:
        chat["system_prompt"] = train.system_prompt
    if train.train_on_inputs:
        chat["train_on_inputs"] = True
    return chat


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Changed settings as 'key: old -> new', nested keys dotted (e.g. lora.r: 16 -> 4)."""
    old, new = _flatten(old), _flatten(new)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def planned_steps(config: ExperimentConfig, n_examples: int, world_size: int = 1) -> int:
    """Optimizer steps of a cell: explicit, so the early step and progress are exact."""
    train = config.train
    if train.length == "steps":
        return train.steps
    batches_per_epoch = math.ceil(n_examples / (train.per_device_batch_size * world_size))
    steps_per_epoch = math.ceil(batches_per_epoch / train.gradient_accumulation_steps)
    return max(1, math.ceil(train.epochs * steps_per_epoch))


def cell_learning_rate(config: ExperimentConfig, spec: CellSpec) -> float:
    """The peak rate a cell trains at: its grid rate, else the method's configured learning_rate."""
    return spec.lr if spec.lr is not None else config.train.learning_rate(spec.method)


def early_step(config: ExperimentConfig, total_steps: int) -> int:
    return min(total_steps, max(1, round(total_steps * config.train.early_fraction)))


# ----------------------------------------------------------------------------- data


def load_pool(run_dir: RunDir) -> list[Record]:
    return frame_to_records(pd.read_parquet(run_dir.pool))


def subset_records(run_dir: RunDir, spec: CellSpec, pool: list[Record] | None = None) -> list[Record]:
    """The records of (seed, size) in draw order, from train/subsets.parquet and the pool."""
    subsets = pd.read_parquet(run_dir.subsets)
    rows = subsets[(subsets["seed"] == spec.seed) & (subsets["size"] == spec.size)].sort_values("order")
    if len(rows) != spec.size:
        raise RuntimeError(f"{run_dir.subsets}: subset seed={spec.seed} size={spec.size} has {len(rows)} rows")
    by_id: dict[str, list[Record]] = {}
    for record in pool if pool is not None else load_pool(run_dir):
        by_id.setdefault(record.id, []).append(record)
    taken: dict[str, int] = {}
    out = []
    for record_id in rows["id"]:
        i = taken.get(record_id, 0)  # raw data may hold identical records: take them in turn
        out.append(by_id[record_id][i])
        taken[record_id] = i + 1
    return out


def check_tool_rendering(config: ExperimentConfig, run_dir: RunDir, model_path: Path) -> int:
    """Render every tool-calling record of the pool with the template the cells will use; the first
    one the template cannot render raises one DataError (file:row) before any cell starts, instead of
    every cell failing on it. Returns how many tool-calling records were checked."""
    from transformers import AutoTokenizer

    records = [r for r in load_pool(run_dir) if r.uses_tools]
    if not records:
        return 0
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    chat = ChatSettings.from_train(config.train)
    apply_chat_settings(tokenizer, chat)
    for record in records:
        encode(tokenizer, record, config.train.max_seq_length, chat)
    return len(records)


class EncodedDataset:
    """A list of tokenized examples; the map-style dataset the Trainer iterates."""

    def __init__(self, tokenizer, records: list[Record], max_length: int, chat: ChatSettings | None = None):
        self.examples = []
        self.truncated = 0
        self.without_target = 0  # answer entirely cut off by max_length: nothing to learn
        for record in records:
            enc = encode(tokenizer, record, max_length, chat)
            if enc.trained_tokens == 0:
                self.without_target += 1
                continue
            self.truncated += int(enc.truncated)
            self.examples.append({"input_ids": enc.input_ids, "labels": enc.labels})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)


# ----------------------------------------------------------------------------- models


def load_base_for_training(config: ExperimentConfig, method: str, model_path: Path):
    """A fresh (tokenizer, model) for training: every cell starts from the unchanged base."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trust = config.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
    apply_chat_settings(tokenizer, ChatSettings.from_train(config.train))  # saved with the cell's weights
    ensure_pad_token(tokenizer)
    # safetensors only: pickled .bin weights can run code when loaded
    kwargs: dict[str, Any] = {"dtype": master_dtype(config), "trust_remote_code": trust, "use_safetensors": True}
    if method == "qlora":
        kwargs.update(_qlora_load_kwargs(config))
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False  # the KV cache is useless (and wasteful) during training
    if method in ("lora", "qlora"):
        model = wrap_lora(config, model, quantized=method == "qlora")
    elif method in PROMPT_LEARNING:
        problem = virtual_token_problem(method, model)  # fail now, with the reason, not after training
        if problem:
            raise ModelError(problem)
        model = get_peft_model(model, peft_config(config, method, model_path))
    elif method in ADAPTER_METHODS:
        model = get_peft_model(model, peft_config(config, method))
    return tokenizer, model


def master_dtype(config: ExperimentConfig):
    """The dtype a cell's weights are trained and saved in: float32 unless model.dtype says
    otherwise (bf16 training is autocast on top of float32 master weights)."""
    import torch

    return {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[config.model.dtype]


def qlora_problem() -> str | None:
    """Why QLoRA cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return ("qlora needs a CUDA GPU (bitsandbytes 4-bit kernels) and none is visible; "
                "use method lora on this machine, or run the sweep on a GPU")

    if importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs bitsandbytes: pip install 'curatune[gpu]'"
    return None


def _qlora_load_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    problem = qlora_problem()
    if problem:
        raise ModelError(problem)
    compute = torch.bfloat16 if config.train.use_bf16(on_cuda=True) else torch.float16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.train.qlora.quant_type,
        bnb_4bit_use_double_quant=config.train.qlora.double_quant,
        bnb_4bit_compute_dtype=compute,
    )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return {"quantization_config": quant, "device_map": {"": local_rank}, "dtype": compute}


def wrap_lora(config: ExperimentConfig, model, quantized: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    settings = config.train.lora
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def peft_config(config: ExperimentConfig, method: str, model_path: Path | None = None):
    """peft's config for the adapter methods beyond LoRA (dora, ia3, loha, lokr, prompt and prefix tuning)."""
    from peft import (
        IA3Config,
        LoHaConfig,
        LoKrConfig,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
    )

    s = config.train.method_settings(method)
    if method == "dora":
        return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules,
                          use_dora=True, bias="none", task_type="CAUSAL_LM")
    if method == "ia3":
        return IA3Config(target_modules=s.target_modules, feedforward_modules=s.feedforward_modules,
                         task_type="CAUSAL_LM")
    if method in ("loha", "lokr"):
        factory = LoHaConfig if method == "loha" else LoKrConfig
        return factory(r=s.r, alpha=s.alpha, module_dropout=s.dropout, target_modules=s.target_modules,
                       task_type="CAUSAL_LM")
    if method == "prompt_tuning":
        text = {"prompt_tuning_init_text": s.init_text, "tokenizer_name_or_path": str(model_path)} if s.init == "text" else {}
        return PromptTuningConfig(num_virtual_tokens=s.num_virtual_tokens, prompt_tuning_init=s.init.upper(),
                                  task_type="CAUSAL_LM", **text)
    if method == "prefix_tuning":
        return PrefixTuningConfig(num_virtual_tokens=s.num_virtual_tokens, prefix_projection=s.prefix_projection,
                                  encoder_hidden_size=s.encoder_hidden_size, task_type="CAUSAL_LM")
    raise ValueError(f"no peft config for method {method!r}")


# ----------------------------------------------------------------------------- callbacks


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class _Callbacks:
    """Factories for the Trainer callbacks (built lazily so importing is cheap)."""

    @staticmethod
    def jsonl_log(path: Path, elapsed_before: float):
        base = _trainer_callback_base()

        class JsonlLog(base):
            """One line per logging step: step, loss, learning rate, tokens/s, elapsed."""

            def __init__(self):
                self.start = time.perf_counter()
                self.last_time = self.start
                self.last_tokens = None

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not state.is_world_process_zero or not logs or "loss" not in logs:
                    return
                now = time.perf_counter()
                tokens = state.num_input_tokens_seen
                if self.last_tokens is None:
                    self.last_tokens = getattr(self, "initial_tokens", 0)
                rate = (tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
                line = {
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0.0, 4),
                    "loss": logs.get("loss"),
                    "learning_rate": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens_per_second": round(rate, 2),
                    "tokens_seen": int(tokens),
                    "elapsed": round(elapsed_before + now - self.start, 3),
                }
                self.last_time, self.last_tokens = now, tokens
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line, default=float) + "\n")

            def on_train_begin(self, args, state, control, **kwargs):
                self.initial_tokens = state.num_input_tokens_seen

        return JsonlLog()

    @staticmethod
    def early_checkpoint(cell_dir: Path, at_step: int, needed: bool, save: Callable[[Path], None]):
        base = _trainer_callback_base()

        class EarlyCheckpoint(base):
            """Saves the model once, after optimizer step ``at_step``, into early/."""

            def __init__(self):
                self.seconds = 0.0  # time spent saving, inside the training loop

            def on_step_end(self, args, state, control, **kwargs):
                if needed and state.global_step == at_step:
                    start = time.perf_counter()
                    save_weights_dir(cell_dir / EARLY, save)
                    self.seconds = time.perf_counter() - start

        return EarlyCheckpoint()

    @staticmethod
    def progress(on_step: Callable[[int, dict], None] | None):
        base = _trainer_callback_base()

        class StepProgress(base):
            """Forwards each optimizer step (and the latest loss) to the sweep's progress display."""

            def __init__(self):
                self.last = {}

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    self.last = {"loss": logs["loss"]}

            def on_step_end(self, args, state, control, **kwargs):
                if on_step is not None and state.is_world_process_zero:
                    on_step(state.global_step, self.last)

        return StepProgress()


def describe_cell_weights(folder: Path, config: ExperimentConfig, run_dir: RunDir, spec: CellSpec, stage: str,
                          base_path: str) -> None:
    """Model card and the base model's real name (hub id or the user's path) in a weights folder."""
    info = CellInfo(spec.method, spec.size, spec.seed, spec.path(run_dir), "running",
                    done={"learning_rate": cell_learning_rate(config, spec)}, lr=spec.lr)
    facts = RunFacts.read(run_dir)
    facts.config = config.resolved()  # the settings this cell trains with, whatever the manifest holds
    describe_weights_folder(folder, facts, info, stage, base_model=base_model_id(config.model.base, base_path),
                            adapter=info.is_adapter)


def save_weights_dir(target: Path, save: Callable[[Path], None]) -> None:
    """Save through ``save(tmp_dir)`` and rename into ``target``: all or nothing."""
    tmp = target.with_name(f".{target.name}.tmp")
    if is_main_process():
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        # safetensors reports a full disk as its own error type: name the folder and what to do
        with disk_errors_named(target):
            save(tmp)  # every process calls it (sharded models gather), rank 0 writes
    except WriteError:
        if is_main_process():
            shutil.rmtree(tmp, ignore_errors=True)  # give back what the half-written copy took
        raise
    if is_main_process():
        # The Trainer also pickles its arguments next to the weights; weights folders hold
        # safetensors and JSON only (a pickle is code that runs when loaded).
        (tmp / "training_args.bin").unlink(missing_ok=True)
        restore_default_modes(tmp)  # safetensors writes weights 0600
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


# ----------------------------------------------------------------------------- the cell


@dataclass
class CellOutcome:
    key: str
    status: str  # done | skipped | failed
    wall_seconds: float = 0.0
    error: str | None = None
    done: dict | None = None


def last_complete_checkpoint(cell_dir: Path) -> Path | None:
    """The newest trainer checkpoint whose trainer_state.json (written after the weights and
    optimizer) parses; a checkpoint interrupted mid-save has none and is ignored."""
    root = cell_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    found = []
    for d in root.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-")[-1])
            state = json.loads((d / "trainer_state.json").read_text())
        except (ValueError, OSError, json.JSONDecodeError):
            continue
        if state.get("global_step") == step:
            found.append((step, d))
    return max(found)[1] if found else None


def _reset_cell(cell_dir: Path, keep_checkpoint: Path | None) -> float:
    """Prepare a cell folder for a new attempt; returns the elapsed seconds carried over.

    Starting clean removes everything of earlier attempts. Resuming keeps the checkpoint
    and early/ (if it was reached), and the log lines up to the checkpoint's step.
    """
    cell_dir.mkdir(parents=True, exist_ok=True)
    if keep_checkpoint is None:
        for child in cell_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        return 0.0
    step = int(keep_checkpoint.name.split("-")[-1])
    for child in (cell_dir / CHECKPOINTS).iterdir():
        if child != keep_checkpoint:
            shutil.rmtree(child, ignore_errors=True)
    for name in (FINAL, f".{FINAL}.tmp", f".{EARLY}.tmp", FAILED):
        p = cell_dir / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    kept = [line for line in read_jsonl(cell_dir / LOG) if line.get("step", 0) <= step]
    atomic_write_text(cell_dir / LOG, "".join(json.dumps(line) + "\n" for line in kept))
    return float(kept[-1]["elapsed"]) if kept else 0.0


def _import_hook(spec: str | None) -> Callable | None:
    if not spec:
        return None

    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"train.evaluate_hook = {spec!r}: cannot import it ({exc})") from None


def set_cpu_threads(config: ExperimentConfig) -> None:
    import torch

    if config.train.cpu_threads:
        torch.set_num_threads(config.train.cpu_threads)


def train_cell(
    config,
    run_dir: RunDir,
    spec: CellSpec,
    *,
    pool: list[Record] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    hook: Callable | None = None,
) -> CellOutcome:
    """Train one cell to done.json; skips a done cell. Exceptions propagate (see run_cell)."""
    cell_dir = spec.path(run_dir)
    if damaged_done_marker(cell_dir):  # unreadable: not done; remove it so nothing counts it meanwhile
        (cell_dir / DONE).unlink()
    if (cell_dir / DONE).exists():
        return CellOutcome(spec.key, "skipped", done=read_json(cell_dir / DONE))
    started = time.perf_counter()
    set_cpu_threads(config)
    hook = hook or _import_hook(config.train.evaluate_hook)
    with quiet_transformers():
        return _train_cell(config, run_dir, spec, cell_dir, started, pool=pool, on_step=on_step,
                           on_start=on_start, hook=hook)


@contextlib.contextmanager
def quiet_transformers():
    """The sweep shows its own bars; silence the per-file loading/saving bars meanwhile."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def training_arguments(config: ExperimentConfig, spec: CellSpec, cell_dir: Path, total_steps: int, on_cuda: bool,
                       use_bf16: bool, batching: str = "padded"):
    """The Trainer's settings for a cell: everything explicit, nothing left to defaults that matter."""
    from transformers import TrainingArguments

    train = config.train
    return TrainingArguments(
        output_dir=str(cell_dir / CHECKPOINTS),
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        max_steps=total_steps,
        learning_rate=cell_learning_rate(config, spec),
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_ratio,  # a float in [0, 1) is a fraction of max_steps
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        activation_checkpointing=train.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if train.gradient_checkpointing else None,
        bf16=use_bf16,
        use_cpu=not on_cuda,
        seed=spec.seed,
        data_seed=spec.seed,
        logging_strategy="steps",
        logging_steps=train.logging_steps,
        save_strategy="steps" if train.checkpoint_steps else "no",
        save_steps=train.checkpoint_steps or 500,
        save_total_limit=1,
        **trainer_arguments(batching),
        report_to=trainer_report_to(train.report_to),
        run_name=f"{config.name}/{spec.key}",
        disable_tqdm=False,  # keeps the Trainer's log printer off; its bar is replaced below
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def _train_cell(config: ExperimentConfig, run_dir: RunDir, spec: CellSpec, cell_dir: Path, started: float, *, pool,
                on_step, on_start, hook) -> CellOutcome:
    import torch
    from transformers import Trainer, set_seed
    from transformers.trainer_callback import ProgressCallback

    records = subset_records(run_dir, spec, pool)
    base_path = resolve_model_path(config.model.base, trust_remote_code=config.model.trust_remote_code)
    subset_ids = [r.id for r in records]
    settings = fingerprint(config, spec, subset_ids)

    set_seed(spec.seed)  # before the adapter is created: its random init is part of the cell
    tokenizer, model = load_base_for_training(config, spec.method, base_path)
    trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = EncodedDataset(tokenizer, records, config.train.max_seq_length, ChatSettings.from_train(config.train))
    if len(dataset) == 0:
        raise ModelError(
            f"{spec.key}: no example keeps any answer token within train.max_seq_length = "
            f"{config.train.max_seq_length}; raise it"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    total_steps = planned_steps(config, len(dataset), world_size)
    at_early = early_step(config, total_steps)
    on_cuda = torch.cuda.is_available() and config.model.device != "cpu"
    precision = choose_precision(config.train.bf16, on_cuda)
    use_bf16 = precision.bf16
    batching = choose_batching(config.train.batching, model)

    # Under a distributed launch rank 0 alone decides resume-or-restart and prepares the
    # folder; the other ranks wait for it and read its decision from cell.json.
    distributed = world_size > 1
    if distributed:
        from accelerate import PartialState

        dist_state = PartialState(cpu=not on_cuda)
    elapsed_before = 0.0
    checkpoint = None
    if is_main_process():
        checkpoint = _resumable_checkpoint(config, cell_dir, settings, at_early)
        elapsed_before = _reset_cell(cell_dir, checkpoint)
        atomic_write_json(cell_dir / CELL, {
            "method": spec.method, "size": spec.size, "seed": spec.seed, "key": spec.key,
            **({"lr": spec.lr} if spec.lr is not None else {}),
            "base_model": config.model.base, "base_model_path": str(base_path),
            "planned_steps": total_steps, "early_step": at_early,
            "started": now_iso(), "resumed_from": checkpoint.name if checkpoint else None,
            "fingerprint": settings, "bf16": use_bf16, "precision_reason": precision.reason,
            "batching": batching.mode, "batching_reason": batching.reason,
        })
    if distributed:
        dist_state.wait_for_everyone()
        if not is_main_process():
            resumed_from = read_json(cell_dir / CELL).get("resumed_from")
            checkpoint = cell_dir / CHECKPOINTS / resumed_from if resumed_from else None
    # Decided once for all ranks: saving a sharded model is a collective call.
    early_needed = not (cell_dir / EARLY).is_dir()

    args = training_arguments(config, spec, cell_dir, total_steps, on_cuda, use_bf16, batching.mode)
    data_collator = collator(batching.mode, tokenizer.pad_token_id, batching.attention_ratio)
    trainer = cell_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=data_collator,
        processing_class=tokenizer,
    )
    trainer.remove_callback(ProgressCallback)
    log_cb = _Callbacks.jsonl_log(cell_dir / LOG, elapsed_before)

    def save_model_for(stage: str, trainer: Trainer = trainer) -> Callable[[Path], None]:
        # trainer bound here: the name is deleted below once training is over
        def save(folder: Path) -> None:
            trainer.save_model(str(folder))  # gathers sharded weights; only rank 0 writes
            if is_main_process():
                describe_cell_weights(folder, config, run_dir, spec, stage, str(base_path))
        return save

    early_cb = _Callbacks.early_checkpoint(cell_dir, at_early, early_needed, save_model_for(EARLY))
    trainer.add_callback(log_cb)
    trainer.add_callback(early_cb)
    if "tensorboard" in config.train.report_to and is_main_process():
        trainer.add_callback(tensorboard_callback(run_dir, spec.key))
    trainer.add_callback(_Callbacks.progress(on_step))
    if on_start is not None:
        on_start(total_steps)

    train_started, cpu_started = time.perf_counter(), time.process_time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - train_started
    train_cpu_seconds = time.process_time() - cpu_started
    tokens_total = int(trainer.state.num_input_tokens_seen)
    tokens_this_run = tokens_total - getattr(log_cb, "initial_tokens", 0)

    full_without_weights = spec.method == "full" and config.train.keep_weights == "none"
    if not full_without_weights:
        save_weights_dir(cell_dir / FINAL, save_model_for(FINAL))

    # Drop the trainer (optimizer state) before the hook loads the early model next to the final one.
    trained = trainer.model
    del trainer, model
    validation = None
    if run_dir.validation.exists():  # the final model's loss on the validation split
        # every rank computes it: a sharded (FSDP) model needs all ranks in each forward pass
        validation = validation_loss(trained, tokenizer, read_validation(run_dir), config.train.max_seq_length,
                                     config.train.per_device_batch_size)
    if hook is not None and is_main_process():
        _run_hook(hook, config, run_dir, spec, trained, tokenizer, base_path)
    del trained
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if full_without_weights and is_main_process():
        shutil.rmtree(cell_dir / EARLY, ignore_errors=True)

    log = read_jsonl(cell_dir / LOG)
    done = {
        "method": spec.method,
        "size": spec.size,
        "seed": spec.seed,
        "key": spec.key,
        **({"lr": spec.lr} if spec.lr is not None else {}),
        "train_examples": len(dataset),
        "subset_records": len(records),
        "examples_without_answer_tokens": dataset.without_target,
        "truncated_examples": dataset.truncated,
        "steps": trainer_steps(result, total_steps),
        "epochs": round(total_steps * config.train.per_device_batch_size * world_size
                        * config.train.gradient_accumulation_steps / len(dataset), 4),
        "wall_seconds": round(elapsed_before + time.perf_counter() - started, 3),
        "train_seconds": round(train_seconds, 3),
        "train_cpu_seconds": round(train_cpu_seconds, 3),
        "early_save_seconds": round(early_cb.seconds, 3),
        "tokens_per_second": round(tokens_this_run / train_seconds, 2) if train_seconds > 0 else None,
        "train_tokens": tokens_total,
        "final_loss": log[-1]["loss"] if log else None,
        "early_step": at_early,
        "early_fraction": config.train.early_fraction,
        "weights": {"early": None if full_without_weights else EARLY,
                    "final": None if full_without_weights else FINAL},
        "evaluated_in_sweep": hook is not None,
        "base_model": config.model.base,
        "base_model_path": str(base_path),
        "learning_rate": cell_learning_rate(config, spec),
        **({"validation_loss": validation["loss"], "validation_tokens": validation["tokens"],
            "validation_records": validation["records"]} if validation is not None else {}),
        "trainable_parameters": trainable_parameters,
        "weights_bytes": _folder_bytes(cell_dir / FINAL),
        "bf16": use_bf16,
        "precision_reason": precision.reason,
        "batching": batching.mode,
        "batching_reason": batching.reason,
        **({"batches": dict(data_collator.counts)} if isinstance(data_collator, PerBatchCollator) else {}),
        "device": "cuda" if on_cuda else "cpu",
        "world_size": world_size,
        "resumed_from": checkpoint.name if checkpoint else None,
        "finished": now_iso(),
    }
    if is_main_process():
        atomic_write_json(cell_dir / DONE, done)  # the marker: written last
        shutil.rmtree(cell_dir / CHECKPOINTS, ignore_errors=True)
    return CellOutcome(spec.key, "done", done["wall_seconds"], done=done)


def _folder_bytes(folder: Path) -> int | None:
    """Size of the saved weights (an adapter or a full model), for comparing methods."""
    if not folder.is_dir():
        return None
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))


def _run_hook(hook: Callable, config: ExperimentConfig, run_dir: RunDir, spec: CellSpec, trained, tokenizer, base_path: Path) -> None:
    """Call the evaluate hook with the final model (in memory) and the early one (from early/)."""
    info = CellInfo.from_dir(run_dir, spec.method, spec.size, spec.seed, spec.lr)
    trained.eval()
    if spec.method in PROMPT_LEARNING:  # evaluated through the prefix, as loaded cells are
        trained = VirtualTokenLM(trained)
    hook(info, "final", trained, tokenizer, config, run_dir)
    early_model, early_tokenizer = load_weights_dir(
        spec.path(run_dir) / EARLY, str(base_path) if spec.method != "full" else None,
        dtype=config.model.dtype, device=config.model.device)
    hook(info, "early", early_model, early_tokenizer, config, run_dir)
    del early_model
    gc.collect()


def trainer_steps(result, planned: int) -> int:
    step = getattr(result, "global_step", None)
    return int(step) if step is not None else planned


def _resumable_checkpoint(config: ExperimentConfig, cell_dir: Path, settings: dict, at_early: int) -> Path | None:
    """The checkpoint to resume from: complete, same settings, and early/ present if passed."""
    if not config.train.checkpoint_steps:
        return None
    checkpoint = last_complete_checkpoint(cell_dir)
    if checkpoint is None or _stored_fingerprint(cell_dir) != settings:
        return None
    if int(checkpoint.name.split("-")[-1]) >= at_early and not (cell_dir / EARLY).is_dir():
        return None
    return checkpoint


def _stored_fingerprint(cell_dir: Path) -> dict | None:
    try:
        return read_json(cell_dir / CELL).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return None


def run_cell(config: ExperimentConfig, run_dir: RunDir, spec: CellSpec, **kwargs) -> CellOutcome:
    """train_cell, with a failure (out of memory, bad data, ...) recorded in failed.json
    instead of raised, so the sweep can go on to the next cell. Ctrl-C still stops."""
    started = time.perf_counter()
    try:
        return train_cell(config, run_dir, spec, **kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is recorded, not fatal
        if is_disk_error(exc):  # a full or read-only disk fails every later cell too: stop, say why
            raise (exc if isinstance(exc, WriteError) else environment_error(exc)) from None
        error = f"{type(exc).__name__}: {exc}"
        try:
            record_failure(run_dir, spec, error, traceback.format_exc())
        except (OSError, WriteError) as record_exc:  # keep the cause visible when failed.json cannot be written
            raise WriteError(f"cell {spec.key} failed ({error}), and recording that failed too: {record_exc}") from None
        return CellOutcome(spec.key, "failed", time.perf_counter() - started, error=error)
    finally:
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def record_failure(run_dir: RunDir, spec: CellSpec, error: str, trace: str) -> None:
    if not is_main_process():
        return
    cell_dir = spec.path(run_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cell_dir / FAILED, {
        "method": spec.method, "size": spec.size, "seed": spec.seed, "key": spec.key,
        **({"lr": spec.lr} if spec.lr is not None else {}),
        "error": error, "traceback": trace, "when": now_iso(),
    })

