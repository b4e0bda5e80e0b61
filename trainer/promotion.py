"""The promotion gate: a new version serves only if it is at least as good as the one serving now.

Both the candidate and the active version are evaluated by onnxruntime on the same held-out split
of the job's dataset (test when the dataset has one, else val), so the comparison is like for like
and uses the exact files the API would load. The gate only decides: trainer/publish.py activates
the version or keeps it as ``candidate`` (it can still be activated by hand); the job result says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from models import Registry, VersionInfo
from trainer.evaluate import evaluate_onnx
from trainer.job_data import JobData

log = logging.getLogger(__name__)

CHANCE_MARGIN = 0.1  # a first version must close at least 10% of the gap between chance and perfect


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate_accuracy: float, active_accuracy: float | None, num_classes: int, tolerance: float
) -> Decision:
    """Pure rule, unit-tested on its own."""
    if active_accuracy is None:
        chance = 1.0 / max(num_classes, 1)
        needed = chance + CHANCE_MARGIN * (1.0 - chance)
        if candidate_accuracy >= needed:
            return Decision(True, f"first version: accuracy {candidate_accuracy:.4f} beats chance "
                                  f"({chance:.4f}) by the required margin (>= {needed:.4f})")
        return Decision(False, f"accuracy {candidate_accuracy:.4f} is too close to chance ({chance:.4f}); "
                               f"needs >= {needed:.4f}")
    floor = active_accuracy - tolerance
    if candidate_accuracy >= floor:
        return Decision(True, f"accuracy {candidate_accuracy:.4f} >= active {active_accuracy:.4f} "
                              f"- tolerance {tolerance}")
    return Decision(False, f"accuracy {candidate_accuracy:.4f} < active {active_accuracy:.4f} "
                           f"- tolerance {tolerance}: kept as candidate")


@dataclass(frozen=True)
class Verdict:
    """What the gate measured and decided for one candidate version."""

    decision: Decision
    split: str
    candidate: dict[str, Any]
    active_version: int | None
    active: dict[str, Any] | None

    def summary(self) -> dict[str, Any]:
        """The job result's ``evaluation``: scalar metrics only (per-image details stay in the report files)."""
        return {
            "split": self.split,
            "candidate": _scalars(self.candidate),
            "active": None if self.active_version is None
            else {"version": self.active_version, **_scalars(self.active)},
        }


def held_out_split(data: JobData) -> str:
    return "test" if data.has("test") else "val"


def judge(registry: Registry, candidate: VersionInfo, data: JobData, tolerance: float) -> Verdict:
    """Evaluate the candidate and the comparable active version on the held-out split, and decide."""
    split = held_out_split(data)
    evaluation = evaluate_onnx(candidate.model_path, candidate.manifest, data, split)
    active_info = _comparable_active(registry, candidate)
    active = None if active_info is None else evaluate_onnx(active_info.model_path, active_info.manifest, data, split)
    decision = decide(
        float(evaluation["accuracy"]),
        None if active is None else float(active["accuracy"]),
        len(candidate.manifest.labels),
        tolerance,
    )
    return Verdict(decision, split, evaluation, None if active_info is None else active_info.version, active)


def _comparable_active(registry: Registry, candidate: VersionInfo) -> VersionInfo | None:
    """The active version, if it predicts the same labels (else the candidate is judged on its own)."""
    name = candidate.manifest.name
    if not registry.exists(name):
        return None
    active = registry.active_version(name)
    if active is None or active == candidate.version:
        return None
    info = registry.get(name, active)
    return info if info.manifest.labels == candidate.manifest.labels else None


def _scalars(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    if not evaluation:
        return {}
    return {k: v for k, v in evaluation.items() if isinstance(v, int | float | str | bool) or v is None}
