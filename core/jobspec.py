"""Torch-free schema of a training job: what ``POST /v1/jobs`` accepts and what a worker receives.

``TrainSpec`` mirrors ``trainer.spec.TrainSpec`` field for field (CONTRACTS.md section 2) so that the
API can reject bad hyperparameters with a 422 before anything is queued, without importing torch.
The job stores only the fields the client set (``exclude_unset``): the trainer applies its own
defaults, so a default changed there never disagrees with a stale copy here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_BASE = "efficientnet_lite0"


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=3, ge=1, le=1000)
    min_delta: float = Field(default=0.0, ge=0.0)


class TrainSpec(BaseModel):
    """Hyperparameters of one fine-tuning run (validated copy of the trainer's spec)."""

    model_config = ConfigDict(extra="forbid")

    base: str = DEFAULT_BASE
    mode: Literal["auto", "linear", "finetune", "gradual"] = "auto"
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float | Literal["auto"] = "auto"
    backbone_lr_scale: float = Field(default=0.1, gt=0.0, le=10.0)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=4096)
    max_epochs: int = Field(default=10, ge=1, le=1000)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "onecycle", "step", "plateau"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0, le=100)
    augment: Literal["none", "light", "standard", "strong"] = "standard"
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    seed: int = 0
    num_workers: int = Field(default=0, ge=0, le=64)
    ema: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 < value <= 10.0:
            raise ValueError("lr must be 'auto' or a number in (0, 10]")
        return value

    @field_validator("base")
    @classmethod
    def _base_form(cls, value: str) -> str:
        if value.startswith("registry:"):
            parts = value.split(":")
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError("a registry base must look like 'registry:<model>:<version>'")
            if not parts[1]:
                raise ValueError("a registry base must name a model")
        elif not value or len(value) > 128:
            raise ValueError("base must name a backbone from the catalogue or 'registry:<model>:<version>'")
        return value


class JobRequest(BaseModel):
    """Body of ``POST /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                       description="1-64 lowercase letters, digits, '_', '-' or '.'")
    base: str | None = None
    mode: Literal["auto", "linear", "finetune", "gradual"] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)

    def spec(self) -> TrainSpec:
        """The validated spec (raises pydantic.ValidationError naming the bad hyperparameter)."""
        fields = dict(self.hyperparameters)
        for key in ("base", "mode"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = value
        return TrainSpec.model_validate(fields)

    def stored_spec(self) -> dict[str, Any]:
        """Only what the client set: the trainer fills in its own defaults."""
        return self.spec().model_dump(mode="json", exclude_unset=True)
