"""Pooled backbone features of dataset images, for near duplicates judged on the object (torch-free).

Upload validation runs in the API process, which already has onnxruntime and the registry: the active
``imagenet`` version (bootstrapped on every install) is exported with its last convolutional feature map
as the output ``features`` (trainer/publish/cam.py), a (1,280, 7, 7) map. It is pooled with Gaussian weights
centred on the frame (sigma CENTRE_SIGMA of the map's side) rather than a flat average: a photo's
subject is mostly near its centre, and a flat average lets a shared floor or bedspread outweigh two
different garments. On labelled pairs (bench/datasets/dedup.py --set tune --sweep) the centre-weighted cosine kept
98 % of true pairs at pair precision 0.997, the flat average 94 % at 0.995 (docs/benchmarks.md). An
object far off-centre on a shared background is the case this weighting still misjudges. The session
is opened on the first upload that needs it and reopened when the active version changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.settings import Settings
from dataset_store.dedup import ObjectFeatures
from models import Registry
from models.manifest import Preprocessing
from models.meaning import PRETRAINED_MODEL
from models.registry import RegistryError
from service.inference.onnx_session import CPU, session_options
from service.inference.preprocess import decode, normalise_into

log = logging.getLogger(__name__)

FEATURES_OUTPUT = "features"  # the name trainer/publish/cam.py gives the feature-map output
BATCH = 16  # images per session run: enough to amortise the run, small enough for any dataset's memory
CENTRE_SIGMA = 0.21  # of the feature map's side (1.5 cells of 7): chosen with the threshold on the tune set


def centre_pool(maps: np.ndarray) -> np.ndarray:
    """(n, c, h, w) feature maps -> (n, c), averaged with Gaussian weights centred on the frame."""
    _, _, h, w = maps.shape
    ys = (np.arange(h) - (h - 1) / 2) / (CENTRE_SIGMA * h)
    xs = (np.arange(w) - (w - 1) / 2) / (CENTRE_SIGMA * w)
    weight = np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
    pooled: np.ndarray = np.einsum("nchw,hw->nc", maps, weight / weight.sum())
    return pooled


class FeatureModel:
    """Gives each upload the :class:`ObjectFeatures` of the active ``imagenet`` version, or None."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings
        self._lock = threading.Lock()
        self._loaded: tuple[Path, ObjectFeatures] | None = None

    def current(self) -> ObjectFeatures | None:
        """Features from the active ``imagenet`` version; None when there is none or it lacks the output
        (the upload then falls back to thumbnails, and its report says so)."""
        try:
            info = self.registry.get(PRETRAINED_MODEL)
        except RegistryError as exc:
            log.info("near duplicates confirmed on thumbnails: %s", exc)
            self._loaded = None  # deleted: its session goes with it
            return None
        with self._lock:
            if self._loaded is not None and self._loaded[0] == info.model_path:
                return self._loaded[1]
            session = ort.InferenceSession(str(info.model_path), session_options(self.settings, CPU),
                                           providers=[CPU])
            if FEATURES_OUTPUT not in {o.name for o in session.get_outputs()}:
                log.info("near duplicates confirmed on thumbnails: %s v%d has no %r output", PRETRAINED_MODEL,
                         info.version, FEATURES_OUTPUT)
                return None
            extractor = _Extractor(session, info.manifest.preprocessing, self.settings.max_image_pixels)
            objects = ObjectFeatures(model=f"{PRETRAINED_MODEL} v{info.version}", embed=extractor)
            self._loaded = (info.model_path, objects)
            return objects


class _Extractor:
    """Image files -> (n, channels) centre-pooled feature maps, BATCH files per session run."""

    def __init__(self, session: ort.InferenceSession, pre: Preprocessing, max_pixels: int) -> None:
        self.session, self.pre, self.max_pixels = session, pre, max_pixels
        self.input_name = session.get_inputs()[0].name
        self.half = "float16" in session.get_inputs()[0].type

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        rows = []
        for start in range(0, len(paths), BATCH):
            part = paths[start:start + BATCH]
            batch = np.empty((len(part), 3, self.pre.crop, self.pre.crop), dtype=np.float32)
            for k, path in enumerate(part):  # the predictor's own transform (not its decode metric)
                normalise_into(decode(path, self.pre, self.max_pixels), self.pre, batch[k])
            feed = batch.astype(np.float16) if self.half else batch
            (maps,) = self.session.run([FEATURES_OUTPUT], {self.input_name: feed})
            rows.append(centre_pool(np.asarray(maps, dtype=np.float32)))
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
