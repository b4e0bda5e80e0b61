"""The end of a run: the restored best model calibrated, measured on val (and test), and its metrics;
its out-of-distribution score fitted (trainer/calibrate/ood.py) and its risk-coverage curve
(trainer/calibrate/selective.py)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch

from core.weak_validation import weak_split_warning
from trainer.calibrate.calibration import Calibration, calibrate, calibration_metrics
from trainer.calibrate.ood import MAX_BANK, OodScorer, choose_bank, fit_scorer, kept_share
from trainer.calibrate.selective import selective_summary
from trainer.data.features import cached_features, extract
from trainer.data.pixels import CachedSplit, load_split
from trainer.run.cross_fit import CrossFit, cross_fit_probe
from trainer.run.loops import predict, val_loss_acc
from trainer.run.result import SplitOutput, TrainingResult
from trainer.run.run_state import RunState

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


def _calibration(run: RunState, val_logits: torch.Tensor, val_labels: torch.Tensor,
                 weak: bool) -> tuple[Calibration, CrossFit | None]:
    """The temperature: on the val logits, or, when the probe won and val is weak, on every train+val
    photo's out-of-fold probe logits (trainer/run/cross_fit.py): a handful of val photos fit no temperature."""
    features = run.features
    if not (weak and run.overall.head_only and features is not None and run.probe_lr is not None):
        return calibrate(val_logits, val_labels), None
    n_train = len(run.train_split)  # the first n rows are the unflipped features
    feats = torch.cat([features.train[:n_train], features.val])
    labels = torch.cat([features.train_labels[:n_train], val_labels])
    cross = cross_fit_probe(run.spec, feats, labels, len(run.labels), run.probe_lr, run.overall.epoch)
    if cross is None:
        return calibrate(val_logits, val_labels), None
    fitted = calibrate(cross.logits, cross.labels)
    why = (f"fitted on {len(cross.labels)} out-of-fold train+val logits ({cross.folds}-fold cross-fitting of the "
           f"probe; val alone has {len(val_labels)} photos): {fitted.reason}")
    return dataclasses.replace(fitted, reason=why), cross


def final_features(run: RunState, split: CachedSplit, rows: np.ndarray | None = None) -> np.ndarray:
    """Pooled penultimate features (what enters the classifier) of the final model, rows of ``split``."""
    head = run.backbone.classifier().to(run.device)
    try:
        if run.overall.head_only and run.features is not None:  # the backbone is the base's: cached
            feats = cached_features(run.spec.base, run.model, head, split, run.pre, run.device)
            return (feats if rows is None else feats[torch.from_numpy(rows)]).numpy()
        pixels = split.eval if rows is None else split.eval[torch.from_numpy(rows)]
        return extract(run.model, head, pixels, run.pre, run.device, should_stop=run.check).numpy()
    finally:
        head.to("cpu")


def fit_ood(run: RunState, test_split: CachedSplit | None) -> OodScorer:
    """The k-NN score on (at most MAX_BANK) training photos, thresholded on val; test recall when there is one."""
    rows = choose_bank(run.train_split.labels.numpy(), MAX_BANK, run.spec.seed)
    scorer = fit_scorer(final_features(run, run.train_split, rows), final_features(run, run.val_split),
                        run.spec.ood_recall, fitted_on=f"{len(rows)} training photos")
    if test_split is not None and len(test_split):
        scorer.extra["test_recall"] = kept_share(scorer, final_features(run, test_split))
        scorer.extra["test_images"] = len(test_split)
    return scorer


def finish_run(run: RunState) -> TrainingResult:
    """Calibrate the restored best model, measure it on val (and test), and say how the run went."""
    run.model.to(run.device).eval()
    for p in run.model.parameters():
        p.requires_grad_(False)
    run.tracker.start("calibrate", 1)
    started = time.perf_counter()
    val_logits = final_logits(run, run.val_split)
    val_labels = run.val_split.labels
    _, first_acc = val_loss_acc(val_logits, val_labels)
    per_class = {name: int((val_labels == i).sum()) for i, name in enumerate(run.labels)}
    weak = weak_split_warning("val", per_class, first_acc)
    calibration, cross = _calibration(run, val_logits, val_labels, weak is not None)
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
    metrics["calibration_source"] = "cross_fit" if cross is not None else "val"
    if cross is not None:
        metrics["probe_cv_accuracy"], metrics["probe_cv_images"] = cross.accuracy, len(cross.labels)
    metrics["warnings"] = [weak + " (the best epoch and stage were chosen on it)"] if weak else []
    if run.budget is not None:
        metrics["time_budget"] = run.budget.report()
        metrics["warnings"] += run.budget.warnings()
    ood = fit_ood(run, test_split)
    selective, _ = selective_summary(outputs, calibration.temperature, run.spec.target_accuracy)
    if selective.get("reachable") is False:
        metrics["warnings"].append(
            f"target_accuracy {run.spec.target_accuracy} is not reached on validation at any confidence: "
            "the version has no default confidence floor (lower the target or add validation photos)")
    run.tracker.unit_done(time.perf_counter() - started, force=True)
    log.info("done: val acc %.4f (best: %s epoch %d), %s; ECE on %s %.4f -> %.4f", val_acc, run.overall.stage,
             run.overall.epoch, calibration.reason, metrics["ece_split"], metrics["ece_before"],
             metrics["ece_after"])
    return TrainingResult(
        model=run.model.cpu().eval(), labels=run.labels, preprocessing=run.pre,
        temperature=calibration.temperature, metrics=metrics, history=run.history, spec=run.spec,
        backbone=run.backbone.name, base=run.base_lineage, outputs=outputs,
        check_pixels=run.val_split.eval[:16].clone(), ood=ood, selective=selective,
    )
