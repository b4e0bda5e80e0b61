"""Class activation maps: the network split at its last convolutional feature map, for the ONNX export.

For a head that is global average pooling followed by one linear layer (dropout aside),
``logit_k = b_k + mean_hw(sum_c W_kc F_c,hw)``, so ``CAM_k = W_k . F`` is exact: its mean plus the bias
is the logit (Zhou et al., "Learning Deep Features for Discriminative Localization", 2016). The export
gains ``F`` as a second output and ``W``, ``b`` go beside the model in ``cam.npz``; the service
computes the map in numpy. Networks whose head does more (MobileNetV3's hidden layer, ConvNeXt's
LayerNorm after pooling) get no CAM output rather than an inexact one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

CAM_FILE = "cam.npz"
FEATURES_OUTPUT = "features"


def _kind(model: nn.Module) -> str | None:
    from torchvision.models import EfficientNet, ResNet

    pool = getattr(model, "global_pool", None)
    if hasattr(model, "forward_features") and hasattr(model, "forward_head") and pool is not None:
        linear = getattr(model, "classifier", None)
        if getattr(pool, "pool_type", None) == "avg" and isinstance(linear, nn.Linear):
            return "timm"
    if isinstance(model, ResNet) and isinstance(model.fc, nn.Linear):
        return "resnet"
    if isinstance(model, EfficientNet) and all(isinstance(m, nn.Dropout | nn.Linear) for m in model.classifier):
        return "efficientnet"
    return None


def head_linear(model: nn.Module) -> nn.Linear:
    kind = _kind(model)
    if kind == "resnet":
        return model.fc  # type: ignore[return-value]
    if kind == "efficientnet":
        return next(m for m in model.classifier if isinstance(m, nn.Linear))  # type: ignore[union-attr]
    return model.classifier  # type: ignore[return-value]


class WithFeatures(nn.Module):
    """The same network answering ``(logits, last conv feature map)``; the logits are computed as before."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        if self.kind == "timm":
            feats = m.forward_features(x)  # type: ignore[operator]
            return m.forward_head(feats), feats  # type: ignore[operator]
        if self.kind == "resnet":
            y = m.maxpool(m.relu(m.bn1(m.conv1(x))))  # type: ignore[operator]
            feats = m.layer4(m.layer3(m.layer2(m.layer1(y))))  # type: ignore[operator]
            return m.fc(torch.flatten(m.avgpool(feats), 1)), feats  # type: ignore[operator]
        feats = m.features(x)  # type: ignore[operator]
        return m.classifier(torch.flatten(m.avgpool(feats), 1)), feats  # type: ignore[operator]


def with_features(model: nn.Module) -> WithFeatures | None:
    """``model`` with its feature map as a second output, or None when its head is not GAP + linear."""
    kind = _kind(model)
    return None if kind is None else WithFeatures(model, kind).eval()


def save_head(model: nn.Module, path: Path) -> Path:
    """The linear head's weight (classes x channels) and bias, for the service's numpy CAM."""
    linear = head_linear(model)
    np.savez(path, weight=linear.weight.detach().float().cpu().numpy(),
             bias=linear.bias.detach().float().cpu().numpy())
    return path
