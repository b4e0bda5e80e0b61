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
from core.weak_validation import weak_split_warning, wilson_interval
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
    warning = weak_split_warning("evaluation", per_class, tolerance) if per_class else None
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


def held_out_split(dataset: Any) -> str:
    return "test" if dataset.items("test") else "val"


def split_counts(dataset: Any, split: str) -> dict[str, int]:
    """Images per class of ``split`` (every class listed, 0 included)."""
    counts = dict.fromkeys(dataset.classes, 0)
    for _, index in dataset.items(split):
        counts[dataset.classes[index]] += 1
    return counts


def version_of_job(registry: Registry, name: str, job_id: str) -> VersionInfo | None:
    """The version a previous attempt of this job already registered (its worker died after that)."""
    if not registry.exists(name):
        return None
    return next((v for v in registry.versions(name) if v.manifest.source.get("job_id") == job_id), None)


def publish_with_gate(
    result: Any, registry: Registry, name: str, dataset: Any, lineage: dict[str, Any], settings: Settings,
    replace_labels: bool = False, tracker: Any = None,
) -> dict[str, Any]:
    """Register the trained model, evaluate it against the active version, promote or keep as candidate.

    Checked again here (the API checked at creation): the model name must keep its meaning
    (models/meaning.py raises LabelConflict, which fails the job with the fix); the same labels in
    another order are mapped to the served order.
    """
    from trainer.evaluate import evaluate_onnx
    from trainer.labels import reorder_labels
    from trainer.publish import export_and_register

    timed = _Timed(tracker)
    info = version_of_job(registry, name, str(lineage.get("job_id")))
    if info is None:
        order = check_labels(registry, name, list(result.labels), replace_labels)
        if order is not None and order != list(result.labels):
            log.info("%s: mapping the job's label order %s to the served order %s", name, result.labels, order)
            result = reorder_labels(result, order)
        variants = tuple(v for v in settings.build_variants.split(",") if v.strip())
        with timed("export"):  # ONNX export, checks, report, variants and the copy into the registry
            info = export_and_register(result, registry, name, dataset, lineage, activate=False, variants=variants)
    split = held_out_split(dataset)
    timed.begin("evaluate")
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
        split_counts(dataset, split),
    )
    timed.end()
    timed.begin("register")  # the version's stage in the registry: active (announced) or candidate
    if decision.promote:
        registry.activate(name, info.version)
        announce_promotion(broker_url(settings), name, info.version)
    else:
        registry.set_stage(name, info.version, "candidate")
    timed.end()
    log.info("%s version %d: %s", name, info.version, decision.reason)
    return {
        "model": name,
        "version": info.version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "warnings": [w for w in (decision.warning, *result.metrics.get("warnings", [])) if w],
        "evaluation": {
            "split": split,
            "accuracy_ci95": None if decision.accuracy_ci is None else list(decision.accuracy_ci),
            "candidate": _summary(candidate),
            "active": None if active_info is None
            else {"version": active_info.version, **_summary(active_eval)},
        },
        "metrics": dict(info.manifest.metrics),
    }


class _Timed:
    """Publishing stages into an optional progress tracker (trainer/progress.py)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.started = 0.0

    def begin(self, name: str) -> None:
        import time

        if self.tracker is not None:
            self.tracker.start(name, 1)
        self.started = time.perf_counter()

    def end(self) -> None:
        import time

        if self.tracker is not None:
            self.tracker.unit_done(time.perf_counter() - self.started, force=True)

    def __call__(self, name: str) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def stage() -> Any:
            self.begin(name)
            yield
            self.end()
        return stage()


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

