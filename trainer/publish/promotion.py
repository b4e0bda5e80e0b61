"""The promotion gate: a new version serves only if it is at least as good as the one serving now.

Both the candidate and the active version are evaluated by onnxruntime on the same held-out split
of the job's dataset (test when the dataset has one, else val), so the comparison is like for like
and uses the exact files the API would load. The gate only decides: trainer/publish/publisher.py activates
the version or keeps it as ``candidate`` (it can still be activated by hand); the job result says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.weak_validation import weak_split_warning, wilson_interval
from models import Registry, VersionInfo
from trainer.data.job_data import JobData
from trainer.publish.evaluate import evaluate_onnx

log = logging.getLogger(__name__)

CHANCE_MARGIN = 0.1  # a first version must close at least 10% of the gap between chance and perfect


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    accuracy_ci: tuple[float, float] | None = None  # 95 % Wilson interval of the candidate's accuracy
    warning: str | None = None  # the evaluation split is too small to tell close models apart


def decide(
    candidate_accuracy: float, active_accuracy: float | None, num_classes: int, tolerance: float,
    per_class: dict[str, int] | None = None,
) -> Decision:
    """Pure rule, unit-tested on its own. ``per_class``: images per class of the evaluation split.

    A first version must be clearly above chance: the lower end of the 95 % Wilson interval on its
    accuracy must reach chance plus CHANCE_MARGIN of the gap to perfect (5 right of 8 on four
    classes is 0.625, but its interval starts at 0.31: not clearly better than guessing). When the
    split is small (core/weak_validation.py) the reason says the comparison is weak.
    """
    images = sum(per_class.values()) if per_class else 0
    ci = wilson_interval(candidate_accuracy * images, images) if images else None
    warning = weak_split_warning("evaluation", per_class, candidate_accuracy) if per_class else None
    sure = f"; 95% interval {ci[0]:.3f}-{ci[1]:.3f} on {images} images" if ci else ""
    weak = f" (weak comparison: {warning})" if warning else ""
    if active_accuracy is None:
        chance = 1.0 / max(num_classes, 1)
        needed = chance + CHANCE_MARGIN * (1.0 - chance)
        lower = ci[0] if ci else candidate_accuracy
        if lower >= needed:
            return Decision(True, f"first version: accuracy {candidate_accuracy:.4f} is clearly above chance "
                                  f"({chance:.4f}): {'its interval starts at ' if ci else ''}{lower:.4f} >= "
                                  f"{needed:.4f}{sure}{weak}", ci, warning)
        return Decision(False, f"first version: accuracy {candidate_accuracy:.4f} is not clearly above chance "
                               f"({chance:.4f}): {'its interval starts at ' if ci else ''}{lower:.4f} < "
                               f"{needed:.4f}{sure}; kept as candidate{weak}", ci, warning)
    floor = active_accuracy - tolerance
    if candidate_accuracy >= floor:
        return Decision(True, f"accuracy {candidate_accuracy:.4f} >= active {active_accuracy:.4f} "
                              f"- tolerance {tolerance}{sure}{weak}", ci, warning)
    return Decision(False, f"accuracy {candidate_accuracy:.4f} < active {active_accuracy:.4f} "
                           f"- tolerance {tolerance}: kept as candidate{sure}{weak}", ci, warning)


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
            "accuracy_ci95": None if self.decision.accuracy_ci is None else list(self.decision.accuracy_ci),
            "candidate": _scalars(self.candidate),
            "active": None if self.active_version is None
            else {"version": self.active_version, **_scalars(self.active)},
        }


def held_out_split(data: JobData) -> str:
    return "test" if data.has("test") else "val"


def split_counts(dataset: Any, split: str) -> dict[str, int]:
    """Images per class of ``split`` (every class listed, 0 included)."""
    counts = dict.fromkeys(dataset.classes, 0)
    for _, index in dataset.items(split):
        counts[dataset.classes[index]] += 1
    return counts


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
        split_counts(data.dataset, split),
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
