"""fine_tune(): transfer learning from a pretrained backbone, resumable, cancellable, calibrated.

A run is a plan of stages (trainer/run/stages.py): the linear probe on cached features, then, unless
``mode`` is ``linear``, fine-tuning (``finetune``, or ``gradual`` unfreezing steps). Every stage
ends with its best weights restored, and keeps them only when they beat the run's best on
validation (trainer/run/early_stopping.py), so the published weights are the best validated ones.
``auto`` fine-tunes only while that beats the probe. A checkpoint is written after every epoch
(trainer/run/checkpoint.py); the learning rate of each stage follows trainer/run/optim.py; an optional
time budget cuts fine-tuning (trainer/run/budget.py); the end of the run, calibration and metrics, is
trainer/run/finish.py (calibration: trainer/calibrate/calibration.py); what it returns is trainer/run/result.py.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from core.jobspec import TrainSpec
from models import Registry
from trainer.data.features import cached_features
from trainer.data.transforms import batch_mix
from trainer.progress import eta_plan, unit_cost
from trainer.progress.clocks import BatchClock, FeatureClock
from trainer.progress.tracker import EpochMetrics, ProgressTracker, progress_name, remaining_seconds
from trainer.run.budget import OverBudget
from trainer.run.checkpoint import load_checkpoint, save_checkpoint, spec_fingerprint
from trainer.run.early_stopping import Best, end_stage, improved, maximize, patience, stage_start, stop_reason
from trainer.run.finish import finish_run
from trainer.run.loops import (
    EpochStats,
    ema_model,
    predict,
    train_features_epoch,
    train_images_epoch,
    train_loader,
    val_loss_acc,
)
from trainer.run.lr_finder import lr_range_test
from trainer.run.optim import OptimizerError, image_stage_groups, make_optimizer, stage_lr
from trainer.run.result import Cancelled, Pruned, SplitOutput, TrainingError, TrainingResult, resolve_device
from trainer.run.run_state import Features, RunState, Setup, prepare
from trainer.run.schedulers import build_scheduler, is_per_epoch
from trainer.run.stages import Stage, block_groups, plan_stages, train_modes, trainable_backbone

if TYPE_CHECKING:
    from trainer.data.pixels import DatasetLike

log = logging.getLogger(__name__)

__all__ = ["Best", "Cancelled", "EpochMetrics", "Pruned", "SplitOutput", "Stage", "TrainingError",
           "TrainingResult", "block_groups", "fine_tune", "plan_stages", "resolve_device"]


def epoch_seed(seed: int, stage: int, epoch: int) -> int:
    digest = hashlib.sha256(f"{seed}/{stage}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def fine_tune(spec: TrainSpec, dataset: DatasetLike,
              on_progress: Callable[[EpochMetrics], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              checkpoint_dir: Path | None = None,
              on_epoch_end: Callable[[int, float], None] | None = None,
              registry: Registry | None = None,
              cache_dir: Path | None = None,
              progress: ProgressTracker | None = None) -> TrainingResult:
    """Train per ``spec`` on ``dataset`` (train split; model selection on val; test reported only).

    ``checkpoint_dir``: a checkpoint is written there after every epoch and, when one is present,
    the run continues from it (same result as an uninterrupted run on CPU). ``cache_dir`` holds the
    decoded-pixel cache (default: ``checkpoint_dir/cache``). ``registry`` resolves a
    ``registry:<model>:<version>`` base (default: the settings' models folder). ``progress``:
    the tracker that gets stage, batch and ETA updates (trainer/progress/tracker.py); a caller that goes on
    to publish plans its own stages on it first and calls ``finish()`` at the very end.
    """
    stages = plan_stages(spec)
    tracker = progress if progress is not None else ProgressTracker()
    book, key = tracker.book, eta_plan.book_key(spec)
    work = eta_plan.workload(spec, stages, dataset)
    eta_plan.plan_run(tracker, stages, spec, work, {progress_name(s.name): patience(spec, s) for s in stages})
    eta_plan.expect(tracker, work, book, key, "start")
    tracker.start(progress_name(stages[0].name), tracker.stages[progress_name(stages[0].name)].units)
    started = time.perf_counter()
    device = resolve_device(spec.device)
    cache_dir = cache_dir if cache_dir is not None else (checkpoint_dir / "cache" if checkpoint_dir else None)
    setup = prepare(spec, dataset, stages, registry, device, cache_dir,
                    on_model=lambda backbone: time_units(tracker, spec, stages, work, backbone, device))
    tracker.add_setup(time.perf_counter() - started)
    eta_plan.expect(tracker, work, book, key, "features")
    run = Run(**{f.name: getattr(setup, f.name) for f in fields(Setup)}, spec=spec, dataset=dataset, stages=stages,
              device=device, tracker=tracker, registry=registry, checkpoint_dir=checkpoint_dir, cache_dir=cache_dir,
              on_progress=on_progress, should_stop=should_stop, on_epoch_end=on_epoch_end, work=work)
    return run.execute()


def time_units(tracker: ProgressTracker, spec: TrainSpec, stages: list[Stage], work: eta_plan.Workload,
               backbone: Any, device: torch.device) -> None:
    """The forward pass and the probe's head step at today's cost (trainer/progress/unit_cost.py), before
    the photos are decoded: what is still to come is expected at them from here, not at priors."""
    tracker.yardstick_s = unit_cost.forward_s(backbone.model, backbone.preprocessing.crop, device)
    tracker.drift.clear()  # a resumed run: its earlier attempt's measurements were against another yardstick
    tracker.warmed.clear()
    tracker.drift_kind = None
    if any(s.on_features for s in stages):
        head = backbone.classifier()
        tracker.head_step_s = unit_cost.head_step_s(
            head.in_features, head.out_features, spec.batch_size,
            lambda params: make_optimizer(spec, [{"params": params, "lr": 1e-3}])) or tracker.head_step_s
    eta_plan.expect(tracker, work, tracker.book, eta_plan.book_key(spec), "model")


class Run(RunState):
    """One run: its state (trainer/run/run_state.py) and the steps; the rules live in the modules named above."""

    # ------------------------------------------------------------------ weights
    def _head(self) -> nn.Linear:
        return self.backbone.classifier()

    def _snapshot(self, stage: Stage, ema: AveragedModel | None) -> tuple[dict[str, torch.Tensor], bool]:
        if stage.on_features:
            return {k: v.detach().clone() for k, v in self._head().state_dict().items()}, True
        model = ema.module if ema is not None else self.model
        return {k: v.detach().clone() for k, v in model.state_dict().items()}, False

    def _restore(self, best: Best) -> None:
        if best.state is None:
            return
        if best.head_only:
            self.model.load_state_dict(self.base_state)
            self._head().load_state_dict(best.state)
        else:
            self.model.load_state_dict(best.state)

    # ------------------------------------------------------------------ main
    def execute(self) -> TrainingResult:
        resume = self._load_resume()
        first = resume["stage_index"] if resume else 0
        if resume:  # progress continues from the checkpoint's position
            self.overall = resume["overall"]
            tracker = self.tracker
            tracker.resume_at([progress_name(s.name) for s in self.stages[:first]
                               if progress_name(s.name) != progress_name(self.stages[first].name)],
                              progress_name(self.stages[first].name), resume["epoch"])
        for index in range(first, len(self.stages)):
            self._run_stage(index, self.stages[index], resume if index == first else None)
        self._restore(self.overall)
        return finish_run(self)  # the caller writes the measured costs to the book (eta_plan.learn)

    def _load_resume(self) -> dict[str, Any] | None:
        state = load_checkpoint(self.checkpoint_dir)
        if state is None:
            return None
        if state.get("fingerprint") != spec_fingerprint(self.spec, self.dataset_key):
            log.warning("checkpoint in %s is from another spec or dataset; starting fresh", self.checkpoint_dir)
            return None
        if state.get("model_head_only"):
            self._head().load_state_dict(state["model"])  # probe stage: the backbone is still the base's
        else:
            self.model.load_state_dict(state["model"])
        self.history = [EpochMetrics(**h) for h in state["history"]]
        self.elapsed_before = float(state["elapsed_s"])
        self.probe_lr, self.stage_lrs = state["probe_lr"], dict(state["stage_lrs"])
        self.stage_records = list(state["stage_records"])
        log.info("resuming from stage %d epoch %d", state["stage_index"], state["epoch"])
        return state

    def _save(self, index: int, epoch: int, stage_best: Best, bad: int, optimizer: Any, scheduler: Any,
              ema: Any, done: bool) -> None:
        if self.checkpoint_dir is None:
            return
        on_features = self.stages[index].on_features
        save_checkpoint(self.checkpoint_dir, {
            "fingerprint": spec_fingerprint(self.spec, self.dataset_key),
            "stage_index": index, "epoch": epoch, "stage_done": done,
            # During the probe only the head changes: saving just it keeps per-epoch checkpoints tiny.
            "model": self._head().state_dict() if on_features else self.model.state_dict(),
            "model_head_only": on_features, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "stage_best": stage_best, "overall": self.overall, "bad_epochs": bad,
            "history": [h.as_dict() for h in self.history], "elapsed_s": self.elapsed(),
            "probe_lr": self.probe_lr, "stage_lrs": self.stage_lrs, "stage_records": self.stage_records,
        })

    # ------------------------------------------------------------------ stages
    def _stage_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        if stage.on_features:
            self._prepare_features()
            if self.probe_lr is None:
                self.probe_lr = self._find_lr() if self.spec.lr == "auto" else float(self.spec.lr)
        lr = self.stage_lrs.setdefault(stage.name, stage_lr(self.spec, stage, self.probe_lr))
        head = self._head()
        if stage.on_features:
            head.to("cpu")  # features live on the CPU; a 2-class head is faster there than a launch
            return self._optimizer([{"params": list(head.parameters()), "lr": lr}])
        self.model.to(self.device)
        trainable = trainable_backbone(self.backbone, stage)
        for p in self.backbone.backbone_parameters():
            p.requires_grad_(id(p) in trainable)
        for p in head.parameters():
            p.requires_grad_(True)
        backbone_params = [p for p in self.backbone.backbone_parameters() if id(p) in trainable]
        return self._optimizer(image_stage_groups(backbone_params, head, lr, self.spec.backbone_lr_scale))

    def _optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        try:
            return make_optimizer(self.spec, groups)
        except OptimizerError as exc:
            raise TrainingError(str(exc)) from exc

    def _run_stage(self, index: int, stage: Stage, resume: dict[str, Any] | None) -> None:
        if resume is not None and resume["stage_done"]:
            return
        if self.budget is not None and not stage.on_features:
            try:
                self.budget.before_stage(stage.name, stage.epochs)
            except OverBudget as over:
                return self._over_budget(stage, over)
        spec = self.spec
        name = progress_name(stage.name)
        if self.tracker.current != name:
            self.tracker.start(name, self.tracker.stages[name].units if name in self.tracker.stages else 1)
        started = time.perf_counter()
        optimizer = self._stage_optimizer(stage)
        self.tracker.add_setup(time.perf_counter() - started)  # feature extraction, the LR range test
        loader = None if stage.on_features else train_loader(self.train_split, spec, self.pre, self.device)
        steps = (math.ceil(len(self._prepare_features().train) / spec.batch_size) if loader is None
                 else len(loader))
        scheduler = build_scheduler(spec.scheduler, optimizer, steps, stage.epochs, spec.warmup_epochs,
                                    maximize(spec))
        ema = ema_model(self.model, steps) if spec.ema and not stage.on_features else None
        start_epoch, bad = 0, 0
        stage_best = stage_start(spec, stage, self.overall)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if ema is not None and resume["ema"] is not None:
                ema.load_state_dict(resume["ema"])
            start_epoch, bad, stage_best = resume["epoch"], resume["bad_epochs"], resume["stage_best"]
        mix = batch_mix(spec.augment, len(self.labels)) if not stage.on_features else None
        modes = train_modes(trainable_backbone(self.backbone, stage), spec.freeze_bn) if loader is not None else None
        try:
            self._epochs(index, stage, start_epoch, bad, stage_best, optimizer, scheduler, ema, loader, modes, mix,
                         steps)
        except OverBudget as over:
            self._over_budget(stage, over)

    def _epochs(self, index: int, stage: Stage, start_epoch: int, bad: int, stage_best: Best, optimizer: Any,
                scheduler: Any, ema: AveragedModel | None, loader: Any, modes: Any, mix: Any, steps: int) -> None:
        spec = self.spec
        for epoch in range(start_epoch, stage.epochs):
            seed = epoch_seed(spec.seed, index, epoch)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            clock = self._batch_clock(stage, epoch, steps)
            if stage.on_features:
                feats = self._prepare_features()
                stats = train_features_epoch(self._head(), feats.train, feats.train_labels, optimizer,
                                             scheduler, self.loss_fn, spec.batch_size, gen, clock)
                clock.tick()  # the last batch is done
                val_logits = self._eval_head()
            else:
                assert loader is not None and modes is not None
                loader.generator.manual_seed(seed)  # type: ignore[union-attr]  # shuffling + worker seeds
                stats = train_images_epoch(self.model, loader, self.pre, self.device, optimizer, scheduler,
                                           self.loss_fn, mix, modes,
                                           (lambda: ema.update_parameters(self.model)) if ema else lambda: None,
                                           clock)
                clock.tick()
                if self.budget is not None:  # an epoch shorter than the estimate's batches: estimate now
                    self._budget_check(stage, clock)
                val_logits = predict(ema.module if ema is not None else self.model, self.val_split.eval,
                                     self.pre, self.device, check=self.check)
            validation = clock.since_last()
            self.tracker.add_time(validation)  # validation: part of what an epoch costs
            if not stage.on_features and len(self.val_split):  # a forward pass, measured under today's load
                self.tracker.observe_speed("validation", validation / len(self.val_split))
            val_loss, val_acc = val_loss_acc(val_logits, self.val_split.labels)
            if is_per_epoch(scheduler):
                scheduler.step(val_acc if maximize(spec) else val_loss)
            better = improved(spec, val_loss, val_acc, stage_best)
            if better:
                state, head_only = self._snapshot(stage, ema)
                stage_best = Best(val_loss, val_acc, len(self.history) + 1, state, head_only, stage.name,
                                  val_logits.argmax(1).cpu())
                bad = 0
            else:
                bad += 1
            self.tracker.epoch_end(better, bad)  # the early-stopping model's input (trainer/progress/eta.py)
            self._report(stage, stats, val_loss, val_acc, optimizer)
            stop = bad >= patience(spec, stage)
            last = stop or epoch + 1 >= self.epoch_limits.get(stage.name, stage.epochs)
            if last:
                self.overall, record = end_stage(spec, stage, stage_best, self.overall, self.val_split.labels)
                self.stage_records.append(record)
                log.info("stage %s: %s", stage.name, record["reason"])
                self._restore(self.overall)
            self._save(index, epoch + 1, stage_best, bad, optimizer, scheduler, ema, last)
            if self.on_epoch_end is not None:
                self.on_epoch_end(len(self.history), val_acc)
            if stop:
                log.info("stage %s: early stop after epoch %d: %s", stage.name, epoch + 1,
                         stop_reason(spec, stage, bad))
            if last:
                break

    def _batch_clock(self, stage: Stage, epoch: int, batches: int) -> BatchClock:
        clock = BatchClock(self.tracker, self.check, stage.name, epoch, stage.epochs, batches)
        if self.budget is not None and not stage.on_features:
            clock.check = lambda: self._budget_check(stage, clock)
        return clock

    def _budget_check(self, stage: Stage, clock: BatchClock) -> None:
        """Cancel check, then, once per stage after its first timed batches, the budget's estimate."""
        self.check()
        assert self.budget is not None
        fit = self.budget.after_batch(stage.name, clock.batches, clock.batch, clock.mean_batch_s(),
                                      len(self.val_split), self.spec.batch_size, stage.epochs)
        if fit is not None:
            self.epoch_limits[stage.name] = fit
            log.warning("time budget: %s", self.budget.cuts[-1].reason)
            self.tracker.plan([(progress_name(stage.name), fit * clock.batches)])

    def _over_budget(self, stage: Stage, over: OverBudget) -> None:
        """A fine-tuning stage that does not fit: the best weights so far (the probe's) stay."""
        log.warning("time budget: %s", over.cut.reason)
        self._restore(self.overall)
        self.stage_records.append({"stage": stage.name, "kept": False, "reason": over.cut.reason,
                                   "best_val_accuracy": None, "best_val_loss": None, "best_epoch": None})
        self.tracker.plan([(progress_name(stage.name), 0)])

    def _report(self, stage: Stage, stats: EpochStats, val_loss: float, val_acc: float, optimizer: Any) -> None:
        self.epoch_seconds.setdefault(stage.name, []).append(stats.seconds)
        if not stage.on_features:
            self.images_per_s.append(stats.images_per_s)
        done = len(self.history) + 1
        metrics = EpochMetrics(
            epoch=done, epochs=self.total_epochs, stage=stage.name,
            train_loss=stats.loss, val_loss=val_loss, val_accuracy=val_acc,
            lr=float(optimizer.param_groups[-1]["lr"]), images_per_s=stats.images_per_s,
            elapsed_s=self.elapsed(),
            eta_s=remaining_seconds(self.stages, done, self.epoch_seconds, stage.name),
        )
        self.history.append(metrics)
        log.info("epoch %d/%d %s: train loss %.4f val loss %.4f val acc %.4f", metrics.epoch, metrics.epochs,
                 stage.name, stats.loss, val_loss, val_acc)
        if self.on_progress is not None:
            self.on_progress(metrics)

    # ------------------------------------------------------------------ features stage
    def _prepare_features(self) -> Features:
        if self.features is not None:
            return self.features
        head = self._head().to(self.device)
        # Features come from the base weights (the backbone is frozen in this stage).
        key = self.spec.base
        flip = self.spec.augment in ("standard", "strong")  # frozen features: the mirror is the one cheap view
        split, pre, device = self.train_split, self.pre, self.device
        clock = FeatureClock(self.tracker, self.check, [len(split)] * (2 if flip else 1) + [len(self.val_split)],
                             on_rate=self._expect_rates, expected_s=eta_plan.feature_image_s(
                                 self.tracker, self.tracker.book, eta_plan.book_key(self.spec)))
        started = time.perf_counter()
        center = cached_features(key, self.model, head, split, pre, device, should_stop=clock)
        train = torch.cat([center, cached_features(key, self.model, head, split, pre, device, flip=True,
                                                   should_stop=clock)]) if flip else center
        val = cached_features(key, self.model, head, self.val_split, pre, device, should_stop=clock)
        head.to("cpu")
        self.tracker.forward_s = clock.forward_s(time.perf_counter() - started) or self.tracker.forward_s
        if self.work is not None:
            eta_plan.expect(self.tracker, self.work, self.tracker.book, eta_plan.book_key(self.spec),
                            "trained")  # measured rates from here
        self.features = Features(train, torch.cat([split.labels] * (2 if flip else 1)), val)
        return self.features

    def _expect_rates(self) -> None:
        """The stages still to come at the forward pass measured so far (the feature extraction's batches)."""
        if self.work is not None:
            eta_plan.expect(self.tracker, self.work, self.tracker.book, eta_plan.book_key(self.spec), "trained")

    def _eval_head(self) -> torch.Tensor:
        head = self._head()
        head.eval()
        with torch.no_grad():
            return head(self._prepare_features().val).float()

    def _find_lr(self) -> float:
        head = self._head().to("cpu")
        feats = self._prepare_features()
        return lr_range_test(head, feats.train, feats.train_labels,
                             lambda params, lr: self._optimizer([{"params": params, "lr": lr}]),
                             self.loss_fn, self.spec.batch_size, self.spec.seed)
