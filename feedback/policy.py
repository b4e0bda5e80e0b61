"""Which predictions are kept for review: the per-model capture policy and its decision."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Policy = Literal["off", "unknown", "unsure", "all"]


class CapturePolicy(BaseModel):
    """``off``: nothing; ``unknown``: answers flagged unknown (out of distribution or below the version's
    confidence floor); ``unsure``: top probability below ``min_confidence``; ``all``: every prediction.
    ``sample_rate`` keeps that share of the matching ones; the caps bound the model's store (the oldest
    unlabelled captures go first, labelled ones never)."""

    # Strict like the job bodies: `false` is no rate and `"yes"` no policy (JSON's types, not coerced).
    model_config = ConfigDict(extra="forbid", strict=True)

    policy: Policy = "off"
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)
    max_items: int = Field(default=10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=1024**3, ge=1024, le=1024**4)


def should_capture(policy: CapturePolicy, top_probability: float, unknown: bool,
                   rng: random.Random | None = None) -> bool:
    """Whether one answer is kept under ``policy`` (sampling included)."""
    if policy.policy == "off":
        return False
    matches = (policy.policy == "all" or (policy.policy == "unknown" and unknown)
               or (policy.policy == "unsure" and top_probability < policy.min_confidence))
    if not matches or policy.sample_rate <= 0.0:
        return False
    return policy.sample_rate >= 1.0 or (rng or random).random() < policy.sample_rate
