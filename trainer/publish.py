"""Publishing: trained model -> checked ONNX + report + torch weights -> a registry version; then,
once the gate (trainer/promotion.py) has decided, activate and announce it or keep it as a candidate.

Nothing here judges a version: it does what the caller decided.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings
from models import Manifest, Registry, VersionInfo
from models.card import CARD_FILE, model_card
from models.manifest import CamOutput, Preprocessing, Variant
from trainer.data import normalize
from trainer.export import export_onnx
from trainer.job_data import JobData
from trainer.model_source import TORCH_FILE, torch_payload
from trainer.report import write_report
from transport.broker import broker_url
from transport.promotions import announce_promotion

if TYPE_CHECKING:
    from trainer.engine import TrainingResult

log = logging.getLogger(__name__)

CHECK_IMAGES = 16
CALIBRATION_IMAGES = 64


def export_and_register(result: TrainingResult, registry: Registry, model_name: str, data: JobData,
                        lineage: dict[str, Any], activate: bool, variants: tuple[str, ...] = ()) -> VersionInfo:
    """Export (checked against torch on the dataset's real val images), write the report, register.

    ``lineage`` is merged into the manifest's ``source`` (e.g. job_id); the base, dataset id and
    spec are always recorded. ``variants`` ("fp16", "int8") are built beside fp32 and kept only when
    they pass their accuracy gate on the val split (trainer/variants.py).
    """
    import torch

    pre = result.preprocessing
    pixels = result.check_pixels
    if pixels is None or len(pixels) == 0:
        pixels = data.split("val", pre).eval[:CHECK_IMAGES]
    check_batch = normalize(pixels[:CHECK_IMAGES], pre)
    with tempfile.TemporaryDirectory(prefix="tuneserve-publish-") as tmp_name:
        tmp = Path(tmp_name)
        export = export_onnx(result.model, pre.crop, tmp / "model.onnx", check_batch, ood=result.ood)
        report_files = write_report(result, tmp / "report")
        torch.save(torch_payload_from(result), tmp / TORCH_FILE)
        extra = {name: tmp / "report" / name for name in report_files}
        extra[TORCH_FILE] = tmp / TORCH_FILE
        cam_files = [f.name for f in (export.cam_file, export.ood_file) if f is not None]
        extra.update({name: tmp / name for name in cam_files})
        built = _build_variants(tmp / "model.onnx", tmp, data, pre, variants, result.labels) if variants else {}
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
    """fp16/int8 files calibrated on training images and gated on the val split."""
    import torch

    from trainer.variants import build_variants

    calib = normalize(data.split("train", pre).eval[:CALIBRATION_IMAGES], pre).numpy()
    val = data.split("val", pre)
    to_model = torch.tensor([labels.index(c) for c in data.classes])  # the model's order may be the served one
    return build_variants(fp32, out_dir, calib, normalize(val.eval, pre).numpy(), to_model[val.labels].numpy(), kinds)


def torch_payload_from(result: TrainingResult) -> dict[str, Any]:
    """``model.pt``: what a later run needs to continue from this version (see model_source)."""
    from trainer.backbones import Backbone

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
