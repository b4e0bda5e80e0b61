"""The manifest stored beside every model version: what a predictor needs to serve it correctly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
# manifest.json's format (core/formats.py): 1 = these fields with the key; 0 = the same fields without it.
# The registry folder's FORMAT file carries REGISTRY_FORMAT (its layout: <name>/<version>/, ACTIVE).
MANIFEST_FORMAT = 1
REGISTRY_FORMAT = 1


class Preprocessing(BaseModel):
    """Eval-time transform: resize shorter side, center crop, scale to [0,1], normalise."""

    model_config = ConfigDict(extra="forbid")

    input_size: int = 224
    resize: int = 256
    crop: int = 224
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


class Variant(BaseModel):
    """An extra ONNX file of the same model (fp16 for CUDA, int8 for CPU) with its measured cost."""

    file: str
    sha256: str
    accuracy_delta: float | None = None  # the worst split's
    top1_agreement: float | None = None  # the worst split's; set only for a variant that passed its gate
    # The accuracy gate it passed: {"rule": str, "splits": {"val"|"test": {"images", "top1_agreement",
    # "accuracy_delta"}}} (trainer/publish/variants.py). None: built before the gate was recorded.
    gate: dict[str, Any] | None = None


class CamOutput(BaseModel):
    """Where a version's class activation maps come from: the ONNX output holding the last feature map
    and the file (beside the model) with its linear head's ``weight`` and ``bias`` (trainer/publish/cam.py)."""

    output: str = "features"
    weights: str = "cam.npz"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = 0  # set by the registry when it writes the version; absent = written before 1
    name: str
    version: int = 0  # filled in by the registry when the version is written
    labels: list[str]
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    backbone: str
    source: dict[str, Any] = Field(default_factory=dict)  # lineage: base, dataset_id, spec, job_id
    metrics: dict[str, Any] = Field(default_factory=dict)
    temperature: float = 1.0  # softmax temperature fitted on validation data (calibration)
    sha256: str = ""
    stage: Literal["registered", "candidate"] = "registered"
    files: list[str] = Field(default_factory=list)  # report and other artefacts beside the model
    variants: dict[str, Variant] = Field(default_factory=dict)
    cam: CamOutput | None = None  # None: exported before CAM outputs existed, or a head without GAP + linear
    # "None of these": the ONNX output ``ood_score`` and its threshold ({"method", "threshold", "target_recall",
    # "val_recall", ...}; trainer/calibrate/ood.py). None: the model has no score.
    ood: dict[str, Any] | None = None
    # Selective answers: {"risk_coverage": [[coverage, accuracy, confidence], ...], "target_accuracy",
    # "min_confidence", ...} measured on validation (trainer/calibrate/selective.py). None: not measured.
    selective: dict[str, Any] | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
