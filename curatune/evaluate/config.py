"""Configuration of the evaluation stage (owned by curatune.evaluate).

``evaluate.suites`` is a list; each item names a suite (``name``) and says what kind of
scoring applies (``kind``). Pydantic picks the settings class from ``kind`` (a
discriminated union), so a setting that does not belong to a kind is reported against
that suite. When the list is empty, :func:`default_suites` applies: the target task on
the held-out split plus the data-free retention probe.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curatune.evaluate.analysis.config import AnalysisConfig

GENERATION_METRICS = ("bleu", "chrf", "ter", "comet_like", "exact_match", "field_f1")
Stage = Literal["base", "early", "final"]

_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Oldest lm-evaluation-harness the lm_eval suite kind works with (its TaskManager.load API).
LMEVAL_MIN_VERSION = "0.4.13"


def lm_eval_missing_message(suite: str) -> str:
    """What a user reads when an lm_eval suite is configured but lm-eval is not installed."""
    return (f"suite {suite!r} (kind lm_eval) needs EleutherAI's lm-evaluation-harness, which is not installed: "
            "pip install 'curatune[lmeval]' (or pip install 'lm-eval>=" + LMEVAL_MIN_VERSION + "')")


class _SuiteBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Suite name: a column value in scores.parquet and a folder under eval/samples/.")
    limit: Optional[int] = Field(
        default=None,
        ge=1,
        description="Score a fixed random subset of this many items (the same items for every model; "
        "chosen with evaluate.seed). Empty = all items.",
    )
    stages: Optional[list[Stage]] = Field(
        default=None,
        description="Score this suite only at these stages, e.g. [base, final] to skip the early checkpoints "
        "on a slow benchmark while the task suite still ranks them. Empty = every stage in evaluate.stages.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _SUITE_NAME.match(name) or "__" in name:
            raise ValueError(
                "use letters, digits, '_', '-', '.' (no '__', no spaces): the name becomes a folder name"
            )
        return name


class GenerationSuite(_SuiteBase):
    kind: Literal["generation"] = "generation"
    path: Optional[str] = Field(
        default=None,
        description="Records to score (any format `curatune curate` reads, or a records parquet). "
        "Empty = the run's held-out split (train/heldout.parquet), or the split `split` names.",
    )
    split: Literal["heldout", "validation"] = Field(
        default="heldout",
        description="Without a path, which split of the run: heldout (train/heldout.parquet, the test) or "
        "validation (train/validation.parquet, carved from the training pool). A validation suite exists to "
        "choose the learning rate of a grid by what the cells generate (evaluate.analysis.lr_select_by: "
        "SUITE/METRIC): it scores the grid cells' final weights only and takes no part in learning vs "
        "forgetting, significance or the report's comparisons.",
    )
    metrics: Optional[list[Literal[GENERATION_METRICS]]] = Field(  # type: ignore[valid-type]
        default=None,
        description="Metrics: bleu, chrf (chrF++), ter, comet_like, exact_match, field_f1 (also reports "
        "json_valid). Empty = chosen from the references: JSON references get exact_match, field_f1, chrf, "
        "comet_like; free text gets bleu, chrf, ter, exact_match, comet_like.",
    )
    batch_size: Optional[int] = Field(
        default=None, ge=1, description="Prompts per generate() call. Empty = evaluate.generation.batch_size."
    )
    max_new_tokens: Optional[int] = Field(
        default=None, ge=1, description="Generation budget. Empty = evaluate.generation.max_new_tokens."
    )
    stop: Optional[list[str]] = Field(
        default=None, description="Stop strings (cut from the output). Empty = evaluate.generation.stop."
    )

    @model_validator(mode="after")
    def _split_or_path(self) -> "GenerationSuite":
        if self.split == "validation" and self.path:
            raise ValueError("split: validation scores the run's validation split; leave path empty")
        return self

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, metrics: Optional[list[str]]) -> Optional[list[str]]:
        if metrics is not None:
            if not metrics:
                raise ValueError("list at least one metric, or leave metrics empty for the automatic choice")
            metrics = list(dict.fromkeys(metrics))
        return metrics


class MultipleChoiceSuite(_SuiteBase):
    kind: Literal["multiple_choice"] = "multiple_choice"
    path: str = Field(
        description="Multiple-choice items: llm-foundry jsonl {query, choices, gold}, Winogrande "
        "{context_options, continuation, gold}, the HellaSwag .txt.bz2, or hf:org/name when online."
    )
    batch_size: int = Field(default=16, ge=1, description="Sequences per forward pass.")


class PerplexitySuite(_SuiteBase):
    kind: Literal["perplexity"] = "perplexity"
    path: str = Field(description="Texts for rolling perplexity (.txt, .jsonl with a text field, ...).")
    max_length: int = Field(default=1024, ge=16, description="Window length in tokens of the rolling loglikelihood.")
    batch_size: int = Field(default=8, ge=1, description="Windows per forward pass.")


class LambadaSuite(_SuiteBase):
    kind: Literal["lambada"] = "lambada"
    path: str = Field(
        description="LAMBADA items: {context, continuation} (llm-foundry lambada_openai.jsonl) or {text}."
    )
    batch_size: int = Field(default=16, ge=1, description="Sequences per forward pass.")


class RetentionSuite(_SuiteBase):
    kind: Literal["retention"] = "retention"
    path: Optional[str] = Field(
        default=None,
        description="Probe prompts, JSONL rows {id, category, prompt}. Empty = the packaged general prompts "
        "(facts, arithmetic, instructions, writing, reasoning, code, language, small talk).",
    )
    prompts: Literal["general", "heldout"] = Field(
        default="general",
        description="general: the probe prompts (path, or the packaged set). heldout: the task's own held-out "
        "prompts (train/heldout.parquet, `limit` of them), so kl_divergence is the forward KL(base || tuned) of "
        "the next-token distributions on the task distribution, the quantity 'RL's Razor' (Shenfeld et al. "
        "2025) reports to predict forgetting. Give it its own suite name, e.g. task_kl.",
    )
    max_new_tokens: int = Field(default=32, ge=1, description="Length of the base model's reference answers.")
    batch_size: int = Field(default=8, ge=1, description="Prompts per forward pass.")
    answer_agreement: bool = Field(
        default=True,
        description="Also let each model answer the prompts greedily and report the share of answers identical "
        "to the base model's. Costs one generation pass per model (most of the probe's time); the KL and "
        "log-likelihood metrics need only one forward pass.",
    )


class LmEvalSuite(_SuiteBase):
    kind: Literal["lm_eval"] = "lm_eval"
    limit: Optional[int] = Field(
        default=None,
        ge=1,
        description="Score a fixed random subset of this many documents of each task (each subject of a group "
        "such as mmlu, like lm-eval's --limit), the same for every model, chosen with evaluate.seed. Empty = all.",
    )
    task: Optional[str] = Field(
        default=None,
        description="An EleutherAI lm-evaluation-harness task, group or tag name (e.g. mmlu, gsm8k, ifeval; "
        "its dataset is downloaded from the Hugging Face hub), or the name of a task defined in the YAML "
        "file(s) at path. Empty = the task of the single YAML file at path. Needs `pip install "
        "'curatune[lmeval]'`.",
    )
    path: Optional[str] = Field(
        default=None,
        description="A task YAML file, or a folder of them, in lm-eval's format (lm-eval's include_path): "
        "e.g. dataset_path: json with dataset_kwargs.data_files over local JSONL files, which runs offline. "
        "Relative data_files in the YAML resolve against the YAML's folder (the folder, for a folder).",
    )
    num_fewshot: Optional[int] = Field(
        default=None, ge=0,
        description="Few-shot examples per prompt. Empty = the task's own default (0 when it sets none); a "
        "task whose YAML fixes num_fewshot: 0 stays zero-shot (lm-eval's rule).",
    )
    fewshot_seed: int = Field(
        default=1234,
        description="Seed of the few-shot example choice (lm-eval's fewshot_random_seed; 1234 is its default, "
        "so the prompts are those of published lm-eval numbers).",
    )
    filter: Optional[str] = Field(
        default=None,
        description="Which of the task's lm-eval filters to report when it has several (gsm8k: strict-match "
        "or flexible-extract). Empty = the task's first filter ('none' for tasks without filters).",
    )
    scorer: Literal["curatune", "lm_eval"] = Field(
        default="curatune",
        description="Who computes log-likelihood requests (multiple-choice and loglikelihood tasks): curatune "
        "(the shared-prefix scorer of the multiple_choice kind, lm-eval's tokenization, the same numbers item "
        "by item, faster) or lm_eval (its HFLM). Generation and rolling log-likelihood always run in lm-eval's HFLM.",
    )
    batch_size: int = Field(default=16, ge=1, description="Sequences per forward pass (and per generate() call).")
    apply_chat_template: bool = Field(
        default=False,
        description="Wrap prompts in the model's chat template (few-shot examples as turns), as lm-eval's "
        "--apply_chat_template --fewshot_as_multiturn; for instruct models on tasks such as ifeval.",
    )
    gen_kwargs: dict[str, Union[int, float, bool, str, list[str]]] = Field(
        default_factory=dict,
        description="Overrides of the task's generation settings, e.g. {max_gen_toks: 128} to bound a gsm8k "
        "answer on CPU (lm-eval's --gen_kwargs).",
    )

    @model_validator(mode="after")
    def _task_or_path(self) -> "LmEvalSuite":
        if not self.task and not self.path:
            raise ValueError("give task (an lm-eval task name such as mmlu) or path (a task YAML over local files)")
        return self


SuiteConfig = Annotated[
    Union[GenerationSuite, MultipleChoiceSuite, PerplexitySuite, LambadaSuite, RetentionSuite, LmEvalSuite],
    Field(discriminator="kind"),
]


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=256, ge=1, description="Most tokens generated per answer.")
    batch_size: int = Field(default=16, ge=1, description="Prompts per generate() call (sorted by length).")
    stop: list[str] = Field(
        default_factory=list,
        description="Strings that end an answer besides the EOS token; the output is cut before them.",
    )


def default_suites() -> list[GenerationSuite | RetentionSuite]:
    """What runs when ``evaluate.suites`` is empty."""
    return [GenerationSuite(name="task"), RetentionSuite(name="retention")]


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suites: list[SuiteConfig] = Field(
        default_factory=list,
        description="Evaluation suites, each {name, kind, ...}; kind is generation, multiple_choice, "
        "perplexity, lambada, retention or lm_eval (an lm-evaluation-harness task by name or YAML), e.g. [{name: task, kind: generation, metrics: [chrf, field_f1]}, "
        "{name: arc_easy, kind: multiple_choice, path: data/arc_easy.jsonl, limit: 500}, {name: retention, "
        "kind: retention}]; docs/evaluate.md lists each kind's keys. Empty = the target task on the held-out "
        "split (kind generation, name 'task') plus the data-free retention probe (name 'retention').",
    )
    stages: list[Stage] = Field(
        default=["base", "early", "final"],
        description="Which models to score: the base model, each cell's early checkpoint, each cell's final weights.",
    )
    cells: Literal["all", "done"] = Field(
        default="done",
        description="'done' scores the cells that finished training and lists the others as skipped; "
        "'all' requires every planned cell to be done and stops with an error otherwise.",
    )
    lr_grid_cells: Literal["all", "selected"] = Field(
        default="all",
        description="With a learning-rate grid (train.learning_rates): 'all' scores every grid cell on every "
        "suite; 'selected' gives the full evaluation only to the cells of each (method, size)'s selected rate "
        "(lowest mean validation loss, docs/analysis.md) and scores the other rates' cells on the task suites "
        "(evaluate.analysis.task_suites) only, beside the validation loss they recorded in training. The "
        "selection is made from the cells done when `curatune evaluate` runs; while some rate or seed of a "
        "(method, size) is still training, all its finished cells get the task suites only and the full "
        "evaluation waits (its choice may still change); a later run scores what is then needed.",
    )
    limit_heldout: Optional[int] = Field(
        default=None,
        ge=1,
        description="Score a fixed random subset of this many held-out records (default: all of them).",
    )
    seed: int = Field(default=0, description="Seed of every fixed random subset (limit, limit_heldout).")
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description="torch threads while evaluating on CPU; 0 = torch's default (one per core). On a busy "
        "shared machine 1 can be many times faster than oversubscribed threads.",
    )
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[str]) -> list[str]:
        if not stages:
            raise ValueError("list at least one of base, early, final")
        return list(dict.fromkeys(stages))

    @model_validator(mode="after")
    def _unique_suite_names(self) -> "EvaluateConfig":
        seen: set[str] = set()
        for suite in self.suites:
            if suite.name in seen:
                raise ValueError(f"suite name {suite.name!r} is used twice; each suite needs its own name")
            seen.add(suite.name)
        return self

    @model_validator(mode="after")
    def _selection_suite(self) -> "EvaluateConfig":
        """A validation-split suite and analysis.lr_select_by name each other (see GenerationSuite.split)."""
        by = self.analysis.lr_select_by
        validation = [s for s in self.effective_suites() if getattr(s, "split", None) == "validation"]
        if by == "validation_loss":
            if validation:
                name, metric = validation[0].name, (validation[0].metrics or ["chrf"])[0]
                raise ValueError(
                    f"suite {name!r} scores the validation split, which exists to choose a learning rate: "
                    f"set analysis.lr_select_by: {name}/{metric} (a metric it computes), or remove the suite")
            return self
        suite, _, metric = by.partition("/")
        spec = next((s for s in self.effective_suites() if s.name == suite), None)
        if spec is None or getattr(spec, "split", None) != "validation":
            raise ValueError(
                f"analysis.lr_select_by = {by!r} needs a generation suite named {suite!r} with split: validation, "
                f"e.g. {{name: {suite}, kind: generation, split: validation, metrics: [{metric}], stages: [final]}}")
        if metric not in (*GENERATION_METRICS, "json_valid"):  # found now, not after the sweep trained
            raise ValueError(f"analysis.lr_select_by = {by!r}: {metric!r} is not a metric of a generation suite "
                             f"(choose one of {', '.join(GENERATION_METRICS)}, json_valid)")
        if spec.metrics is not None and metric not in spec.metrics:
            raise ValueError(f"analysis.lr_select_by = {by!r}: suite {suite!r} computes {spec.metrics}, not {metric!r}")
        if suite in self.analysis.task_suites:
            raise ValueError(f"analysis.task_suites lists {suite!r}, the validation suite that chooses the learning "
                             "rate; task suites are scored on the held-out split")
        others = [s.name for s in validation if s.name != suite]
        if others:
            raise ValueError(f"suite {others[0]!r} also scores the validation split; one validation suite chooses the "
                             f"learning rate ({suite!r}): remove the other")
        return self

    def effective_suites(self) -> list:
        """The configured suites, or the defaults when none are configured."""
        return list(self.suites) if self.suites else default_suites()
