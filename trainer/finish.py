"""The end of a run: the restored best model calibrated, measured on val (and test), and its metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from core.weak_validation import weak_split_warning
from trainer.calibration import calibrate, calibration_metrics
from trainer.data import CachedSplit, load_split
from trainer.features import cached_features
from trainer.loops import predict, val_loss_acc
from trainer.result import SplitOutput, TrainingResult
from trainer.run_state import RunState

log = logging.getLogger(__name__)


def final_logits(run: RunState, split: CachedSplit) -> torch.Tensor:
    """Logits of the final model; through cached features when only the head changed (same numbers)."""
    if run.overall.head_only and run.features is not None:
        head = run.backbone.classifier().to(run.device)
        feats = cached_features(run.spec.base, run.model, head, split, run.pre, run.device)
        head.to("cpu")
        with torch.no_grad():
            logits: torch.Tensor = head.eval()(feats).float()
            return logits
    return predict(run.model, split.eval, run.pre, run.device)


def finish_run(run: RunState) -> TrainingResult:
    """Calibrate the restored best model, measure it on val (and test), and say how the run went."""
    run.model.to(run.device).eval()
    for p in run.model.parameters():
        p.requires_grad_(False)
    run.tracker.start("calibrate", 1)
    started = time.perf_counter()
    val_logits = final_logits(run, run.val_split)
    val_labels = run.val_split.labels
    calibration = calibrate(val_logits, val_labels)
    outputs = {"val": SplitOutput(val_logits, val_labels, run.val_split.paths)}
    val_loss, val_acc = val_loss_acc(val_logits, val_labels)
    discarded = [r for r in run.stage_records if not r["kept"]]
    metrics: dict[str, Any] = {
        "val_accuracy": val_acc, "val_loss": val_loss,
        "epochs_run": len(run.history), "best_epoch": run.overall.epoch,
        "best_stage": run.overall.stage,
        "best_stage_reason": "; ".join(r["reason"] for r in run.stage_records if r["stage"] == run.overall.stage)
        + "".join(f"; {r['reason']}" for r in discarded),
        "stages": run.stage_records,
        "wall_s": run.elapsed(),
        "images_per_s": (sum(run.images_per_s) / len(run.images_per_s)) if run.images_per_s else 0.0,
        "train_images": len(run.train_split), "val_images": len(run.val_split),
        "lr": run.probe_lr, "stage_lrs": dict(run.stage_lrs),
    }
    test_split = load_split(run.dataset, "test", run.pre, cache_dir=run.cache_dir)
    if len(test_split):
        test_logits = final_logits(run, test_split)
        outputs["test"] = SplitOutput(test_logits, test_split.labels, test_split.paths)
        metrics["test_loss"], metrics["test_accuracy"] = val_loss_acc(test_logits, test_split.labels)
        metrics["test_images"] = len(test_split)
    metrics.update(calibration_metrics(calibration, outputs))
    per_class = {name: int((val_labels == i).sum()) for i, name in enumerate(run.labels)}
    weak = weak_split_warning("val", per_class)
    metrics["warnings"] = [weak + " (the best epoch and stage were chosen on it)"] if weak else []
    if run.budget is not None:
        metrics["time_budget"] = run.budget.report()
        metrics["warnings"] += run.budget.warnings()
    run.tracker.unit_done(time.perf_counter() - started, force=True)
    log.info("done: val acc %.4f (best: %s epoch %d), %s; ECE on %s %.4f -> %.4f", val_acc, run.overall.stage,
             run.overall.epoch, calibration.reason, metrics["ece_split"], metrics["ece_before"],
             metrics["ece_after"])
    return TrainingResult(
        model=run.model.cpu().eval(), labels=run.labels, preprocessing=run.pre,
        temperature=calibration.temperature, metrics=metrics, history=run.history, spec=run.spec,
        backbone=run.backbone.name, base=run.base_lineage, outputs=outputs,
        check_pixels=run.val_split.eval[:16].clone(),
    )
