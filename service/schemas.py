"""Response types of the HTTP API (for its OpenAPI schema; the predict route writes the same JSON itself)."""

from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    index: int
    probability: float


class ImageResult(BaseModel):
    predictions: list[Prediction]


class PredictResponse(BaseModel):
    model: str
    version: int
    results: list[ImageResult]
