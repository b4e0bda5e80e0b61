"""The promotion gate: a new version serves only if it is at least as good as the one serving now.

Both the candidate and the active version are evaluated by onnxruntime on the same held-out split
of the job's dataset (test when the dataset has one, else val), so the comparison is like for like
and uses the exact files the API would load. Otherwise the version is kept as ``candidate`` (it can
still be activated by hand) and the job result says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.settings import Settings
from models import Registry, VersionInfo
from models.meaning import check_labels
from transport.broker import broker_url
from transport.promotions import announce_promotion

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


def held_out_split(dataset: Any) -> str:
    return "test" if dataset.items("test") else "val"


def version_of_job(registry: Registry, name: str, job_id: str) -> VersionInfo | None:
    """The version a previous attempt of this job already registered (its worker died after that)."""
    if not registry.exists(name):
        return None
    return next((v for v in registry.versions(name) if v.manifest.source.get("job_id") == job_id), None)


def publish_with_gate(
    result: Any, registry: Registry, name: str, dataset: Any, lineage: dict[str, Any], settings: Settings,
    replace_labels: bool = False,
) -> dict[str, Any]:
    """Register the trained model, evaluate it against the active version, promote or keep as candidate.

    Checked again here (the API checked at creation): the model name must keep its meaning
    (models/meaning.py raises LabelConflict, which fails the job with the fix); the same labels in
    another order are mapped to the served order.
    """
    from trainer.evaluate import evaluate_onnx
    from trainer.labels import reorder_labels
    from trainer.publish import export_and_register

    info = version_of_job(registry, name, str(lineage.get("job_id")))
    if info is None:
        order = check_labels(registry, name, list(result.labels), replace_labels)
        if order is not None and order != list(result.labels):
            log.info("%s: mapping the job's label order %s to the served order %s", name, result.labels, order)
            result = reorder_labels(result, order)
        variants = tuple(v for v in settings.build_variants.split(",") if v.strip())
        info = export_and_register(result, registry, name, dataset, lineage, activate=False, variants=variants)
    split = held_out_split(dataset)
    candidate = evaluate_onnx(info.model_path, info.manifest, dataset, split)
    active_info = _comparable_active(registry, name, info)
    active_eval: dict[str, Any] | None = None
    if active_info is not None:
        active_eval = evaluate_onnx(active_info.model_path, active_info.manifest, dataset, split)
    decision = decide(
        float(candidate["accuracy"]),
        None if active_eval is None else float(active_eval["accuracy"]),
        len(info.manifest.labels),
        settings.promotion_tolerance,
    )
    if decision.promote:
        registry.activate(name, info.version)
        announce_promotion(broker_url(settings), name, info.version)
    else:
        registry.set_stage(name, info.version, "candidate")
    log.info("%s version %d: %s", name, info.version, decision.reason)
    return {
        "model": name,
        "version": info.version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "evaluation": {
            "split": split,
            "candidate": _summary(candidate),
            "active": None if active_info is None
            else {"version": active_info.version, **_summary(active_eval)},
        },
        "metrics": dict(info.manifest.metrics),
    }


def _comparable_active(registry: Registry, name: str, candidate: VersionInfo) -> VersionInfo | None:
    """The active version, if it predicts the same labels (else the candidate is judged on its own)."""
    if not registry.exists(name):
        return None
    active = registry.active_version(name)
    if active is None or active == candidate.version:
        return None
    info = registry.get(name, active)
    return info if info.manifest.labels == candidate.manifest.labels else None


def _summary(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The scalar metrics of an evaluation (per-image details stay in the report files)."""
    if not evaluation:
        return {}
    return {k: v for k, v in evaluation.items() if isinstance(v, int | float | str | bool) or v is None}

