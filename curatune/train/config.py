"""Configuration of the sweep stage (owned by curatune.train).

Every field has a default sized for a 2-core CPU demo with the 135M default model; on a
GPU raise ``per_device_batch_size`` and ``max_seq_length``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curatune.errors import ConfigError
from curatune.train.batching import choose_precision


def is_template_text(value: str) -> bool:
    """A chat_template value that is the template itself rather than the path of a file."""
    return "{{" in value or "{%" in value


METHODS = ("full", "lora", "qlora", "dora", "ia3", "loha", "lokr", "prompt_tuning", "prefix_tuning")
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


class PromptTuningSettings(BaseModel):
    """Prompt tuning (Lester et al. 2021): learned input embeddings put before every example."""

    model_config = ConfigDict(extra="forbid")

    num_virtual_tokens: int = Field(default=20, ge=1, description="Learned virtual tokens before every input.")
    init: Literal["sample_vocab", "random", "text"] = Field(
        default="sample_vocab",
        description="Initial virtual tokens: sample_vocab (embeddings of random vocabulary tokens, the "
        "scale the model expects), random (peft's normal init), or text (the embeddings of init_text).",
    )
    init_text: str | None = Field(
        default=None, description="With init = text: a task description whose tokens seed the virtual tokens."
    )
    learning_rate: float = Field(
        default=3e-2, gt=0, description="Peak learning rate (only a few thousand parameters learn: high rates suit)."
    )

    @model_validator(mode="after")
    def _text_init_has_text(self) -> "PromptTuningSettings":
        if self.init == "text" and not self.init_text:
            raise ValueError("init = text needs init_text")
        return self


class PrefixTuningSettings(BaseModel):
    """Prefix tuning (Li & Liang 2021): a learned key/value prefix in every attention layer."""

    model_config = ConfigDict(extra="forbid")

    num_virtual_tokens: int = Field(default=20, ge=1, description="Length of the learned prefix.")
    prefix_projection: bool = Field(
        default=False,
        description="Reparametrize the prefix through a two-layer MLP while training (Li & Liang's "
        "stabilizer; many more trainable parameters).",
    )
    encoder_hidden_size: int = Field(default=512, ge=1, description="Hidden size of that MLP (prefix_projection only).")
    learning_rate: float = Field(default=1e-2, gt=0, description="Peak learning rate of prefix-tuning cells.")


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
        "updates), prompt_tuning (learned input embeddings), prefix_tuning (a learned key/value prefix). "
        "Each has its own settings section below.",
    )
    learning_rates: dict[str, list[float]] = Field(
        default_factory=dict,
        description="A learning-rate grid per method, e.g. {lora: [1e-4, 2e-4, 5e-4], full: [1e-5, 2e-5, 5e-5]}: "
        "every listed rate becomes its own cell, trained on the same nested subsets. A method without an entry "
        "trains at its single configured learning_rate, as without a grid. Each grid cell records its loss on "
        "the validation split (train.validation_size) and the analysis keeps, per method and size, the rate "
        "with the lowest mean validation loss over seeds (docs/analysis.md).",
    )
    validation_size: int | None = Field(
        default=None,
        ge=0,
        description="Records of the validation split, carved from the training pool (never the held-out "
        "split) with validation_seed before any subset is drawn, so no cell trains on it; every cell records "
        "its loss on it in done.json. Unset = 100 when train.learning_rates is set, else 0 (no split).",
    )
    validation_seed: int = Field(default=4321, description="Seed of the validation carve (independent of the subset seeds).")
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
    # ---- chat formatting (also used by evaluation prompts, so a cell is prompted as it was trained)
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template (the text, or the path of a file holding it) used instead of the "
        "model's own, e.g. for a base model without one; saved with every cell. Unset: the model's template, "
        "or curatune's plain '### User:' template when it has none. Needed for tool-calling data when the "
        "model's template ignores tools and tool_calls.",
    )
    train_on_inputs: bool = Field(
        default=False,
        description="false: the loss covers the assistant turns only (tool calls included). true: every token "
        "of the rendered conversation (system, user and tool turns too).",
    )
    system_prompt: str | None = Field(
        default=None,
        description="A system message added to every record that has none, in training and in evaluation prompts.",
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
        description="How examples form batches. auto: per batch, packed when that computes less than padding it "
        "(a cost model of the model's shapes: packing saves the padding but its attention spans the whole packed "
        "row), padded otherwise; where a check on the loaded model shows its attention would mix packed examples, "
        "padded throughout. Measured: 1.6x real tokens/s on variable-length data, the same on batches cut at "
        "max_seq_length (bench/results/train_batching_steps*.md). packed: always packed (no padding; same batches "
        "and loss as padded; needs an attention that keeps examples apart: sdpa, eager, flash). padded: each "
        "batch padded to its longest example. grouped: padded batches of similar lengths (changes the batches, "
        "so what the cell learns).",
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
    prompt_tuning: PromptTuningSettings = Field(default_factory=PromptTuningSettings)
    prefix_tuning: PrefixTuningSettings = Field(default_factory=PrefixTuningSettings)

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

    @field_validator("chat_template")
    @classmethod
    def _template_or_file(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not is_template_text(value) and not Path(value).expanduser().is_file():
            raise ValueError(
                f"{value!r} is neither a Jinja template (no '{{{{' or '{{%') nor an existing file holding one"
            )
        return value

    def chat_template_text(self) -> str | None:
        """The configured template itself (read from its file when a path was given), or None."""
        if self.chat_template is None or is_template_text(self.chat_template):
            return self.chat_template
        path = Path(self.chat_template).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"train.chat_template: cannot read {path} ({exc.strerror or exc})") from None

    @field_validator("learning_rates")
    @classmethod
    def _learning_rates_valid(cls, grid: dict[str, list[float]]) -> dict[str, list[float]]:
        for method, rates in grid.items():
            if method not in METHODS:
                raise ValueError(f"{method!r} is not a method (one of {', '.join(METHODS)})")
            if not rates:
                raise ValueError(f"{method}: give at least one learning rate")
            if any(r <= 0 for r in rates):
                raise ValueError(f"{method}: learning rates must be positive")
            if len(set(rates)) != len(rates):
                raise ValueError(f"{method}: learning rates must be distinct")
        return {m: sorted(float(r) for r in rates) for m, rates in grid.items()}

    @model_validator(mode="after")
    def _grid_methods_trained(self) -> "TrainConfig":
        unused = [m for m in self.learning_rates if m not in self.methods]
        if unused:
            raise ValueError(f"learning_rates lists {', '.join(unused)}, which train.methods does not train")
        if self.learning_rates and self.validation_size == 0:
            raise ValueError("learning_rates needs a validation split to select a rate on: set validation_size "
                             "above 0 (or leave it unset for 100)")
        return self

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

    def grid_rates(self, method: str) -> list[float | None]:
        """The learning rates a method's cells train at: its grid, or [None] (one cell at the method's
        configured rate, keyed as before grids existed)."""
        return list(self.learning_rates.get(method) or [None])

    def effective_validation_size(self) -> int:
        """Records of the validation split: the configured size, or 100 with a grid and 0 without."""
        if self.validation_size is not None:
            return self.validation_size
        return 100 if self.learning_rates else 0
