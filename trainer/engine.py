"""fine_tune(): transfer learning from a pretrained backbone, resumable, cancellable, calibrated.

A run is a plan of stages:

* ``linear``  - the backbone is frozen; its features are computed once and only the head trains on
  them (an epoch costs milliseconds);
* ``finetune`` - every layer trains (backbone at ``lr * backbone_lr_scale``), starting from the
  probe's head (LP-FT: a random head would wreck the pretrained features in the first steps);
* ``gradual_k`` - the top k of K block groups (plus head) train.

``linear`` mode is the probe alone; ``finetune`` and ``gradual`` run the probe first; ``auto`` runs
the probe, then fine-tunes only while that beats the probe's validation score, and keeps the best.
Every stage ends with its best weights restored; a checkpoint is written after every epoch.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from core.jobspec import TrainSpec
from models import Registry
from models.manifest import Preprocessing
from trainer.backbones import Backbone
from trainer.calibration import calibrate, calibration_metrics
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.data import CachedSplit, load_split
from trainer.features import cached_features
from trainer.loops import (
    AugmentedPixels,
    DeviceCropLoader,
    EpochStats,
    predict,
    train_features_epoch,
    train_images_epoch,
    val_loss_acc,
)
from trainer.lr_finder import lr_range_test
from trainer.model_source import load_base
from trainer.schedulers import build_scheduler, is_per_epoch
from trainer.transforms import batch_mix, train_preset

if TYPE_CHECKING:
    from trainer.data import DatasetLike

log = logging.getLogger(__name__)

AUTO_FINETUNE_PATIENCE = 2


class Cancelled(Exception):
    """should_stop() returned True; the last completed epoch's checkpoint is kept."""


class Pruned(Exception):
    """Raised by an on_epoch_end callback (e.g. ASHA) to end an unpromising run early."""


class TrainingError(ValueError):
    """The data or spec cannot produce a model (no validation split, one class...)."""


@dataclass
class EpochMetrics:
    epoch: int
    epochs: int
    stage: str
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    images_per_s: float
    elapsed_s: float
    eta_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SplitOutput:
    """Calibrated-model outputs on one split, kept for the report."""

    logits: torch.Tensor  # raw (before temperature)
    labels: torch.Tensor
    paths: list[str]


@dataclass
class TrainingResult:
    model: nn.Module
    labels: list[str]
    preprocessing: Preprocessing
    temperature: float
    metrics: dict[str, Any]
    history: list[EpochMetrics]
    spec: TrainSpec
    backbone: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, SplitOutput] = field(default_factory=dict)  # "val", "test"
    check_pixels: torch.Tensor | None = None  # real val crops (uint8) to check the ONNX export on


@dataclass
class Stage:
    name: str  # "linear" | "finetune" | "gradual_1".. "gradual_K"
    epochs: int
    unfrozen: float = 1.0  # fraction of backbone block groups that train (image stages)

    @property
    def on_features(self) -> bool:
        return self.name == "linear"


@dataclass
class Best:
    """A score and the weights that got it. ``head_only``: backbone equals the base's weights."""

    loss: float = math.inf
    acc: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None
    head_only: bool = False


def plan_stages(spec: TrainSpec) -> list[Stage]:
    probe = Stage("linear", spec.probe_epochs)
    if spec.mode == "linear":
        return [probe]
    if spec.mode == "gradual":
        k = spec.gradual_stages
        per = max(1, spec.max_epochs // k)
        return [probe] + [Stage(f"gradual_{i}", per, i / k) for i in range(1, k + 1)]
    return [probe, Stage("finetune", spec.max_epochs)]


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but no CUDA GPU is usable here; use 'auto' or 'cpu'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _epoch_seed(seed: int, stage: int, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}/{stage}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _spec_fingerprint(spec: TrainSpec, dataset_key: str) -> str:
    # num_workers and device do not change what is computed on CPU; a resume may use others.
    blob = spec.model_dump_json(exclude={"num_workers"}) + dataset_key
    return hashlib.sha256(blob.encode()).hexdigest()


def fine_tune(spec: TrainSpec, dataset: DatasetLike,
              on_progress: Callable[[EpochMetrics], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              checkpoint_dir: Path | None = None,
              on_epoch_end: Callable[[int, float], None] | None = None,
              registry: Registry | None = None,
              cache_dir: Path | None = None) -> TrainingResult:
    """Train per ``spec`` on ``dataset`` (train split; model selection on val; test reported only).

    ``checkpoint_dir``: a checkpoint is written there after every epoch and, when one is present,
    the run continues from it (same result as an uninterrupted run on CPU). ``cache_dir`` holds the
    decoded-pixel cache (default: ``checkpoint_dir/cache``). ``registry`` resolves a
    ``registry:<model>:<version>`` base (default: the settings' models folder).
    """
    run = _Run(spec, dataset, on_progress, should_stop, checkpoint_dir, on_epoch_end, registry,
               cache_dir if cache_dir is not None else (checkpoint_dir / "cache" if checkpoint_dir else None))
    return run.execute()


class _Run:
    def __init__(self, spec: TrainSpec, dataset: DatasetLike,
                 on_progress: Callable[[EpochMetrics], None] | None,
                 should_stop: Callable[[], bool] | None, checkpoint_dir: Path | None,
                 on_epoch_end: Callable[[int, float], None] | None, registry: Registry | None,
                 cache_dir: Path | None) -> None:
        self.spec, self.dataset = spec, dataset
        self.on_progress, self.should_stop, self.on_epoch_end = on_progress, should_stop, on_epoch_end
        self.checkpoint_dir, self.registry, self.cache_dir = checkpoint_dir, registry, cache_dir
        self.device = resolve_device(spec.device)
        self.stages = plan_stages(spec)
        self.total_epochs = sum(s.epochs for s in self.stages)
        self.history: list[EpochMetrics] = []
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.maximize = spec.early_stopping.metric == "val_accuracy"
        self.epoch_seconds: dict[str, list[float]] = {}
        self.images_per_s: list[float] = []

    # ------------------------------------------------------------------ setup
    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("training cancelled")

    def _setup(self) -> None:
        spec, dataset = self.spec, self.dataset
        self.labels = list(dataset.classes)
        if len(self.labels) < 2:
            raise TrainingError(f"need at least 2 classes to train a classifier, got {self.labels}")
        torch.manual_seed(spec.seed)
        self.backbone, self.base_lineage = load_base(spec.base, spec.registry_base(), self.labels, self.registry)
        if self.base_lineage.get("head") != "kept":
            torch.manual_seed(spec.seed)  # the new head's init must not depend on what was built before
            self.backbone.classifier().reset_parameters()
        self.model = self.backbone.model.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.pre = self.backbone.preprocessing
        self.base_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        needs_images = any(not s.on_features for s in self.stages)
        self.train_split = load_split(dataset, "train", self.pre, with_train=needs_images, cache_dir=self.cache_dir)
        self.val_split = load_split(dataset, "val", self.pre, cache_dir=self.cache_dir)
        if len(self.train_split) == 0:
            raise TrainingError("the dataset has no training images (split 'train' is empty)")
        if len(self.val_split) == 0:
            raise TrainingError("the dataset has no validation images (split 'val' is empty); "
                                "re-upload it without a split so the store makes one, or add a val/ folder")
        self.dataset_key = self.train_split.key + self.val_split.key
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
        self.lr: float | None = spec.lr if isinstance(spec.lr, float) else None

    def _workers(self) -> int:
        if multiprocessing.current_process().daemon:
            return 0  # e.g. a Celery prefork child: daemonic processes may not start DataLoader workers
        if isinstance(self.spec.num_workers, int):
            return self.spec.num_workers
        # On CPU the augmentation costs ~1% of a train step, and workers would steal the cores.
        return 0 if self.device.type == "cpu" else min(8, os.cpu_count() or 1)

    # ------------------------------------------------------------------ state
    def _head(self) -> nn.Linear:
        return self.backbone.classifier()

    def _head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self._head().state_dict().items()}

    def _snapshot(self, stage: Stage) -> tuple[dict[str, torch.Tensor], bool]:
        if stage.on_features:
            return self._head_state(), True
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}, False

    def _restore(self, best: Best) -> None:
        if best.state is None:
            return
        if best.head_only:
            self.model.load_state_dict(self.base_state)
            self._head().load_state_dict(best.state)
        else:
            self.model.load_state_dict(best.state)

    def _improved(self, loss: float, acc: float, best: Best) -> bool:
        delta = self.spec.early_stopping.min_delta
        if self.maximize:
            if acc > best.acc + delta:
                return True
            return delta == 0 and acc == best.acc and loss < best.loss  # tie: lower loss wins
        return loss < best.loss - delta

    # ------------------------------------------------------------------ main
    def execute(self) -> TrainingResult:
        self._setup()
        resume = self._load_resume()
        first = resume["stage_index"] if resume else 0
        self.overall = resume["overall"] if resume else Best()
        for index in range(first, len(self.stages)):
            self._run_stage(index, self.stages[index], resume if index == first else None)
        self._restore(self.overall)
        return self._finish()

    def _load_resume(self) -> dict[str, Any] | None:
        state = load_checkpoint(self.checkpoint_dir)
        if state is None:
            return None
        if state.get("fingerprint") != _spec_fingerprint(self.spec, self.dataset_key):
            log.warning("checkpoint in %s is from another spec or dataset; starting fresh", self.checkpoint_dir)
            return None
        if state.get("model_head_only"):
            self._head().load_state_dict(state["model"])  # probe stage: the backbone is still the base's
        else:
            self.model.load_state_dict(state["model"])
        self.history = [EpochMetrics(**h) for h in state["history"]]
        self.elapsed_before = float(state["elapsed_s"])
        self.lr = state["lr"]
        log.info("resuming from stage %d epoch %d", state["stage_index"], state["epoch"])
        return state

    def _save(self, index: int, epoch: int, stage_best: Best, bad: int, optimizer: Any, scheduler: Any,
              ema: Any, done: bool) -> None:
        if self.checkpoint_dir is None:
            return
        on_features = self.stages[index].on_features
        save_checkpoint(self.checkpoint_dir, {
            "fingerprint": _spec_fingerprint(self.spec, self.dataset_key),
            "stage_index": index, "epoch": epoch, "stage_done": done,
            # During the probe only the head changes: saving just it keeps per-epoch checkpoints tiny.
            "model": self._head().state_dict() if on_features else self.model.state_dict(),
            "model_head_only": on_features, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "stage_best": stage_best, "overall": self.overall, "bad_epochs": bad,
            "history": [h.as_dict() for h in self.history], "elapsed_s": self._elapsed(), "lr": self.lr,
        })

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    # ------------------------------------------------------------------ stages
    def _run_stage(self, index: int, stage: Stage, resume: dict[str, Any] | None) -> None:
        if resume is not None and resume["stage_done"]:
            return
        if stage.on_features:
            self._prepare_features()
            if self.lr is None:
                self.lr = self._find_lr()
        elif self.lr is None:
            self.lr = 1e-3
        optimizer = self._optimizer(stage)
        loader = None if stage.on_features else self._loader()
        steps = math.ceil(len(self.train_feats) / self.spec.batch_size) if stage.on_features else len(loader)  # type: ignore[arg-type]
        scheduler = build_scheduler(self.spec.scheduler, optimizer, steps, stage.epochs,
                                    self.spec.warmup_epochs, self.maximize)
        ema = self._ema(steps) if self.spec.ema and not stage.on_features else None
        start_epoch, bad = 0, 0
        # auto: fine-tuning must beat the probe; every other stage starts its own comparison.
        stage_best = copy.copy(self.overall) if self._compare_with_overall(stage) else Best()
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if ema is not None and resume["ema"] is not None:
                ema.load_state_dict(resume["ema"])
            start_epoch, bad, stage_best = resume["epoch"], resume["bad_epochs"], resume["stage_best"]
        mix = batch_mix(self.spec.augment, len(self.labels)) if not stage.on_features else None
        for epoch in range(start_epoch, stage.epochs):
            seed = _epoch_seed(self.spec.seed, index, epoch)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            if stage.on_features:
                stats = train_features_epoch(self._head(), self.train_feats, self.train_feat_labels, optimizer,
                                             scheduler, self.loss_fn, self.spec.batch_size, gen, self.check)
                val_logits = self._eval_head()
            else:
                assert loader is not None
                loader.generator.manual_seed(seed)  # type: ignore[union-attr]  # shuffling + worker seeds
                stats = train_images_epoch(self.model, loader, self.pre, self.device, optimizer, scheduler,
                                           self.loss_fn, self._mixer(mix), self._set_modes(stage),
                                           (lambda: ema.update_parameters(self.model)) if ema else lambda: None,
                                           self.check)
                val_logits = self._eval_model(ema)
            val_loss, val_acc = val_loss_acc(val_logits, self.val_split.labels)
            if is_per_epoch(scheduler):
                scheduler.step(val_acc if self.maximize else val_loss)
            if self._improved(val_loss, val_acc, stage_best):
                state, head_only = self._snapshot(stage) if ema is None else self._ema_snapshot(ema)
                stage_best = Best(val_loss, val_acc, len(self.history) + 1, state, head_only)
                bad = 0
            else:
                bad += 1
            self._report(stage, stats, val_loss, val_acc, optimizer)
            stop = bad >= self._patience(stage)
            last = stop or epoch + 1 == stage.epochs
            if last:
                self._end_stage(stage_best)
            self._save(index, epoch + 1, stage_best, bad, optimizer, scheduler, ema, last)
            if self.on_epoch_end is not None:
                self.on_epoch_end(len(self.history), val_acc)
            if stop:
                log.info("stage %s: early stop after epoch %d (no improvement for %d epochs)",
                         stage.name, epoch + 1, bad)
                break

    def _patience(self, stage: Stage) -> int:
        """auto fine-tunes only while that helps: at most 2 epochs without beating the best so far."""
        patience = self.spec.early_stopping.patience
        return min(patience, AUTO_FINETUNE_PATIENCE) if self.spec.mode == "auto" and not stage.on_features else patience

    def _compare_with_overall(self, stage: Stage) -> bool:
        """Whether a stage must beat the best so far to count (else it starts its own comparison).

        auto: fine-tuning must beat the probe. gradual: later unfreezing steps must beat earlier ones.
        finetune and gradual_1 start fresh: the probe there only initialises the head (LP-FT).
        """
        if self.spec.mode == "auto" or stage.on_features:
            return True
        return self.spec.mode == "gradual" and stage.name != "gradual_1"

    def _end_stage(self, stage_best: Best) -> None:
        """Restore the stage's best weights; they are the run's best (see _compare_with_overall)."""
        self._restore(stage_best)
        self.overall = stage_best

    def _report(self, stage: Stage, stats: EpochStats, val_loss: float, val_acc: float, optimizer: Any) -> None:
        self.epoch_seconds.setdefault(stage.name, []).append(stats.seconds)
        if not stage.on_features:
            self.images_per_s.append(stats.images_per_s)
        metrics = EpochMetrics(
            epoch=len(self.history) + 1, epochs=self.total_epochs, stage=stage.name,
            train_loss=stats.loss, val_loss=val_loss, val_accuracy=val_acc,
            lr=float(optimizer.param_groups[-1]["lr"]), images_per_s=stats.images_per_s,
            elapsed_s=self._elapsed(), eta_s=self._eta(stage),
        )
        self.history.append(metrics)
        log.info("epoch %d/%d %s: train loss %.4f val loss %.4f val acc %.4f", metrics.epoch, metrics.epochs,
                 stage.name, stats.loss, val_loss, val_acc)
        if self.on_progress is not None:
            self.on_progress(metrics)

    def _eta(self, stage: Stage) -> float:
        """Remaining planned epochs times the mean epoch time of their kind (early stopping may cut it)."""
        done = len(self.history) + 1
        remaining = 0.0
        counted = 0
        for s in self.stages:
            for _ in range(s.epochs):
                counted += 1
                if counted <= done:
                    continue
                times = self.epoch_seconds.get(s.name) or self.epoch_seconds.get(stage.name, [0.0])
                remaining += sum(times) / len(times)
        return remaining

    # ------------------------------------------------------------------ features stage
    def _prepare_features(self) -> None:
        if hasattr(self, "train_feats"):
            return
        head = self._head().to(self.device)
        # Features come from the base weights (the backbone is frozen in this stage).
        key = self.spec.base
        flip = self.spec.augment in ("standard", "strong")  # frozen features: the mirror is the one cheap view
        center = cached_features(key, self.model, head, self.train_split, self.pre, self.device,
                                 should_stop=self.check)
        self.train_feats = torch.cat([center, cached_features(key, self.model, head, self.train_split, self.pre,
                                                              self.device, flip=True, should_stop=self.check)]) \
            if flip else center
        self.train_feat_labels = torch.cat([self.train_split.labels] * (2 if flip else 1))
        self.val_feats = cached_features(key, self.model, head, self.val_split, self.pre, self.device,
                                         should_stop=self.check)
        head.to("cpu")
        self.train_feats_cpu = True

    def _eval_head(self) -> torch.Tensor:
        head = self._head()
        head.eval()
        with torch.no_grad():
            return head(self.val_feats).float()

    def _find_lr(self) -> float:
        head = self._head().to("cpu")
        return lr_range_test(head, self.train_feats, self.train_feat_labels,
                             lambda params, lr: self._make_optimizer([{"params": params, "lr": lr}]),
                             self.loss_fn, self.spec.batch_size, self.spec.seed)

    # ------------------------------------------------------------------ image stages
    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        assert self.lr is not None
        head = self._head()
        if stage.on_features:
            head.to("cpu")  # features live on the CPU; a 2-class head is faster there than a launch
            return self._make_optimizer([{"params": list(head.parameters()), "lr": self.lr}])
        self.model.to(self.device)
        trainable = set(self._trainable_backbone(stage))
        for p in self.backbone.backbone_parameters():
            p.requires_grad_(id(p) in trainable)
        for p in head.parameters():
            p.requires_grad_(True)
        backbone_params = [p for p in self.backbone.backbone_parameters() if id(p) in trainable]
        groups = [{"params": backbone_params, "lr": self.lr * self.spec.backbone_lr_scale},
                  {"params": list(head.parameters()), "lr": self.lr}]
        return self._make_optimizer([g for g in groups if g["params"]])

    def _make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        spec = self.spec
        if spec.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, nesterov=True,
                                   weight_decay=spec.weight_decay)
        if spec.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=spec.weight_decay)
        raise TrainingError(f"unknown optimizer {spec.optimizer!r}; choose one of sgd, adamw")

    def _trainable_backbone(self, stage: Stage) -> set[int]:
        groups = block_groups(self.backbone)
        keep = max(1, math.ceil(stage.unfrozen * len(groups)))
        return {id(p) for g in groups[len(groups) - keep:] for p in g.parameters()}

    def _set_modes(self, stage: Stage) -> Callable[[nn.Module], None]:
        freeze_bn = self.spec.freeze_bn
        trainable = self._trainable_backbone(stage)

        def prepare(model: nn.Module) -> None:
            model.train()
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters())
                    if freeze_bn or not params or not all(id(p) in trainable for p in params):
                        module.eval()  # frozen layers (and all BN with freeze_bn) keep ImageNet statistics
        return prepare

    def _loader(self) -> DataLoader[Any] | DeviceCropLoader:
        assert self.train_split.train is not None
        drop = len(self.train_split) > self.spec.batch_size and not self.spec.freeze_bn
        if self.device.type == "cuda" and self.spec.augment in ("none", "light") and not isinstance(
                self.spec.num_workers, int):
            return DeviceCropLoader(self.train_split.train.to(self.device), self.train_split.labels.to(self.device),
                                    self.spec.batch_size, self.pre.crop, self.spec.augment == "light",
                                    torch.Generator(), drop)
        data = AugmentedPixels(self.train_split.train, self.train_split.labels,
                               train_preset(self.spec.augment, self.pre.crop))
        workers = self._workers()
        drop_last = len(data) > self.spec.batch_size and not self.spec.freeze_bn
        return DataLoader(data, batch_size=self.spec.batch_size, shuffle=True, num_workers=workers,
                          generator=torch.Generator(), drop_last=drop_last,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          prefetch_factor=4 if workers else None)

    def _mixer(self, mix: Any) -> Any:
        if mix is None:
            return None

        def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return mix(x, y)  # type: ignore[no-any-return]
        return apply

    def _ema(self, steps_per_epoch: int) -> AveragedModel:
        # Average over about one epoch of steps: short runs on small data have few steps.
        decay = min(0.999, max(0.5, 1.0 - 1.0 / max(1, steps_per_epoch)))
        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def _ema_snapshot(self, ema: AveragedModel) -> tuple[dict[str, torch.Tensor], bool]:
        inner = ema.module
        return {k: v.detach().clone() for k, v in inner.state_dict().items()}, False

    def _eval_model(self, ema: AveragedModel | None) -> torch.Tensor:
        model = ema.module if ema is not None else self.model
        return predict(model, self.val_split.eval, self.pre, self.device, check=self.check)

    # ------------------------------------------------------------------ finish
    def _final_logits(self, split: CachedSplit) -> torch.Tensor:
        """Logits of the final model; through cached features when only the head changed (same numbers)."""
        if self.overall.head_only and hasattr(self, "train_feats"):
            head = self._head().to(self.device)
            feats = cached_features(self.spec.base, self.model, head, split, self.pre, self.device)
            head.to("cpu")
            with torch.no_grad():
                return head.eval()(feats).float()
        return predict(self.model, split.eval, self.pre, self.device)

    def _finish(self) -> TrainingResult:
        self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        val_logits = self._final_logits(self.val_split)
        val_labels = self.val_split.labels
        calibration = calibrate(val_logits, val_labels)
        temperature = calibration.temperature
        outputs = {"val": SplitOutput(val_logits, val_labels, self.val_split.paths)}
        val_loss, val_acc = val_loss_acc(val_logits, val_labels)
        metrics: dict[str, Any] = {
            "val_accuracy": val_acc, "val_loss": val_loss,
            "epochs_run": len(self.history), "best_epoch": self.overall.epoch,
            "best_stage": self.history[self.overall.epoch - 1].stage if self.overall.epoch else "",
            "wall_s": self._elapsed(),
            "images_per_s": (sum(self.images_per_s) / len(self.images_per_s)) if self.images_per_s else 0.0,
            "train_images": len(self.train_split), "val_images": len(self.val_split), "lr": self.lr,
        }
        test_split = load_split(self.dataset, "test", self.pre, cache_dir=self.cache_dir)
        if len(test_split):
            test_logits = self._final_logits(test_split)
            outputs["test"] = SplitOutput(test_logits, test_split.labels, test_split.paths)
            metrics["test_loss"], metrics["test_accuracy"] = val_loss_acc(test_logits, test_split.labels)
            metrics["test_images"] = len(test_split)
        metrics.update(calibration_metrics(calibration, outputs))
        log.info("done: val acc %.4f (best epoch %d), %s; ECE on %s %.4f -> %.4f", val_acc, self.overall.epoch,
                 calibration.reason, metrics["ece_split"], metrics["ece_before"], metrics["ece_after"])
        return TrainingResult(
            model=self.model.cpu().eval(), labels=self.labels, preprocessing=self.pre, temperature=temperature,
            metrics=metrics, history=self.history, spec=self.spec, backbone=self.backbone.name,
            base=self.base_lineage, outputs=outputs, check_pixels=self.val_split.eval[:16].clone(),
        )


def block_groups(backbone: Backbone) -> list[nn.Module]:
    """Backbone modules with parameters in forward order, one level into containers (stages, blocks).

    ``gradual`` unfreezes these from the top. Registration order is forward order for the
    catalogue's architectures (timm EfficientNet, torchvision ResNet/MobileNet/ConvNeXt).
    """
    head = backbone.classifier()
    groups: list[nn.Module] = []
    for child in backbone.model.children():
        if child is head or any(m is head for m in child.modules()):
            inner = [c for c in child.children() if c is not head and not any(m is head for m in c.modules())]
            groups.extend(c for c in inner if any(True for _ in c.parameters()))
            continue
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 1:
            groups.extend(c for c in child if any(True for _ in c.parameters()))
        elif any(True for _ in child.parameters()):
            groups.append(child)
    return groups
