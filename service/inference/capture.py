"""The capture service: which answers of a prediction are kept for review, and keeping them.

The predict route hands every answer here; with the policy off (the default) this costs one ``stat`` of
the model's policy file and never leaves the event loop. Kept photos are written in the thread pool.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from feedback import FeedbackStore, should_capture
from service.inference.predictor import Answer

# The photo's file extension from Pillow's format name (the dataset ingest judges files by content too).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif"}


def extension(photo: bytes) -> str:
    try:
        with Image.open(io.BytesIO(photo)) as img:  # the header only
            return EXTENSIONS.get(img.format or "", "img")
    except (UnidentifiedImageError, OSError, ValueError):
        return "img"


def answer_record(predictions: list[tuple[str, int, float]], ood_score: float | None, unknown: bool,
                  unknown_reason: str | None) -> dict[str, Any]:
    return {"predictions": [{"label": label, "index": i, "probability": p} for label, i, p in predictions],
            "ood_score": ood_score, "unknown": unknown, "unknown_reason": unknown_reason}


class FeedbackService:
    """One :class:`FeedbackStore` per model under ``root`` (``<home>/feedback``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._stores: dict[str, FeedbackStore] = {}

    def store(self, model: str) -> FeedbackStore:
        store = self._stores.get(model)
        if store is None:  # model names are checked by the registry before any route gets here
            store = self._stores[model] = FeedbackStore(self.root / model)
        return store

    async def capture(self, answer: Answer, payloads: list[bytes]) -> list[str | None]:
        """The capture id per image (None: not kept)."""
        store = self.store(answer.model)
        policy = store.policy()
        chosen = [i for i, r in enumerate(answer.results)
                  if should_capture(policy, r.predictions[0][2] if r.predictions else 0.0, r.unknown)]
        ids: list[str | None] = [None] * len(payloads)
        if not chosen:
            return ids

        def keep() -> None:
            for i in chosen:
                r, photo = answer.results[i], payloads[i]
                ids[i] = store.add(photo, hashlib.sha256(photo).hexdigest(), extension(photo), source="capture",
                                   version=answer.version,
                                   answer=answer_record(r.predictions, r.ood_score, r.unknown, r.unknown_reason))

        await run_in_threadpool(keep)
        return ids
