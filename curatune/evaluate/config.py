"""Configuration of the evaluation stage (owned by curatune.evaluate)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suites: list[dict] = Field(default_factory=list, description="Evaluation suites.")
