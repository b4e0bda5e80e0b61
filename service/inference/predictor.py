"""One loaded version's prediction, whatever the entry: preprocess -> infer -> postprocess (KServe's ``Model``).

:class:`Predictor` takes images (encoded photos as ``bytes``, or already preprocessed ``(3, crop, crop)``
float32 tensors, as an Open Inference Protocol request would send) and returns an :class:`Answer` of plain
data; the HTTP route only parses the request and writes the JSON. Every variant goes through it:

* **preprocess**: the request's decode budget is checked on the headers (service/inference/decoding.py), then the
  images are decoded where it is cheapest: one photo on the CPU lanes is decoded by the lane that runs
  it, every photo by the GPU pipeline with the GPU decoder, otherwise in the fair decode pool;
* **infer**: the batcher (its fair share, its lanes or the GPU); one session run gives the logits and,
  when the model has it, the ``ood_score`` output (``OnnxEngine.infer``);
* **postprocess**: temperature softmax, top-k, the "unknown" decision (service/inference/selective.py) and, with
  ``explain``, a class activation map of the top class (service/inference/explain.py).

Each stage's time per request goes into ``tuneserve_predict_stage_seconds{stage, model}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from core.images import ImageError
from core.settings import Settings
from models import VersionInfo
from service import metrics
from service.inference.batching import Batcher
from service.inference.decoding import FairDecoder, check_budget, needs_budget_check
from service.inference.explain import CamHead, NoCamOutput, crop_box, explanation, oriented_size
from service.inference.onnx_session import OnnxEngine, softmax, top_k
from service.inference.preprocess import preprocess
from service.inference.selective import Thresholds

# Heatmaps are for people looking at a few photos; bounding them per request bounds the request's cost
# (each map is drawn and PNG-encoded in the decode pool, outside the batcher's fair share).
MAX_EXPLAIN_IMAGES = 16

Image = bytes | np.ndarray  # an encoded photo, or a preprocessed (3, crop, crop) float32 tensor


class TooManyImages(ValueError):
    """More images than the asked-for work allows per request (answered with 413)."""


@dataclass(frozen=True)
class PredictOptions:
    top_k: int = 5
    explain: bool = False
    ood_threshold: float | None = None  # None: the version's (manifest ``ood.threshold``)
    min_confidence: float | None = None  # None: the version's (manifest ``selective.min_confidence``)


@dataclass(frozen=True)
class ImageAnswer:
    predictions: list[tuple[str, int, float]]  # (label, index, probability), most probable first
    ood_score: float | None  # None: the version has no out-of-distribution score
    unknown_reason: str | None  # "ood" | "low_confidence" | None
    explanation: dict[str, Any] | None = None

    @property
    def unknown(self) -> bool:
        return self.unknown_reason is not None


@dataclass(frozen=True)
class Answer:
    model: str
    version: int
    top_k: int  # predictions per image (the asked top_k, at most the label count)
    results: list[ImageAnswer] = field(default_factory=list)


class Predictor:
    """The prediction of one loaded version; safe to call from many requests at once."""

    def __init__(self, info: VersionInfo, engine: OnnxEngine, batcher: Batcher, decoder: str,
                 decoding: FairDecoder, settings: Settings) -> None:
        manifest = info.manifest
        self.model, self.version, self.labels = manifest.name, info.version, manifest.labels
        self.pre, self.temperature = manifest.preprocessing, manifest.temperature
        self.info, self.engine, self.batcher, self.decoder, self.decoding = info, engine, batcher, decoder, decoding
        self.thresholds = Thresholds.of_version(manifest)
        self.max_pixels = settings.max_image_pixels
        self.budget = settings.max_request_pixels
        self._decode_one = partial(preprocess, pre=self.pre, max_pixels=self.max_pixels)
        self._cam: CamHead | None = None

    def cam_head(self) -> CamHead:
        """The version's CAM head; raises NoCamOutput when its export has no feature-map output."""
        if self._cam is None:
            head = CamHead.load(self.info.path, self.info.manifest.cam, self.model, self.version)
            if head.output not in self.engine.output_names:
                raise NoCamOutput(f"version {self.version} of {self.model!r}: the served model file has no "
                                  f"{head.output!r} output; serve fp32 (TUNESERVE_VARIANT=fp32) to explain")
            self._cam = head
        return self._cam

    def takes_encoded(self, count: int) -> bool:
        """Whether ``count`` photos go to the batcher still encoded: always with the GPU decoder, which
        decodes whole batches; one photo when CPU lanes decode (fewer thread hops)."""
        return self.decoder == "gpu" or (count == 1 and self.batcher.decodes_in_lanes)

    async def predict(self, images: Sequence[Image], options: PredictOptions,
                      names: Sequence[str | None] | None = None) -> Answer:
        """Raises ImageError (naming the image), NoCamOutput, TooManyImages, QueueFull."""
        if not images:
            raise ValueError("no images to predict")
        names = list(names) if names is not None else [None] * len(images)
        head = self.cam_head() if options.explain else None  # refused before any work
        if head is not None and len(images) > MAX_EXPLAIN_IMAGES:
            raise TooManyImages(
                f"explain=true draws a heatmap per image and takes at most {MAX_EXPLAIN_IMAGES} images per "
                f"request (got {len(images)}): send them in smaller requests, or drop explain")
        started = time.perf_counter()
        encoded = [img for img in images if isinstance(img, bytes)]
        if needs_budget_check(len(encoded), self.max_pixels, self.budget):  # headers only, in its turn
            await self.decoding.run(partial(check_budget, encoded, self.max_pixels, self.budget))
        in_batcher_s = 0.0  # decoding done inside the batcher (lanes, GPU): preprocess, not infer
        features = np.empty(0, np.float32)  # the feature map, with explain
        if head is None and len(encoded) == len(images) and self.takes_encoded(len(images)):
            ready = time.perf_counter()
            rows, in_batcher_s = await self.batcher.submit_encoded(encoded, self._decode_one)
        else:
            arrays = await self._preprocess(images, names)
            ready = time.perf_counter()
            if head is None:
                rows = await self.batcher.submit(arrays)
            else:  # off the batcher: it asks for the feature map, which plain predictions never copy out
                rows, features = await self.decoding.run(partial(self._infer_with_features, arrays, head))
        inferred = time.perf_counter()
        explained = None if head is None else await self.decoding.run(
            partial(self._explain, images, head, features, rows))
        answer = self.postprocess(rows, options, explained)
        done = time.perf_counter()
        metrics.observe_stage(self.model, "preprocess", ready - started + in_batcher_s)
        metrics.observe_stage(self.model, "infer", inferred - ready - in_batcher_s)
        metrics.observe_stage(self.model, "postprocess", done - inferred)
        metrics.predicted(self.model, self.version, len(images))
        return answer

    async def _preprocess(self, images: Sequence[Image], names: list[str | None]) -> list[np.ndarray]:
        """Model inputs: photos decoded in the fair pool (side by side), tensors checked and passed on."""
        photos = [i for i, img in enumerate(images) if isinstance(img, bytes)]
        decoded = await self.decoding.map(self._decode_one, [images[i] for i in photos])
        arrays: list[Any] = list(images)
        for i, result in zip(photos, decoded, strict=True):
            if isinstance(result, ImageError):
                named = f" ({names[i]})" if names[i] else ""
                prefix = f"image {i + 1} of {len(images)}{named}: " if len(images) > 1 else ""
                raise ImageError(result.kind, prefix + str(result))
            if isinstance(result, BaseException):
                raise result
            arrays[i] = result
        shape = (3, self.pre.crop, self.pre.crop)
        for i, arr in enumerate(arrays):
            if arr.shape != shape:
                raise ValueError(f"input {i + 1} has shape {list(arr.shape)}; this model takes {list(shape)}")
        return [np.asarray(a, dtype=np.float32) for a in arrays]

    def _infer_with_features(self, arrays: list[np.ndarray], head: CamHead) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.engine.run_outputs(np.stack(arrays), [*self.engine.fetch, head.output])
        return self.engine.pack(outputs[:-1]), outputs[-1]

    def _explain(self, images: Sequence[Image], head: CamHead, features: np.ndarray,
                 rows: np.ndarray) -> list[dict[str, Any]]:
        """A CAM of the top class per image, placed on the photo (the whole crop for a tensor input)."""
        logits, _ = self.engine.unpack(rows)
        top = logits.argmax(1)
        maps = head.maps(features, top)
        crop = self.pre.crop
        boxes = [crop_box(*oriented_size(img, self.max_pixels), self.pre) if isinstance(img, bytes)
                 else [0.0, 0.0, float(crop), float(crop)] for img in images]
        return [explanation(maps[i], self.labels[int(top[i])], int(top[i]), boxes[i], crop)
                for i in range(len(images))]

    def postprocess(self, rows: np.ndarray, options: PredictOptions,
                    explained: list[dict[str, Any]] | None = None) -> Answer:
        """Probabilities (temperature softmax), top-k and the "unknown" decision per image."""
        logits, ood = self.engine.unpack(rows)
        k = min(options.top_k, len(self.labels))
        thresholds = self.thresholds.overridden(options.ood_threshold, options.min_confidence)
        labels = self.labels
        results = []
        for i, row in enumerate(top_k(softmax(logits, self.temperature), k)):
            score = None if ood is None else float(ood[i])
            if score is not None and not math.isfinite(score):
                score = None  # never a NaN in JSON; a model that cannot score this photo says nothing
            results.append(ImageAnswer([(labels[j], j, p) for j, p in row], score, thresholds.decide(score, row[0][1]),
                                       explained[i] if explained else None))
        return Answer(self.model, self.version, k, results)
