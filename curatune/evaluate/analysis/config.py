"""Configuration of the analysis step (learning vs forgetting, saturation, early vs final).

Embedded in the experiment config as ``evaluate.analysis``; ``curatune report`` reads the
same section from the run directory's ``config.yaml``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SignificanceConfig(BaseModel):
    """Paired tests of every (cell, stage, suite) against the base model (see docs/analysis.md)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        default=0.05, gt=0, lt=1,
        description="A change is labelled significant when its adjusted p-value is below this.",
    )
    fdr: Literal["fdr_bh", "holm"] = Field(
        default="fdr_bh",
        description="How p-values are adjusted over all cells x stages x suites of a run: fdr_bh "
        "(Benjamini-Hochberg: at most alpha of the significant labels are expected to be false) or holm "
        "(at most alpha chance of any false label; stricter, misses more real changes).",
    )
    n_resamples: int = Field(
        default=1000, ge=100,
        description="Bootstrap resamples of the paired bootstrap (1000 = sacrebleu's --paired-bs default).",
    )
    seed: int = Field(default=12345, description="Seed of the paired bootstrap (12345 = sacrebleu's default).")
    ci_level: float = Field(default=0.95, gt=0, lt=1, description="Coverage of the intervals of each difference.")


class AnalysisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr_select_by: str = Field(
        default="validation_loss",
        description="With a learning-rate grid, what picks each (method, size)'s rate: validation_loss (the mean "
        "per-token loss each cell records on train/validation.parquet; lowest wins) or SUITE/METRIC of a generation "
        "suite scored on that split (split: validation), e.g. task_validation/chrf: what the model generates, "
        "scored like the task (the metric's direction decides). docs/analysis.md, 'Learning-rate selection'.",
    )
    task_suites: list[str] = Field(
        default_factory=lambda: ["task"],
        description="Suites that measure the fine-tuning target (learning). Every other suite in "
        "eval/scores.parquet is a general suite, where a drop from the base model is forgetting.",
    )
    primary_metrics: dict[str, str] = Field(
        default_factory=dict,
        description="The headline metric per suite, e.g. {task: field_f1, arc_easy: acc}. Suites not "
        "listed get the first metric they have of: field_f1, chrf, acc_norm, acc, exact_match, bleu, "
        "comet_like, json_valid, bits_per_byte, word_perplexity, byte_perplexity, token_perplexity, "
        "perplexity, kl_divergence, base_answer_logprob, ter.",
    )
    metric_directions: dict[str, Literal["higher", "lower"]] = Field(
        default_factory=dict,
        description="Whether higher or lower is better, for metrics the built-in table does not know "
        "(or to override it). Metrics with no known direction are left out of the analysis with a warning.",
    )
    saturation_epsilon: float = Field(
        default=0.01,
        ge=0,
        description="Saturation point: smallest size from which the fitted curve gains less than this from "
        "doubling the data, as a fraction of the metric's scale (1 for 0-1 metrics such as acc, 100 for "
        "0-100 metrics such as chrf and bleu, the base model's value for perplexity-like metrics, the largest "
        "observed value for kl_divergence). 0.01 = one accuracy point, or one chrF/BLEU/TER point, per doubling; "
        "for comet_like (0-1 cosine) it is 0.01 cosine, which is no chrF point (see saturation_epsilons).",
    )
    saturation_epsilons: dict[str, float] = Field(
        default_factory=dict,
        description="Per-metric saturation epsilon in the metric's own units, overriding saturation_epsilon, "
        "e.g. {chrf: 0.5, comet_like: 0.005, acc: 0.02}. The analysis writes the epsilon it used, in words, "
        "as epsilon_text.",
    )
    saturation_search_factor: float = Field(
        default=8.0,
        ge=1,
        description="How far past the largest trained size the saturation point may be extrapolated "
        "(a multiple of the largest size); beyond it the point is reported as not reached.",
    )
    curve_points: int = Field(
        default=60, ge=10, le=2000, description="Points of the log-spaced size grid in eval/saturation_curves.parquet."
    )
    n_bootstrap: int = Field(
        default=200,
        ge=0,
        description="Bootstrap replicates for confidence bands (seeds resampled per size, items resampled "
        "from eval/samples when present). 0 turns bands off.",
    )
    ci_level: float = Field(default=0.95, gt=0, lt=1, description="Coverage of the bootstrap confidence bands.")
    seed: int = Field(default=0, description="Random seed of the bootstrap; same seed, same numbers.")
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    top_k: int = Field(
        default=3, ge=1, description="Early-vs-final agreement: overlap of the k best cells by early and by final score."
    )

    @field_validator("lr_select_by")
    @classmethod
    def _criterion(cls, value: str) -> str:
        if value != "validation_loss":
            suite, _, metric = value.partition("/")
            if not suite or not metric or "/" in metric:
                raise ValueError("use validation_loss, or SUITE/METRIC of a generation suite with split: validation, "
                                 "e.g. task_validation/chrf")
        return value
