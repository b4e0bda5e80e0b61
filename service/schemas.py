"""Response types of the HTTP API (for its OpenAPI schema; the predict route writes the same JSON itself)."""

from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class ImageResult(BaseModel):
    file: str | None = None  # the multipart filename; None for a raw image body
    predictions: list[Prediction]


class PredictResponse(BaseModel):
    model: str
    version: int
    top_k: int  # predictions per image: the asked top_k, or the label count when that is smaller
    top_k_clamped: bool  # True when top_k asked for more predictions than the model has labels
    results: list[ImageResult]
