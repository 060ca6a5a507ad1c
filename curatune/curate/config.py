"""Configuration of the curation stage (owned by curatune.curate)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[dict] = Field(
        default_factory=list,
        description="Ordered curation steps; each an object with a 'name' and its settings.",
    )
