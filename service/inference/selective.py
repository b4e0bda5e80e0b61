"""When a prediction answers "unknown": the out-of-distribution score over its threshold, or the top
probability under the confidence floor (the contract is in docs/architecture.md, "Predicting").

The version's defaults come from its manifest (``ood.threshold``, ``selective.min_confidence``, written
by the trainer); a request may override either (``ood_threshold``, ``min_confidence``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from models.manifest import Manifest

OOD = "ood"
LOW_CONFIDENCE = "low_confidence"


def manifest_section(manifest: Manifest, key: str) -> dict[str, Any] | None:
    """A manifest key as plain JSON, whether the manifest types it or keeps it as an extra field."""
    value = getattr(manifest, key, None)
    if value is None:
        value = (manifest.model_extra or {}).get(key)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value if isinstance(value, dict) else None


def _number(section: dict[str, Any] | None, key: str) -> float | None:
    value = (section or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Thresholds:
    """``ood_threshold``: a score above it is "unknown" (None: never); ``min_confidence``: a top
    probability below it is "unknown" (None: never)."""

    ood_threshold: float | None = None
    min_confidence: float | None = None

    @classmethod
    def of_version(cls, manifest: Manifest) -> Thresholds:
        return cls(_number(manifest_section(manifest, "ood"), "threshold"),
                   _number(manifest_section(manifest, "selective"), "min_confidence"))

    def overridden(self, ood_threshold: float | None, min_confidence: float | None) -> Thresholds:
        """The request's own values where it gave them, the version's elsewhere."""
        return Thresholds(self.ood_threshold if ood_threshold is None else ood_threshold,
                          self.min_confidence if min_confidence is None else min_confidence)

    def decide(self, ood_score: float | None, top_probability: float) -> str | None:
        """Why the answer is "unknown" (``"ood"`` first, then ``"low_confidence"``), or None."""
        if ood_score is not None and self.ood_threshold is not None and ood_score > self.ood_threshold:
            return OOD
        if self.min_confidence is not None and top_probability < self.min_confidence:
            return LOW_CONFIDENCE
        return None
