"""Learning-rate schedules, stepped per batch (plateau: per epoch, on the validation metric)."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as S

SCHEDULERS = ("cosine", "onecycle", "step", "plateau")


def build_scheduler(name: str, optimizer: Optimizer, steps_per_epoch: int, epochs: int,
                    warmup_epochs: float, maximize: bool) -> Any:
    """The scheduler for one stage. ``maximize``: the plateau metric is an accuracy (higher is better)."""
    total = max(1, steps_per_epoch * epochs)
    if name == "cosine":
        warmup = min(total - 1, round(warmup_epochs * steps_per_epoch))
        if warmup <= 0:
            return S.CosineAnnealingLR(optimizer, T_max=total)
        return S.SequentialLR(optimizer, [
            S.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup),
            S.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)),
        ], milestones=[warmup])
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        pct = min(0.5, max(0.05, warmup_epochs / max(1, epochs))) if warmup_epochs > 0 else 0.3
        # OneCycleLR divides by each phase's length: give both phases at least 2 steps (a longer
        # schedule than the steps taken only means the LR does not reach its floor).
        total = max(total, 4)
        warm = min(max(2, round(pct * total)), total - 2)
        return S.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=warm / total)
    if name == "step":
        return S.StepLR(optimizer, step_size=max(1, total // 3), gamma=0.1)
    if name == "plateau":
        return S.ReduceLROnPlateau(optimizer, mode="max" if maximize else "min", factor=0.3, patience=2)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def is_per_epoch(scheduler: Any) -> bool:
    return isinstance(scheduler, S.ReduceLROnPlateau)
