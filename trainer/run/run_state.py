"""What a run is built from (:func:`prepare`) and the state it carries: typed, every field set when
the run is created, so the steps after training (trainer/run/finish.py) read named fields, not guesses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core.jobspec import TrainSpec
from models import Registry
from models.manifest import Preprocessing
from trainer.backbones import Backbone
from trainer.data.pixels import CachedSplit, load_split
from trainer.model_source import load_base
from trainer.progress.eta_plan import Workload
from trainer.progress.tracker import EpochMetrics, ProgressTracker
from trainer.run.budget import Budget
from trainer.run.early_stopping import Best
from trainer.run.result import Cancelled, TrainingError
from trainer.run.stages import Stage

if TYPE_CHECKING:
    from trainer.data.pixels import DatasetLike


@dataclass
class Setup:
    """The model and data a run starts from (built once, before its first stage)."""

    labels: list[str]
    backbone: Backbone
    base_lineage: dict[str, Any]  # where the weights came from (the manifest's ``source.base``)
    model: nn.Module
    pre: Preprocessing
    base_state: dict[str, torch.Tensor]  # the base weights: a head-only best is restored on top of them
    train_split: CachedSplit
    val_split: CachedSplit
    dataset_key: str  # the splits' content key (checkpoint fingerprint)
    loss_fn: nn.Module


@dataclass
class Features:
    """The frozen backbone's features of the train (with mirrored copies when augmenting) and val splits."""

    train: torch.Tensor
    train_labels: torch.Tensor
    val: torch.Tensor


def prepare(spec: TrainSpec, dataset: DatasetLike, stages: list[Stage], registry: Registry | None,
            device: torch.device, cache_dir: Path | None,
            on_model: Callable[[Backbone], None] | None = None) -> Setup:
    """Load the base (a new head unless a registered version's head fits) and the splits; refuse empty ones.
    ``on_model`` gets the built backbone before the photos are decoded (the ETA times it there)."""
    labels = list(dataset.classes)
    if len(labels) < 2:
        raise TrainingError(f"need at least 2 classes to train a classifier, got {labels}")
    torch.manual_seed(spec.seed)
    backbone, base_lineage = load_base(spec.base, spec.registry_base(), labels, registry)
    if base_lineage.get("head") != "kept":
        torch.manual_seed(spec.seed)  # the new head's init must not depend on what was built before
        backbone.classifier().reset_parameters()
    model = backbone.model.to(device).to(memory_format=torch.channels_last)
    pre = backbone.preprocessing
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if on_model is not None:
        on_model(backbone)
    needs_images = any(not s.on_features for s in stages)
    train_split = load_split(dataset, "train", pre, with_train=needs_images, cache_dir=cache_dir)
    val_split = load_split(dataset, "val", pre, cache_dir=cache_dir)
    if len(train_split) == 0:
        raise TrainingError("the dataset has no training images (split 'train' is empty)")
    if len(val_split) == 0:
        raise TrainingError("the dataset has no validation images (split 'val' is empty); "
                            "re-upload it without a split so the store makes one, or add a val/ folder")
    return Setup(labels, backbone, base_lineage, model, pre, base_state, train_split, val_split,
                 train_split.key + val_split.key, nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing))


@dataclass
class RunState(Setup):
    """One run's state: what it starts from (:class:`Setup`), what it was asked, what it measured so far."""

    spec: TrainSpec
    dataset: DatasetLike
    stages: list[Stage]
    device: torch.device
    tracker: ProgressTracker
    registry: Registry | None = None
    checkpoint_dir: Path | None = None
    cache_dir: Path | None = None
    on_progress: Callable[[EpochMetrics], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_epoch_end: Callable[[int, float], None] | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0  # seconds run before the checkpoint this run resumed from
    epoch_seconds: dict[str, list[float]] = field(default_factory=dict)
    images_per_s: list[float] = field(default_factory=list)
    stage_records: list[dict[str, Any]] = field(default_factory=list)
    stage_lrs: dict[str, float] = field(default_factory=dict)
    probe_lr: float | None = None
    overall: Best = field(default_factory=Best)  # the run's best validated weights so far
    features: Features | None = None  # set by the first stage on features
    epoch_limits: dict[str, int] = field(default_factory=dict)  # fine-tuning stages the budget shortened
    work: Workload | None = None  # what the run will do, for the ETA's expected costs (trainer/progress/eta_plan.py)
    budget: Budget | None = field(init=False)

    def __post_init__(self) -> None:
        self.budget = Budget(self.spec.time_budget_s, self.elapsed) if self.spec.time_budget_s is not None else None

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def check(self) -> None:
        """Raise Cancelled when the caller asked to stop (checked between batches)."""
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("training cancelled")
