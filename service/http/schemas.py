"""Request and response types of the HTTP API for its OpenAPI document (the predict route writes the same JSON
itself); every error is ``ErrorDetail``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.inference.predictor import MAX_EXPLAIN_IMAGES


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
    predictions: list[Prediction]  # listed also when the answer is unknown
    ood_score: float | None = Field(
        description="out-of-distribution score from the same model run: higher = less like the training photos; "
                    "null when the version has no scorer")
    unknown: bool = Field(description="true when the photo looks like none of the classes: ood_score above the "
                                      "threshold, or the top probability below min_confidence")
    unknown_reason: Literal["ood", "low_confidence"] | None = Field(
        description="why unknown is true (ood is named first when both hold); null when it is false")
    explanation: Explanation | None = None
    capture_id: str | None = Field(None, description="present when the model's feedback policy kept this photo for "
                                                      "review: label it with POST /v1/models/{name}/feedback/{id}")


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "imagenet", "version": 1, "top_k": 2, "top_k_clamped": False,
        "results": [{"file": "tabby.jpg", "predictions": [
            {"label": "Egyptian cat", "index": 285, "probability": 0.70},
            {"label": "tiger cat", "index": 282, "probability": 0.12}],
            "ood_score": 0.41, "unknown": False, "unknown_reason": None}]}]})

    model: str
    version: int
    top_k: int  # predictions per image: the asked top_k, or the label count when that is smaller
    top_k_clamped: bool  # True when top_k asked for more predictions than the model has labels
    results: list[ImageResult]


class JobCreated(BaseModel):
    """``POST /v1/jobs``'s answer: the new job's id (its links lead to the routes that take it)."""

    id: str
    state: Literal["queued"]


class ErrorDetail(BaseModel):
    """Every 4xx/5xx answer: one sentence naming the problem and the fix."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"detail": "hyperparameters.batch_size: Input should be less than or equal to 4096 "
                   "(valid: 1 <= batch_size <= 4096)"}]})

    detail: str


# What each status means on this API (the route's own docstring says when it happens).
ERROR_MEANING = {
    400: "Malformed input: a body that does not parse, a corrupt image or archive",
    404: "No such model, version, dataset or job",
    409: "Conflicts with the current state (a finished job, a dataset a job uses)",
    413: "Too large: the body, an image's pixels, a request's pixels together or an archive's contents",
    415: "Unsupported media type: the Content-Type or the file's format",
    422: "A parameter or field fails validation (the message names it and its valid range)",
    503: "Not ready or overloaded: retry after the Retry-After header's seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses, each with the ``{"detail": string}`` schema."""
    return {code: {"model": ErrorDetail, "description": ERROR_MEANING[code]} for code in codes}


# Request bodies the predict and upload routes parse themselves (streamed, no form model), declared here
# so that /docs offers file fields and generated clients can upload.
def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


IMAGE_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"

PREDICT_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "minItems": 1, "maxItems": 256,
                                "items": _binary("a JPEG, PNG, WebP, GIF, BMP or TIFF image"),
                                "description": "one or more images, each its own `file` field; answered in order. "
                                               f"With explain=true at most {MAX_EXPLAIN_IMAGES} (413 past it)"}}},
        "encoding": {"file": {"contentType": IMAGE_TYPES}}},
    "image/*": {"schema": _binary("one image as the raw body (its result's `file` is null)")},
    "application/octet-stream": {"schema": _binary("one image as the raw body")},
}}}

ARCHIVE_TYPES = "application/zip, application/x-tar, application/gzip, application/octet-stream"

DATASET_UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": _binary("a .zip, .tar, .tar.gz or .tgz archive: <class>/<image> (split made for you) or "
                            "train|val|test/<class>/<image>. It must be a real archive (other bytes: 415; a "
                            "damaged or unsafe one: 400) of labelled, decodable images (else 422 naming what "
                            "is wrong): rules JSON Schema cannot state"),
            "name": {"type": "string", "maxLength": 200,
                     "description": "a name for the dataset (default: the archive's file name)"},
            "val_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5,
                             "description": "share of each class held out for validation when the split is made "
                                            "(default 0.1); val_fraction + test_fraction at most 0.6"},
            "test_fraction": {"type": "number", "minimum": 0, "maximum": 0.5,
                              "description": "share of each class held out for testing (default 0.1)"},
            "min_val_per_class": {"type": "integer", "minimum": 0, "maximum": 1000,
                                  "description": "small classes' val share is raised towards this many images "
                                                 "(at most 30% of the class; default 10, 0 turns it off)"},
        }},
        "encoding": {"file": {"contentType": ARCHIVE_TYPES}}},
}}}
