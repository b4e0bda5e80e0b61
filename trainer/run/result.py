"""What a run gives back (TrainingResult, per-split outputs), how it can end early, and its device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from core.jobspec import TrainSpec
from models.manifest import Preprocessing
from trainer.calibrate.ood import OodScorer
from trainer.progress.tracker import EpochMetrics


class Cancelled(Exception):
    """should_stop() returned True; the last completed epoch's checkpoint is kept."""


class Pruned(Exception):
    """Raised by an on_epoch_end callback (e.g. ASHA) to end an unpromising run early."""


class TrainingError(ValueError):
    """The data or spec cannot produce a model (no validation split, one class...)."""


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
    # the out-of-distribution score fitted on the training photos (trainer/calibrate/ood.py)
    ood: OodScorer | None = None
    selective: dict[str, Any] | None = None  # the manifest's ``selective`` key (trainer/calibrate/selective.py)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but no CUDA GPU is usable here; use 'auto' or 'cpu'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)
