"""Which epoch's weights are best, when a stage stops, and which stage's weights the run keeps.

Every stage keeps its own best (for early stopping); at the end of a stage its best replaces the
run's best only when it beats it on validation, so the weights published are the best validated
ones across stages (a fine-tuning stage that does worse than the probe is discarded, and the run
says so). ``auto`` mode goes further: fine-tuning must beat the probe from its first epoch, and
stops after ``AUTO_FINETUNE_PATIENCE`` epochs that do not.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from core.jobspec import TrainSpec
from trainer.run.stage_choice import describe, paired_comparison
from trainer.run.stages import Stage

AUTO_FINETUNE_PATIENCE = 2


@dataclass
class Best:
    """A score and the weights that got it. ``head_only``: backbone equals the base's weights."""

    loss: float = math.inf
    acc: float = -1.0
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None
    head_only: bool = False
    stage: str = ""
    val_pred: torch.Tensor | None = None  # predicted class per val photo (the paired comparison's input)


def maximize(spec: TrainSpec) -> bool:
    return spec.early_stopping.metric == "val_accuracy"


def improved(spec: TrainSpec, loss: float, acc: float, best: Best) -> bool:
    """Whether (loss, acc) beats ``best`` by more than min_delta (accuracy ties: lower loss wins)."""
    delta = spec.early_stopping.min_delta
    if maximize(spec):
        if acc > best.acc + delta:
            return True
        return delta == 0 and acc == best.acc and loss < best.loss
    return loss < best.loss - delta


def patience(spec: TrainSpec, stage: Stage) -> int:
    """auto fine-tunes only while that helps: at most 2 epochs without beating the best so far."""
    if spec.mode == "auto" and not stage.on_features:
        return min(spec.early_stopping.patience, AUTO_FINETUNE_PATIENCE)
    return spec.early_stopping.patience


def stop_reason(spec: TrainSpec, stage: Stage, bad: int) -> str:
    """Why a stage stopped early, in the settings' own words (the patience actually used)."""
    es = spec.early_stopping
    used = patience(spec, stage)
    capped = (f" (auto mode stops fine-tuning after {AUTO_FINETUNE_PATIENCE}; early_stopping.patience is "
              f"{es.patience})") if used != es.patience else ""
    return (f"{bad} epoch(s) in a row without {es.metric} beating the best by more than min_delta {es.min_delta:g}, "
            f"patience {used}{capped}")


def stage_start(spec: TrainSpec, stage: Stage, overall: Best) -> Best:
    """The best a stage's epochs are compared with: the run's best for the probe and in ``auto``
    (fine-tuning must beat the probe to count at all), else the stage's own (it trains its epochs
    and is judged against the run's best when it ends)."""
    if spec.mode == "auto" or stage.on_features:
        return copy.copy(overall)
    return Best()


def end_stage(spec: TrainSpec, stage: Stage, stage_best: Best, overall: Best,
              val_labels: torch.Tensor | None = None) -> tuple[Best, dict[str, Any]]:
    """The run's best after ``stage``, and a record of the stage saying whether it was kept and why.

    A later stage that scores higher still has to be better on the same val photos with stated
    confidence (trainer/run/stage_choice.py) to replace an earlier stage's weights.
    """
    record: dict[str, Any] = {"stage": stage.name, "best_val_accuracy": stage_best.acc,
                              "best_val_loss": stage_best.loss, "best_epoch": stage_best.epoch}
    if stage_best.state is None or stage_best is overall or stage_best.stage != stage.name:
        record.update(kept=False, reason=f"no epoch of {stage.name} beat {overall.stage or 'the start'} "
                                         f"(val acc {overall.acc:.4f}, loss {overall.loss:.4f})")
        return overall, record
    if overall.state is None or improved(spec, stage_best.loss, stage_best.acc, overall):
        scores = (f"{stage.name} val acc {stage_best.acc:.4f} loss {stage_best.loss:.4f} vs "
                  f"{overall.stage or 'nothing yet'}" + (f" {overall.acc:.4f}" if overall.state is not None else ""))
        later, earlier = getattr(stage_best, "val_pred", None), getattr(overall, "val_pred", None)
        if overall.state is None or later is None or earlier is None or val_labels is None:
            record.update(kept=True, reason=f"{scores}: kept")
            return stage_best, record
        paired = paired_comparison(later, earlier, val_labels)
        record.update(paired={"later_only": paired.later_only, "earlier_only": paired.earlier_only,
                              "images": paired.images, "p_value": paired.p_value})
        record.update(kept=paired.later_better, reason=f"{scores}; {describe(stage.name, overall.stage, paired)}")
        return (stage_best if paired.later_better else overall), record
    record.update(kept=False, reason=f"{stage.name} (val acc {stage_best.acc:.4f}, loss {stage_best.loss:.4f}) "
                                     f"does not beat {overall.stage} (val acc {overall.acc:.4f}, loss "
                                     f"{overall.loss:.4f}): its weights are discarded")
    return overall, record
