"""Configuration of few-shot text classification (``task: classification``, section ``classify:``).

Owned by curatune.classify. The data still comes from ``data.sources`` and the embedder from
``model.embedder``; this section says which fields hold the text and the label, how many
labelled examples per class each cell gets, and how the SetFit cells train.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Methods of a classification sweep. The zero-shot baseline needs no training: it is the run's
#: "base" (embedding similarity of each text to each label name).
CLASSIFY_METHODS = ("setfit", "logreg")


class SetFitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_iterations: int = Field(
        default=20, ge=1,
        description="Pairs drawn per labelled example and epoch (setfit's num_iterations; the SetFit paper uses 20): "
        "each example gets this many positive (same label) and negative (other label) partners.",
    )
    epochs: int = Field(default=1, ge=1, description="Passes over the pairs of the contrastive phase.")
    batch_size: int = Field(default=16, ge=1, description="Pairs per batch of the contrastive phase.")
    learning_rate: float = Field(default=2e-5, gt=0, description="Learning rate of the embedder body (setfit's default).")
    max_length: int = Field(
        default=256, ge=8, description="Tokens of a text the embedder reads (longer texts are cut), in training and scoring."
    )
    save_weights: bool = Field(
        default=False,
        description="Keep each cell's tuned embedder (final/, safetensors, ~90 MB for MiniLM) and its head "
        "(final/head.safetensors). Off: a cell keeps its predictions on the test split only.",
    )


class HeadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    C: float = Field(default=1.0, gt=0, description="Inverse L2 strength of the logistic-regression head (scikit-learn's C).")
    max_iter: int = Field(default=1000, ge=10, description="Solver iterations of the logistic-regression head.")


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_field: str | None = Field(
        default=None,
        description="Field holding the text; unset = detected (text, sentence, review, content, document, "
        "question, ..., or the prompt of a prompt/completion file).",
    )
    label_field: str | None = Field(
        default=None,
        description="Field holding the label; unset = detected (label, labels, class, category, target, "
        "sentiment, ..., or the completion of a prompt/completion file).",
    )
    strip_template: bool | None = Field(
        default=None,
        description="Remove the text every row of a file shares at the start and end of the text field (the "
        "instruction of a prompt template, e.g. 'Is the review positive or negative?'). Unset = on for "
        "prompt/completion files of at least 20 rows, off otherwise.",
    )
    label_names: dict[str, str] = Field(
        default_factory=dict,
        description="Text the zero-shot baseline embeds for a label, when the label itself is a code "
        "(e.g. {'1': 'negative', '2': 'positive'}); unset labels stand for themselves.",
    )
    zero_shot_template: str = Field(
        default="{label}",
        description="What the zero-shot baseline embeds per label, with {label} for its name "
        "(e.g. 'This review is {label}.').",
    )
    sizes_per_class: list[int] = Field(
        default_factory=lambda: [8, 16, 32, 64],
        description="Labelled examples per class of each cell; subsets are nested (the 16 hold the 8) and "
        "balanced (the same number of every class).",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Seeds: the draw of the subsets and the training.")
    heldout_per_class: int = Field(
        default=50, ge=1,
        description="Test examples per class, carved (stratified, seeded) before any subset is drawn; "
        "a class with fewer than this plus the largest size is an error that names it.",
    )
    heldout_seed: int = Field(default=1234, description="Seed of the test carve (independent of the subset seeds).")
    methods: list[Literal[CLASSIFY_METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CLASSIFY_METHODS),
        description="setfit: contrastive tuning of the embedder on pairs, then a logistic-regression head "
        "(Tunstall et al. 2022). logreg: the same head on the frozen embedder (what tuning buys is the "
        "difference). The zero-shot baseline is always scored as the run's base.",
    )
    suite: str = Field(default="classification", description="Suite name of the scores (eval/scores.parquet).")
    setfit: SetFitSettings = Field(default_factory=SetFitSettings)
    head: HeadSettings = Field(default_factory=HeadSettings)

    @field_validator("sizes_per_class")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if not sizes or any(s < 2 for s in sizes):
            raise ValueError("sizes_per_class needs at least one size, each at least 2 (SetFit needs pairs)")
        return sorted(set(sizes))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("seeds needs at least one seed")
        return list(dict.fromkeys(seeds))

    @field_validator("zero_shot_template")
    @classmethod
    def _template(cls, template: str) -> str:
        if "{label}" not in template:
            raise ValueError("the template must contain {label}")
        return template
