"""Configuration of the sweep stage (owned by curatune.train)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sizes: list[int] = Field(default=[100, 200, 400, 800], description="Nested subset sizes.")
    seeds: list[int] = Field(default=[0], description="One nested family of subsets per seed.")
