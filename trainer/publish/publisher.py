"""Publishing: the one way a model becomes a registry version, whatever asks (a job, a search,
``tuneserve train``, ``bootstrap``).

:func:`publish` tells the story: the name keeps its meaning (models/meaning.py) -> the candidate is
exported and registered, not yet served -> the gate (trainer/publish/promotion.py) judges it on held-out
data -> it is promoted and announced, or kept as a candidate. A trained model's candidate is
:class:`Trained` (checked ONNX + report + torch weights); bootstrap brings its own
(trainer/publish/bootstrap.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from core.settings import Settings
from models import Manifest, Registry, VersionInfo
from models.card import CARD_FILE, model_card
from models.manifest import CamOutput, Preprocessing, Variant
from models.meaning import check_labels
from trainer.backbones import Backbone
from trainer.data.job_data import JobData
from trainer.data.pixels import normalize
from trainer.model_source import TORCH_FILE, torch_payload
from trainer.progress.steps import reporting, step
from trainer.progress.tracker import ProgressTracker
from trainer.publish.export import export_onnx
from trainer.publish.promotion import Decision, Verdict, judge
from trainer.publish.report import write_report
from trainer.publish.variants import build_variants
from trainer.run.labels import reorder_labels
from trainer.run.result import TrainingResult
from transport.broker import broker_url
from transport.promotions import announce_promotion

log = logging.getLogger(__name__)

CHECK_IMAGES = 16
CALIBRATION_IMAGES = 64


def export_and_register(result: TrainingResult, registry: Registry, model_name: str, data: JobData,
                        lineage: dict[str, Any], activate: bool, variants: tuple[str, ...] = ()) -> VersionInfo:
    """Export (checked against torch on the dataset's real val images), write the report, register.

    ``lineage`` is merged into the manifest's ``source`` (e.g. job_id); the base, dataset id and
    spec are always recorded. ``variants`` ("fp16", "int8") are built beside fp32 and kept only when
    they pass their accuracy gate on the val split (trainer/publish/variants.py).
    """
    pre = result.preprocessing
    pixels = result.check_pixels
    if pixels is None or len(pixels) == 0:
        pixels = data.split("val", pre).eval[:CHECK_IMAGES]
    check_batch = normalize(pixels[:CHECK_IMAGES], pre)
    with tempfile.TemporaryDirectory(prefix="tuneserve-publish-") as tmp_name:
        tmp = Path(tmp_name)
        export = export_onnx(result.model, pre.crop, tmp / "model.onnx", check_batch, ood=result.ood)
        report_files = write_report(result, tmp / "report")
        step("report")  # the progress tracker's export steps (trainer/progress/steps.py)
        torch.save(torch_payload_from(result), tmp / TORCH_FILE)
        step("weights")
        extra = {name: tmp / "report" / name for name in report_files}
        extra[TORCH_FILE] = tmp / TORCH_FILE
        cam_files = [f.name for f in (export.cam_file, export.ood_file) if f is not None]
        extra.update({name: tmp / name for name in cam_files})
        built = _build_variants(tmp / "model.onnx", tmp, data, pre, variants, result.labels) if variants else {}
        step("variants")
        extra.update({v.file: tmp / v.file for v in built.values()})
        metrics = dict(result.metrics)
        metrics.update({"export_max_abs_logit_diff": export.max_abs_diff, "export_check_images": export.images_checked})
        if export.max_abs_score_diff is not None:
            metrics["export_max_abs_ood_score_diff"] = export.max_abs_score_diff
        source = {
            "kind": "fine_tune", "base": result.base, "dataset_id": data.id,
            "dataset_name": getattr(data.dataset, "name", ""), "spec": result.spec.model_dump(mode="json"),
            **lineage,
        }
        manifest = Manifest(
            name=model_name, labels=result.labels, preprocessing=pre, backbone=result.backbone, source=source,
            metrics=metrics, temperature=result.temperature, files=[*report_files, TORCH_FILE, *cam_files],
            variants=built,
            cam=CamOutput(weights=export.cam_file.name) if export.cam_file else None,
            ood=result.ood.summary() if result.ood is not None else None, selective=result.selective,
        )
        extra[CARD_FILE] = write_card(manifest, tmp / "report" / "report.json", data, tmp / CARD_FILE)
        manifest.files.append(CARD_FILE)
        info = registry.register(manifest, tmp / "model.onnx", extra_files=extra, activate=activate)
    log.info("registered %s version %d (val acc %.4f, export diff %.1e)", model_name, info.version,
             metrics.get("val_accuracy", float("nan")), export.max_abs_diff)
    return info


def write_card(manifest: Manifest, report_file: Path, data: JobData, dest: Path) -> Path:
    """``card.json`` (models/card.py) from the manifest, the report and the dataset's own report."""
    report = json.loads(report_file.read_text(encoding="utf-8"))
    dataset_report = getattr(data.dataset, "report", None)  # a stored Dataset; tests may pass a bare one
    dataset = dataset_report() if callable(dataset_report) else None
    dest.write_text(json.dumps(model_card(manifest, report, dataset), indent=1), encoding="utf-8")
    return dest


def _build_variants(fp32: Path, out_dir: Path, data: JobData, pre: Preprocessing,
                    kinds: tuple[str, ...], labels: list[str]) -> dict[str, Variant]:
    """fp16/int8 files calibrated on training images and gated on the val and test splits."""
    calib = normalize(data.split("train", pre).eval[:CALIBRATION_IMAGES], pre).numpy()
    val = data.split("val", pre)
    to_model = torch.tensor([labels.index(c) for c in data.classes])  # the model's order may be the served one
    test = None
    if data.has("test"):  # held-out photos too: the gate must hold beyond the split used to choose epochs
        held = data.split("test", pre)
        test = (normalize(held.eval, pre).numpy(), to_model[held.labels].numpy())
    return build_variants(fp32, out_dir, calib, normalize(val.eval, pre).numpy(), to_model[val.labels].numpy(), kinds,
                          test=test)


def torch_payload_from(result: TrainingResult) -> dict[str, Any]:
    """``model.pt``: what a later run needs to continue from this version (see model_source)."""
    shell = Backbone(result.backbone, result.model, result.preprocessing, 0, "")
    return torch_payload(shell, result.labels)


def build_variant_kinds(settings: Settings) -> tuple[str, ...]:
    """The variants (``build_variants`` setting) a job builds beside fp32."""
    return tuple(v.strip() for v in settings.build_variants.split(",") if v.strip())


def version_of_job(registry: Registry, name: str, job_id: str) -> VersionInfo | None:
    """The version a previous attempt of this job already registered (its worker died after that)."""
    if not registry.exists(name):
        return None
    return next((v for v in registry.versions(name) if v.manifest.source.get("job_id") == job_id), None)


def promote(registry: Registry, name: str, version: int, settings: Settings) -> None:
    """Make ``version`` the one served and tell every API process (pub/sub; they also poll)."""
    registry.activate(name, version)
    announce_promotion(broker_url(settings), name, version)


def keep_as_candidate(registry: Registry, name: str, version: int) -> None:
    """Keep ``version`` registered but not served (it can still be activated by hand)."""
    registry.set_stage(name, version, "candidate")


# ------------------------------------------------------------------------------ the one publish path
Via = Literal["job", "search", "cli", "bootstrap"]


@dataclass(frozen=True)
class Request:
    """Who publishes under which name, and what they allow.

    Every manifest's ``source`` records ``via`` and ``job_id`` (None outside jobs), so versions
    published by a job and by ``tuneserve train`` carry the same fields.
    """

    name: str
    via: Via
    job_id: str | None = None
    replace_labels: bool = False  # publish a label set other than the one ``name`` serves (models/meaning.py)
    activate: bool = True  # False (``tuneserve train --no-activate``): kept as a candidate whatever the gate says
    lineage: dict[str, Any] = field(default_factory=dict)  # more ``source`` keys (a search's best trial)

    def source(self) -> dict[str, Any]:
        return {"via": self.via, "job_id": self.job_id, **self.lineage}


class Candidate(Protocol):
    """What :func:`publish` needs of a model that wants to be served."""

    @property
    def labels(self) -> list[str]: ...

    @property
    def pretrained(self) -> bool:
        """The bootstrapped model: the only one that may publish under the pretrained name."""

    @property
    def data(self) -> JobData | None:
        """The dataset the gate judges on (None: there is none, e.g. the ImageNet model)."""

    @property
    def warnings(self) -> list[str]: ...

    def in_order(self, labels: list[str]) -> Candidate:
        """The same model with its outputs in ``labels``' order (the order ``name`` serves)."""

    def register(self, registry: Registry, name: str, source: dict[str, Any], settings: Settings) -> VersionInfo:
        """Export, check and register the version, not activated."""


@dataclass(frozen=True)
class Trained:
    """A fine-tuned model (trainer/run/engine.py's result) with the dataset it was trained on."""

    result: TrainingResult
    dataset: JobData
    pretrained = False

    @property
    def labels(self) -> list[str]:
        return list(self.result.labels)

    @property
    def data(self) -> JobData:
        return self.dataset

    @property
    def warnings(self) -> list[str]:
        return list(self.result.metrics.get("warnings", []))

    def in_order(self, labels: list[str]) -> Trained:
        return Trained(reorder_labels(self.result, labels), self.dataset)

    def register(self, registry: Registry, name: str, source: dict[str, Any], settings: Settings) -> VersionInfo:
        return export_and_register(self.result, registry, name, self.dataset, source, activate=False,
                                   variants=build_variant_kinds(settings))


def publish(candidate: Candidate, registry: Registry, request: Request, settings: Settings,
            tracker: ProgressTracker | None = None) -> dict[str, Any]:
    """Label check, registration (unless an earlier attempt of the job did it), the gate, then promote
    and announce or keep as candidate. Returns what a job's result records.

    The model name must keep its meaning: models/meaning.py raises LabelConflict (its message names
    the fix: a new model name or ``replace_labels``); the same labels in another order are mapped to
    the served order before export. ``tracker`` gets the export, evaluate and register stages
    (trainer/progress/tracker.py).
    """
    info = version_of_job(registry, request.name, request.job_id) if request.job_id else None
    if info is None:
        order = check_labels(registry, request.name, candidate.labels, request.replace_labels,
                             pretrained=candidate.pretrained)
        if order is not None and order != candidate.labels:
            log.info("%s: mapping the label order %s to the served order %s", request.name, candidate.labels, order)
            candidate = candidate.in_order(order)
        with timed(tracker, "export"):  # ONNX export, checks, report, variants, the copy into the registry
            info = candidate.register(registry, request.name, request.source(), settings)
    with timed(tracker, "evaluate"):
        verdict = _judge(registry, info, candidate, settings)
    decision = verdict.decision
    with timed(tracker, "register"):  # the version's registry stage: active (announced) or candidate
        if decision.promote and request.activate:
            promote(registry, request.name, info.version, settings)
        else:
            keep_as_candidate(registry, request.name, info.version)
    reason = decision.reason if request.activate else f"{decision.reason}; not activated (asked not to)"
    log.info("%s version %d: %s", request.name, info.version, reason)
    return {
        "model": request.name,
        "version": info.version,
        "promoted": decision.promote and request.activate,
        "reason": reason,
        "warnings": [w for w in (decision.warning, *candidate.warnings) if w],
        "evaluation": verdict.summary(),
        "metrics": dict(info.manifest.metrics),
        "ood": info.manifest.ood,  # the "none of these" threshold and its recall (trainer/calibrate/ood.py)
        # the risk-coverage curve, min_confidence (trainer/calibrate/selective.py)
        "selective": info.manifest.selective,
    }


def _judge(registry: Registry, info: VersionInfo, candidate: Candidate, settings: Settings) -> Verdict:
    if candidate.data is not None:
        return judge(registry, info, candidate.data, settings.promotion_tolerance)
    # The pretrained model has no dataset here; its export was checked against torch instead.
    decision = Decision(True, "pretrained model: no held-out dataset to judge it on (its export was checked "
                              "against the torch model)")
    return Verdict(decision, "none", {}, None, None)


@contextmanager
def timed(tracker: ProgressTracker | None, stage: str) -> Iterator[None]:
    """A publishing stage, timed into the tracker when there is one."""
    started = time.perf_counter()
    if tracker is None:
        yield
        return
    tracker.start(stage, 1)
    with reporting(tracker.step_done):  # the steps inside (the export's), so its progress moves inside
        yield
    tracker.unit_done(time.perf_counter() - started, force=True)
