"""Configuration of the sweep stage (owned by curatune.train).

Every field has a default sized for a 2-core CPU demo with the 135M default model; on a
GPU raise ``per_device_batch_size`` and ``max_seq_length``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curatune.train.batching import choose_precision

METHODS = ("full", "lora", "qlora", "dora", "ia3", "loha", "lokr")
#: Methods whose cells save a peft adapter on top of the unchanged base (every method but full).
ADAPTER_METHODS = tuple(m for m in METHODS if m != "full")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Modules that get adapters: 'all-linear' (every linear layer but the output head) "
        "or a list of module names, e.g. [q_proj, v_proj].",
    )
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate of LoRA and QLoRA cells.")


class DoraSettings(LoraSettings):
    """DoRA (Liu et al. 2024): LoRA whose update is split into magnitude and direction (peft's use_dora)."""


class IA3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_modules: list[str] | None = Field(
        default=None,
        description="Modules whose activations IA3 rescales; unset = peft's choice for the architecture "
        "(for Llama-style models: k_proj, v_proj, down_proj).",
    )
    feedforward_modules: list[str] | None = Field(
        default=None, description="Which of target_modules are feed-forward layers; unset = peft's choice."
    )
    learning_rate: float = Field(
        default=3e-3, gt=0, description="Peak learning rate of IA3 cells (Liu et al. 2022 use 3e-3)."
    )


class LycorisSettings(BaseModel):
    """LoHa (Hadamard product) and LoKr (Kronecker product) low-rank updates, from peft's LyCORIS family."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, description="Rank of the factors.")
    alpha: int = Field(default=16, ge=1, description="Scaling (the update is scaled by alpha / r).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Module dropout while training.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Modules that get the update: 'all-linear' or a list of module names."
    )
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate of these cells.")


class FullSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(default=2e-5, gt=0, description="Peak learning rate of full fine-tune cells.")


class QLoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit quantization type (bitsandbytes).")
    double_quant: bool = Field(default=True, description="Also quantize the quantization constants.")


class LaunchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_processes: int = Field(
        default=1,
        ge=1,
        description="Processes (GPUs) per cell. Above 1, or with accelerate_config set, each cell runs "
        "as `accelerate launch ... -m curatune.train.cell_main`.",
    )
    accelerate_config: str | None = Field(
        default=None,
        description="An accelerate config file (DDP, FSDP or DeepSpeed; examples in docs/train.md) "
        "used to launch every cell.",
    )


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        default=None,
        description="Ray cluster address ('auto', 'ray://host:10001'); unset starts a local Ray instance.",
    )
    gpus_per_cell: float | None = Field(
        default=None, ge=0, description="GPUs reserved per cell; unset = 1 when the cluster has GPUs, else 0."
    )
    cpus_per_cell: float = Field(default=1, gt=0, description="CPU slots reserved per cell.")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ---- the grid
    data: Literal["curated", "raw"] = Field(
        default="curated",
        description="Train on the curated records (curate/kept.parquet) or on the raw sources "
        "(to measure what curation buys).",
    )
    draw: Literal["independent", "paired"] = Field(
        default="independent",
        description="How a curated run orders its records. independent: a seeded order over the curated "
        "pool. paired: one seeded order over the raw sources' records (data.sources, held-out removed); the "
        "curated subset of size n is the first n kept records in that order, which is exactly what a run "
        "with train.data = raw trains on minus what curation removed (and what replaced it), so a curated "
        "run and a raw run differ only by curation. Both runs need the same held-out split (data.eval_sources, "
        "or copy train/heldout.parquet into the raw run before training). No effect with train.data = raw, "
        "whose order is the raw order already.",
    )
    sizes: list[int] = Field(
        default=[100, 200, 400, 800],
        description="Nested subset sizes (number of training records). A size larger than the "
        "training pool is reported in train/plan.json and skipped, never capped.",
    )
    seeds: list[int] = Field(
        default=[0],
        description="One nested family of subsets (and one training seed) per seed.",
    )
    methods: list[Literal[METHODS]] = Field(  # type: ignore[valid-type]
        default=["lora", "full"],
        description="Fine-tuning methods: full, lora (peft), qlora (4-bit bitsandbytes; needs a CUDA GPU), "
        "dora (LoRA with weight decomposition), ia3 (learned activation scales), loha, lokr (LyCORIS low-rank "
        "updates). Each has its own settings section below.",
    )
    stratify: bool = Field(
        default=True,
        description="Draw the held-out split and every subset prefix in proportion to the record "
        "categories (when the records have categories).",
    )
    heldout_seed: int = Field(default=1234, description="Seed of the held-out carve (independent of the subset seeds).")

    # ---- training length
    length: Literal["epochs", "steps"] = Field(
        default="epochs",
        description="How long each cell trains: a fixed number of passes over its subset (epochs: "
        "bigger subsets get more steps) or a fixed number of optimizer steps for every size (steps).",
    )
    epochs: float = Field(default=2.0, gt=0, description="Passes over the subset when length = epochs.")
    steps: int = Field(default=100, ge=1, description="Optimizer steps per cell when length = steps.")

    # ---- optimisation
    per_device_batch_size: int = Field(default=4, ge=1, description="Examples per forward pass and device.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Forward passes per optimizer step (effective batch = batch x this x devices)."
    )
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup", "constant"] = Field(
        default="cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="Fraction of the steps spent warming up linearly.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    max_seq_length: int = Field(
        default=384, ge=16, description="Tokens per example; longer examples are cut at the end (counted in done.json)."
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory (slower).")
    bf16: Literal["auto", "cpu"] | bool = Field(
        default="auto",
        description="bfloat16 mixed precision: true, false, auto = on for a CUDA GPU that supports it, off on CPU, "
        "or cpu = auto plus bf16 autocast on a CPU with native bf16 (avx512_bf16 or AMX in /proc/cpuinfo); "
        "opt-in until its task scores are checked against fp32. done.json records the choice and why.",
    )
    batching: Literal["auto", "packed", "padded", "grouped"] = Field(
        default="auto",
        description="How examples form batches. packed: a batch's examples concatenated with restarting "
        "position ids, no padding, same batches and loss as padded (needs an attention that keeps them apart: "
        "sdpa, eager, flash). padded: each batch padded to its longest example. grouped: padded batches of "
        "similar lengths (changes the batches, so what the cell learns). auto: packed when a check on the "
        "loaded model shows packed logits equal unpacked ones, else padded.",
    )
    cpu_threads: int = Field(
        default=0, ge=0, description="torch threads when training on CPU; 0 = one per core."
    )
    logging_steps: int = Field(default=1, ge=1, description="Write a train_log.jsonl line every this many steps.")

    # ---- methods
    lora: LoraSettings = Field(default_factory=LoraSettings)
    full: FullSettings = Field(default_factory=FullSettings)
    qlora: QLoraSettings = Field(default_factory=QLoraSettings)
    dora: DoraSettings = Field(default_factory=DoraSettings)
    ia3: IA3Settings = Field(default_factory=IA3Settings)
    loha: LycorisSettings = Field(default_factory=LycorisSettings)
    lokr: LycorisSettings = Field(default_factory=LycorisSettings)

    # ---- what each cell keeps
    early_fraction: float = Field(
        default=0.2,
        gt=0.0,
        lt=1.0,
        description="Save an early checkpoint after this fraction of the optimizer steps "
        "(early-stage model selection, Oliver & Wang 2024).",
    )
    keep_weights: Literal["final", "none"] = Field(
        default="final",
        description="final: keep early/ and final/ weights of every cell. none: full fine-tunes "
        "delete their weights once evaluate_hook has scored them in the sweep (adapters are small "
        "and always kept); requires evaluate_hook.",
    )
    evaluate_hook: str | None = Field(
        default=None,
        description="'module:function' called as f(cell, stage, model, tokenizer, config, run_dir) for "
        "stage early and final while the weights still exist (needed by keep_weights = none).",
    )
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="Experiment trackers the Trainer logs each cell to (loss, learning rate, ...): "
        "tensorboard (event files in RUN_DIR/tensorboard/<cell>/, with the evaluation scores added "
        "by `curatune evaluate`), wandb, mlflow; each needs its package installed. Empty = none.",
    )
    checkpoint_steps: int = Field(
        default=0,
        ge=0,
        description="Save a resumable trainer checkpoint (weights + optimizer) every this many steps; "
        "a killed cell resumes from the last one. 0 = none: a killed cell restarts from scratch.",
    )

    # ---- execution
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="local: cells one after another in this process. ray: cells sent to a Ray "
        "cluster, one per GPU or CPU slot (pip install 'curatune[ray]').",
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    launch: LaunchSettings = Field(default_factory=LaunchSettings)

    @field_validator("sizes")
    @classmethod
    def _sizes_positive_unique(cls, sizes: list[int]) -> list[int]:
        if not sizes:
            raise ValueError("give at least one size")
        if any(s < 1 for s in sizes):
            raise ValueError("sizes must be positive")
        if len(set(sizes)) != len(sizes):
            raise ValueError("sizes must be distinct")
        return sorted(sizes)

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("give at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @field_validator("methods")
    @classmethod
    def _methods_unique(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("give at least one method")
        if len(set(methods)) != len(methods):
            raise ValueError("methods must be distinct")
        return methods

    @field_validator("evaluate_hook")
    @classmethod
    def _hook_shape(cls, hook: str | None) -> str | None:
        if hook is not None and (":" not in hook or hook.startswith(":") or hook.endswith(":")):
            raise ValueError("expected 'package.module:function'")
        return hook

    def use_bf16(self, on_cuda: bool) -> bool:
        return choose_precision(self.bf16, on_cuda).bf16

    def method_settings(self, method: str) -> BaseModel:
        """The settings section of a method (qlora trains LoRA adapters: its rank and rate are lora's)."""
        return self.lora if method == "qlora" else getattr(self, method)

    def learning_rate(self, method: str) -> float:
        return self.method_settings(method).learning_rate
