"""Configuration of merged cells (the ``merge:`` section), owned by curatune.train.merge."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MERGE_TYPES = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "scaled")
#: Methods whose finished cells can be merged: LoRA adapters and full fine-tunes.
MERGEABLE_METHODS = ("lora", "qlora", "full")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


class MergeRecipe(BaseModel):
    """One merged cell built from finished cells of the sweep."""

    model_config = ConfigDict(extra="forbid")

    type: Literal[MERGE_TYPES] = Field(  # type: ignore[valid-type]
        description="task_arithmetic (weighted sum of the parents' updates), ties (trim to the largest "
        "`density` of each update, elect a sign per weight, average the agreeing ones; Yadav et al. 2023), "
        "dare_linear / dare_ties (drop a random 1 - density of each update and rescale the rest, then sum "
        "or TIES-merge; Yu et al. 2024), scaled (one parent's update times `scale`)."
    )
    parents: list[str] = Field(
        default_factory=list,
        description="Cell keys to merge, e.g. [lora-n128-s0, lora-n128-s1]. Or leave empty and give method, "
        "sizes and seeds: every combination of them.",
    )
    method: Literal[MERGEABLE_METHODS] | None = Field(  # type: ignore[valid-type]
        default=None, description="Parents' method when parents is empty (lora, qlora or full)."
    )
    sizes: list[int] = Field(default_factory=list, description="Parents' sizes when parents is empty.")
    seeds: list[int] = Field(default=[0], description="Parents' seeds when parents is empty.")
    weights: list[float] | None = Field(
        default=None,
        description="One weight per parent. Unset: 1/k each for task_arithmetic and dare_linear (an average "
        "of the updates), 1 each for ties and dare_ties (their sign-elected merge already averages).",
    )
    density: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Fraction of each update kept by ties, dare_linear, dare_ties."
    )
    scale: float = Field(default=0.5, gt=0.0, description="Scaling of the update for type scaled.")
    seed: int = Field(default=0, description="Seed of DARE's random drop.")
    lora_rank: int | None = Field(
        default=None, ge=1,
        description="Rank of a merged LoRA adapter for ties and dare (the merged update is brought back to "
        "low rank by SVD). Unset: the sum of the parents' ranks. task_arithmetic and scaled are exact (the "
        "parents' factors are concatenated).",
    )
    name: str | None = Field(
        default=None,
        description="The merged cell's method name (lower case, digits, _ and .). Unset: "
        "<parent method>+<type>, e.g. lora+ties; for scaled, lora+scaled0.5.",
    )

    @model_validator(mode="after")
    def _parents_given_once(self) -> "MergeRecipe":
        if self.parents and (self.method or self.sizes):
            raise ValueError("give either parents, or method + sizes (+ seeds), not both")
        if not self.parents and not (self.method and self.sizes):
            raise ValueError("give parents (cell keys), or method and sizes")
        n = len(self.parent_keys())
        if len(set(self.parent_keys())) != n:
            raise ValueError("a parent is listed twice")
        if self.type == "scaled" and n != 1:
            raise ValueError(f"type scaled takes one parent, got {n}")
        if self.type in ("ties", "dare_ties") and n < 2:
            raise ValueError(f"type {self.type} merges at least two parents")
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(f"weights has {len(self.weights)} values for {n} parents")
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lower-case letters, digits, _ and .")
        return self

    def parent_keys(self) -> list[str]:
        if self.parents:
            return list(self.parents)
        return [f"{self.method}-n{size}-s{seed}" for size in self.sizes for seed in self.seeds]

    def parent_weights(self) -> list[float]:
        if self.type == "scaled":
            return [self.scale]
        if self.weights is not None:
            return list(self.weights)
        k = len(self.parent_keys())
        return [1.0 / k] * k if self.type in ("task_arithmetic", "dare_linear") else [1.0] * k


class MergeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipes: list[MergeRecipe] = Field(
        default_factory=list,
        description="Merged cells to build after the sweep (also `curatune merge RUN_DIR`); each is "
        "evaluated and shown like a trained cell. Empty = none.",
    )
