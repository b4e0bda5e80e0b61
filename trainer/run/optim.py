"""Optimisers per stage, and the learning rate each stage uses.

``lr: "auto"``: the LR range test (trainer/run/lr_finder.py) runs on the probe's cached features, so
its pick is the rate of a *head* training alone from scratch. The fine-tuning stages start from the
probe's trained head and move pretrained features: the head's rate there wrecks them (measured in
issue 16: 1.9e-2 took a probe at 8/8 down to 3/8). So a fine-tuning stage takes a tenth of the
picked rate, capped at the rate the defaults were measured with (``FINETUNE_LR_CAP``); the
backbone then gets that times ``backbone_lr_scale`` as always. A number given as ``lr`` is used
as is by every stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.jobspec import TrainSpec
from trainer.run.stages import Stage

FINETUNE_LR_FRACTION = 0.1
FINETUNE_LR_CAP = {"adamw": 1e-3, "sgd": 1e-2}  # the measured defaults (docs/benchmarks.md)
DEFAULT_FINETUNE_LR = 1e-3  # when there was no probe range test to start from


class OptimizerError(ValueError):
    pass


def stage_lr(spec: TrainSpec, stage: Stage, probe_lr: float | None) -> float:
    """The head's learning rate in ``stage`` (see the module docstring for the rule)."""
    if isinstance(spec.lr, float):
        return spec.lr
    if stage.on_features:
        assert probe_lr is not None, "the probe's range test runs before the probe"
        return probe_lr
    if probe_lr is None:
        return DEFAULT_FINETUNE_LR
    return min(probe_lr * FINETUNE_LR_FRACTION, FINETUNE_LR_CAP[spec.optimizer])


def make_optimizer(spec: TrainSpec, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, nesterov=True,
                               weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=spec.weight_decay)
    raise OptimizerError(f"unknown optimizer {spec.optimizer!r}; choose one of sgd, adamw")


def image_stage_groups(backbone_params: list[nn.Parameter], head: nn.Module, lr: float,
                       backbone_lr_scale: float) -> list[dict[str, Any]]:
    """Backbone at ``lr * backbone_lr_scale`` (small keeps pretrained features), head at ``lr``."""
    groups = [{"params": backbone_params, "lr": lr * backbone_lr_scale},
              {"params": list(head.parameters()), "lr": lr}]
    return [g for g in groups if g["params"]]
