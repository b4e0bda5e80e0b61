"""What a run tells its caller after every epoch: EpochMetrics, and the ETA from measured epoch times."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trainer.stages import Stage


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


def remaining_seconds(stages: list[Stage], done: int, epoch_seconds: dict[str, list[float]], current: str) -> float:
    """Remaining planned epochs times the mean epoch time of their kind (early stopping may cut it)."""
    remaining = 0.0
    counted = 0
    for s in stages:
        for _ in range(s.epochs):
            counted += 1
            if counted <= done:
                continue
            times = epoch_seconds.get(s.name) or epoch_seconds.get(current, [0.0])
            remaining += sum(times) / len(times)
    return remaining
