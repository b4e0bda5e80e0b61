"""Response types of the HTTP API (for its OpenAPI schema; the predict route writes the same JSON itself)."""

from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class Explanation(BaseModel):
    """``explain=true``: where the model looked for its top class (class activation map)."""

    label: str
    index: int
    method: str  # "cam"
    size: list[int]  # [width, height] of the heatmap: the model's input crop
    grid: list[int]  # [rows, columns] of the feature map it was upsampled from
    crop_box: list[float]  # [left, top, right, bottom] of that crop in the original image's pixels
    peak: list[float]  # [x, y] of the hottest point, in the original image's pixels
    heatmap: str  # data:image/png;base64,... RGBA, alpha follows the activation: lay it over the crop box


class ImageResult(BaseModel):
    file: str | None = None  # the multipart filename; None for a raw image body
    predictions: list[Prediction]
    explanation: Explanation | None = None


class PredictResponse(BaseModel):
    model: str
    version: int
    top_k: int  # predictions per image: the asked top_k, or the label count when that is smaller
    top_k_clamped: bool  # True when top_k asked for more predictions than the model has labels
    results: list[ImageResult]
