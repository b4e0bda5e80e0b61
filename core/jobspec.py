"""Torch-free schema of a training job: what ``POST /v1/jobs`` accepts and what a worker runs.

``TrainSpec`` is the one definition of a fine-tuning run (the trainer imports it from here), so the API
rejects bad hyperparameters with a 422 before anything is queued, without importing torch. The
spec is stored in the model's lineage and in checkpoints, so it must round-trip through JSON.
Defaults were chosen by measurement on hymenoptera (see docs/benchmarks.md, "Fine-tuning").
The job stores only the fields the client set (``exclude_unset``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from core.validation import DocumentedAs, finite_number

Mode = Literal["auto", "linear", "finetune", "gradual"]
Optimizer = Literal["sgd", "adamw"]
Scheduler = Literal["cosine", "onecycle", "step", "plateau"]
Augment = Literal["none", "light", "standard", "strong"]
Device = Literal["auto", "cpu", "cuda"]

# The backbone catalogue's names (trainer/backbones.py builds them with torch); a test keeps this
# list equal to trainer.backbones.available_backbones().
CATALOGUE = ("convnext_tiny", "efficientnet_b0", "efficientnet_lite0", "mobilenet_v3_large", "resnet18",
             "resnet50")
REGISTRY_BASE = re.compile(r"^registry:([a-z0-9][a-z0-9_.-]{0,63}):([1-9][0-9]*)$")
MODEL_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Numbers arrive as JSON, which Python reads with NaN and Infinity: every model here refuses them. Strict:
# a JSON true is not the integer 1, nor "yes" a boolean (the schema says integer or boolean, so do we).
FINITE = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
LR_RANGE = "0 < lr <= 10, or 'auto'"
# The OpenAPI document of what the hand-written validators below accept.
BASE_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "enum": list(CATALOGUE)},
              {"type": "string", "pattern": REGISTRY_BASE.pattern}],
    "description": "a catalogue backbone, or 'registry:<model>:<version>' to continue from a registered version",
}


def number_or_auto(kind: str = "number", **bounds: float) -> dict[str, Any]:
    return {"anyOf": [{"type": kind, **bounds}, {"type": "string", "const": "auto"}]}


WORKERS_RANGE = "0 <= num_workers <= 64, or 'auto'"


class EarlyStopping(BaseModel):
    """Stop a stage when ``metric`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    The best weights seen are restored at the end of every stage either way.
    """

    model_config = FINITE

    metric: Literal["val_loss", "val_accuracy"] = Field(
        default="val_accuracy", description="what a stage's best epoch is chosen on (ties: lower val loss wins)")
    patience: int = Field(default=5, ge=1, le=1000, description="epochs without improvement before a stage stops")
    # More than 1 (accuracy or nats) never improves.
    min_delta: float = Field(default=0.0, ge=0.0, le=1.0, description="the least change that counts as improvement")


class TrainSpec(BaseModel):
    model_config = FINITE
    valid_ranges: ClassVar[dict[str, str]] = {"lr": LR_RANGE, "num_workers": WORKERS_RANGE}

    # What to start from (BASE_SCHEMA's description says it for the API).
    base: Annotated[str, WithJsonSchema(BASE_SCHEMA)] = Field(
        default="efficientnet_lite0",
        description="a catalogue backbone, or 'registry:<model>:<version>' to continue from a registered version")
    mode: Mode = Field(default="auto", description="linear: the head alone; finetune: every layer after a probe; "
                       "gradual: unfreeze from the top; auto: fine-tune only while that beats the probe")
    optimizer: Optimizer = "adamw"
    lr: Annotated[float | Literal["auto"], WithJsonSchema(number_or_auto(exclusiveMinimum=0, maximum=10))] = Field(
        default=1e-3, description="head learning rate; 'auto' runs an LR range test on the cached features")
    # Small keeps the pretrained features.
    backbone_lr_scale: float = Field(default=0.05, gt=0.0, le=1.0,
                                     description="backbone LR = lr * backbone_lr_scale in the fine-tuning stages")
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=4096)
    max_epochs: int = Field(default=6, ge=1, le=1000, description="epochs of the main stage: the probe in "
                            "linear mode, the fine-tuning stage(s) otherwise")
    # An epoch over cached features costs milliseconds.
    probe_epochs: int = Field(default=60, ge=1, le=10000, description="epochs of the linear probe before "
                              "fine-tuning, and of the probe in linear mode when larger than max_epochs")
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    scheduler: Scheduler = "cosine"
    warmup_epochs: float = Field(default=1.0, ge=0.0, le=100.0)
    augment: Augment = "light"
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    num_workers: Annotated[int | Literal["auto"],
                           WithJsonSchema(number_or_auto("integer", minimum=0, maximum=64))] = "auto"
    ema: bool = False
    # Small data: updating the statistics hurts.
    freeze_bn: bool = Field(default=True, description="keep BatchNorm running statistics frozen while fine-tuning")
    gradual_stages: int = Field(default=3, ge=1, le=20, description="unfreezing steps of gradual mode after the "
                                "probe (top block group first)")
    device: Device = "auto"
    # trainer/run/budget.py.
    time_budget_s: float | None = Field(default=None, gt=0.0, le=7 * 86400.0, description=(
        "seconds the training may take (setup, probe, fine-tuning); fine-tuning that would not fit is shortened "
        "or skipped for the probe's result, and the job says so. Unset: no limit"))
    # trainer/calibrate/selective.py.
    target_accuracy: float | None = Field(default=None, gt=0.0, le=1.0, description=(
        "selective answers: the validation accuracy wanted when the model answers only above a confidence; the "
        "version's default confidence floor is the one that reaches it. Unset: no floor"))
    # trainer/calibrate/ood.py.
    ood_recall: float = Field(default=0.95, ge=0.5, le=1.0, description="'none of these': the share of validation "
                              "photos the out-of-distribution threshold keeps")

    @field_validator("base")
    @classmethod
    def _check_base(cls, value: str) -> str:
        if value.startswith("registry:"):
            if not REGISTRY_BASE.match(value):
                raise ValueError(f"base {value!r} must look like 'registry:<model>:<version>'")
        elif value not in CATALOGUE:
            raise ValueError(f"unknown base {value!r}; choose one of {', '.join(CATALOGUE)} "
                             "or 'registry:<model>:<version>'")
        return value

    # A number or a word: checked before pydantic tries each type of the union, so a bad value gets
    # one message with the range instead of one per type.
    @field_validator("num_workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> int | str:
        number = _number_or_auto(value, lambda n: n == int(n) and 0 <= n <= 64,
                                 f"num_workers must be a whole number or 'auto' (valid: {WORKERS_RANGE})")
        return number if number == "auto" else int(number)

    @field_validator("lr", mode="before")
    @classmethod
    def _check_lr(cls, value: Any) -> float | str:
        return _number_or_auto(value, lambda n: 0.0 < n <= 10.0, f"lr must be a number or 'auto' (valid: {LR_RANGE})")

    def registry_base(self) -> tuple[str, int] | None:
        """``(model, version)`` when the base is a registered version, else None."""
        match = REGISTRY_BASE.match(self.base)
        return (match.group(1), int(match.group(2))) if match else None


def _search_spec() -> type[BaseModel]:
    from core.searchspec import SearchSpec  # it imports this module for TrainSpec's ranges

    return SearchSpec


class JobRequest(BaseModel):
    """Body of ``POST /v1/jobs``.

    ``hyperparameters`` and ``search`` are validated by the route (``TrainSpec``, ``SearchSpec``) so that
    a 422 names the field with its range; the OpenAPI document shows those models' fields.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, json_schema_extra={"examples": [
        {"dataset_id": "3f2a9c1e0b7d", "model": "bees", "mode": "finetune",
         "hyperparameters": {"lr": "auto", "augment": "light", "max_epochs": 6}},
        {"dataset_id": "3f2a9c1e0b7d", "model": "bees",
         "search": {"method": "asha", "trials": 27, "max_epochs": 6,
                    "space": {"lr": "loguniform(1e-4, 1e-2)", "augment": ["none", "light", "standard"]}}},
    ]})

    dataset_id: str = Field(min_length=1, max_length=64, description="the id POST /v1/datasets answered")
    model: str = Field(pattern=MODEL_NAME, description="1-64 lowercase letters, digits, '_', '-' or '.'")
    base: Annotated[str | None, WithJsonSchema(BASE_SCHEMA)] = None
    mode: Mode | None = None
    hyperparameters: Annotated[dict[str, Any], DocumentedAs(lambda: TrainSpec)] = Field(default_factory=dict)
    # Hyper-parameter search (schema and validation: core/searchspec.py); None = one training run.
    search: Annotated[dict[str, Any] | None, DocumentedAs(_search_spec, nullable=True)] = None
    # Allow publishing a label set other than the one ``model`` serves now (models/meaning.py).
    replace_labels: bool = Field(default=False, description="publish a label set other than the one the "
                                 "model serves now (refused for the bootstrapped imagenet model)")

    def spec(self) -> TrainSpec:
        """The validated spec (raises pydantic.ValidationError naming the bad hyperparameter)."""
        fields = dict(self.hyperparameters)
        for key in ("base", "mode"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = value
        return TrainSpec.model_validate(fields)


def _number_or_auto(value: Any, valid: Callable[[float], bool], message: str) -> float | str:
    """``"auto"``, or a finite number that ``valid`` accepts; else ``message``."""
    if value == "auto":
        return "auto"
    number = finite_number(value)
    if number is None or not valid(number):
        raise ValueError(message)
    return number


class JobSpec(TrainSpec):
    """What the job store keeps for a job: the hyper-parameters the client set, and the job's own keys.

    Stored as ``stored()`` (only what was set, so defaults chosen later apply to old jobs too) and
    read back with ``model_validate``.
    """

    # Hyper-parameter search (core/searchspec.py validates it, in the route and in the worker).
    search: dict[str, Any] | None = None
    # Allow publishing a label set other than the one the model serves now (models/meaning.py).
    replace_labels: bool = False

    def train_spec(self) -> TrainSpec:
        """The run's TrainSpec (what checkpoints and the manifest record)."""
        return TrainSpec.model_validate(self.model_dump(exclude_unset=True, exclude=set(JOB_KEYS)))

    def stored(self) -> dict[str, Any]:
        """The JSON the job store writes: the fields that were set."""
        return self.model_dump(mode="json", exclude_unset=True)


# Keys a stored job spec carries beside the TrainSpec fields.
JOB_KEYS = ("search", "replace_labels")
