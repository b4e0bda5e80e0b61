"""The plan of a run (which stages, how many epochs) and which layers each stage trains.

* ``linear``  - the backbone is frozen; its features are computed once and only the head trains on
  them (an epoch costs milliseconds);
* ``finetune`` - every layer trains (backbone at ``lr * backbone_lr_scale``), starting from the
  probe's head (LP-FT: a random head would wreck the pretrained features in the first steps);
* ``gradual_k`` - the top k of K block groups (plus head) train.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from core.jobspec import TrainSpec
from trainer.backbones import Backbone


@dataclass
class Stage:
    name: str  # "linear" | "finetune" | "gradual_1".. "gradual_K"
    epochs: int
    unfrozen: float = 1.0  # fraction of backbone block groups that train (image stages)

    @property
    def on_features(self) -> bool:
        return self.name == "linear"


def plan_stages(spec: TrainSpec) -> list[Stage]:
    """``linear`` mode is the probe alone; the others run the probe first (see the module docstring)."""
    probe = Stage("linear", spec.probe_epochs)
    if spec.mode == "linear":
        return [probe]
    if spec.mode == "gradual":
        k = spec.gradual_stages
        per = max(1, spec.max_epochs // k)
        return [probe] + [Stage(f"gradual_{i}", per, i / k) for i in range(1, k + 1)]
    return [probe, Stage("finetune", spec.max_epochs)]


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


def trainable_backbone(backbone: Backbone, stage: Stage) -> set[int]:
    """ids of the backbone parameters ``stage`` trains (the top ``unfrozen`` share of block groups)."""
    groups = block_groups(backbone)
    keep = max(1, math.ceil(stage.unfrozen * len(groups)))
    return {id(p) for g in groups[len(groups) - keep:] for p in g.parameters()}


def train_modes(trainable: set[int], freeze_bn: bool) -> Callable[[nn.Module], None]:
    """Sets train/eval per module before an epoch: frozen BatchNorm keeps its ImageNet statistics."""

    def prepare(model: nn.Module) -> None:
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters())
                if freeze_bn or not params or not all(id(p) in trainable for p in params):
                    module.eval()
    return prepare
