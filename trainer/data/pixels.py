"""Decode once, keep resized uint8 pixels: the data side never becomes the bottleneck.

Every image is decoded with :func:`core.images.open_rgb` (as the service does), resized once to the
preprocessing's ``resize`` size and kept as uint8 tensors:

* ``eval``: resize shorter side + center crop, bit-identical to :class:`trainer.data.transforms.EvalPreset`
  before normalisation (validation, test, and the linear probe's features);
* ``train``: resize shorter side + a square center crop of ``resize`` pixels, from which the
  augmentation presets take their random crops.

Splits are cached in memory for the process (a search runs many trials on one dataset) and on disk
as ``.npy`` under a cache folder when one is given (a resumed job skips decoding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image

from core.fsutil import atomic_write, atomic_write_text
from core.images import DRAFT_MARGIN, check_resized, open_rgb
from core.settings import get_settings
from models.manifest import Preprocessing
from trainer.data.transforms import INTERPOLATION

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: big JPEGs drafted like the service's decode
_MEMORY: OrderedDict[str, CachedSplit] = OrderedDict()
_MEMORY_LIMIT = 6  # splits kept per process
_LOCK = threading.Lock()


class DatasetLike(Protocol):
    """What the engine needs from ``core.datasets.Dataset`` (read-only: nobody here changes a dataset)."""

    @property
    def id(self) -> str: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def root(self) -> Path: ...

    def items(self, split: str) -> list[tuple[Path, int]]: ...


@dataclass
class CachedSplit:
    """Decoded pixels of one split. ``train`` is None for splits only ever evaluated."""

    eval: torch.Tensor  # uint8 [N, 3, crop, crop]
    train: torch.Tensor | None  # uint8 [N, 3, resize, resize]
    labels: torch.Tensor  # int64 [N]
    paths: list[str]  # relative to the dataset folder when possible
    key: str = ""  # content key: dataset, split, preprocessing, file list

    def __len__(self) -> int:
        return int(self.labels.numel())


_NORM: dict[tuple[str, tuple[float, ...], tuple[float, ...]], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 (or 0-255 float) NCHW -> normalised float NCHW, on whatever device the batch is.

    The constants are made once per device: building them per batch is a host->device copy, which
    makes the CPU wait for the GPU's queue to drain every step (docs/benchmarks.md, "Trainer: the
    numbers behind its comments").
    """
    key = (str(batch.device), tuple(pre.mean), tuple(pre.std))
    if key not in _NORM:
        mean = torch.tensor(pre.mean, device=batch.device).view(1, 3, 1, 1) * 255.0
        _NORM[key] = (mean, torch.tensor(pre.std, device=batch.device).view(1, 3, 1, 1) * 255.0)
    mean, std = _NORM[key]
    return (batch.float() - mean) / std


def decode_image(path: Path, pre: Preprocessing, with_train: bool, max_pixels: int) -> tuple[Any, Any]:
    # The same bounds as the service (pixels, aspect ratio, size after resize, checked from the header),
    # and the same reduced-scale JPEG decode, so a hostile photo in a dataset costs no more here.
    img = open_rgb(path, max_pixels=max_pixels, draft_to=pre.resize * DRAFT_MARGIN)
    check_resized(img.width, img.height, pre.resize)
    resized: Image.Image = T.Resize(pre.resize, interpolation=INTERPOLATION[pre.interpolation],
                                    antialias=True)(img)
    eval_img = T.CenterCrop(pre.crop)(resized)
    eval_arr = np.asarray(eval_img, dtype=np.uint8).transpose(2, 0, 1)
    train_arr = None
    if with_train:
        train_arr = np.asarray(T.CenterCrop(pre.resize)(resized), dtype=np.uint8).transpose(2, 0, 1)
    return eval_arr, train_arr


def _key(dataset: DatasetLike, split: str, pre: Preprocessing, items: Sequence[tuple[Path, int]]) -> str:
    blob = json.dumps({
        "v": CACHE_VERSION, "id": getattr(dataset, "id", ""), "root": str(dataset.root), "split": split,
        "pre": pre.model_dump(mode="json"), "items": [(str(p), y) for p, y in items],
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def load_split(dataset: DatasetLike, split: str, pre: Preprocessing, with_train: bool = False,
               cache_dir: Path | None = None) -> CachedSplit:
    """The split's decoded pixels, from memory, the disk cache, or by decoding (threads: PIL frees the GIL)."""
    items = dataset.items(split)
    key = _key(dataset, split, pre, items)
    with _LOCK:
        hit = _MEMORY.get(key)
        if hit is not None and (hit.train is not None or not with_train):
            _MEMORY.move_to_end(key)
            return hit
    cached = _load_npy(cache_dir, key, with_train) if cache_dir is not None else None
    if cached is None:
        cached = _decode_all(dataset, items, pre, with_train)
        if cache_dir is not None:
            _save_npy(cache_dir, key, cached)
    cached.key = key
    with _LOCK:
        _MEMORY[key] = cached
        while len(_MEMORY) > _MEMORY_LIMIT:
            _MEMORY.popitem(last=False)
    return cached


def _decode_all(dataset: DatasetLike, items: Sequence[tuple[Path, int]], pre: Preprocessing,
                with_train: bool) -> CachedSplit:
    max_pixels = get_settings().max_image_pixels
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda it: decode_image(it[0], pre, with_train, max_pixels), items))
    n = len(items)
    eval_t = torch.from_numpy(np.stack([d[0] for d in decoded])) if n else torch.zeros(0, 3, pre.crop, pre.crop,
                                                                                           dtype=torch.uint8)
    train_t = None
    if with_train:
        train_t = (torch.from_numpy(np.stack([d[1] for d in decoded])) if n
                   else torch.zeros(0, 3, pre.resize, pre.resize, dtype=torch.uint8))
    labels = torch.tensor([y for _, y in items], dtype=torch.int64)
    paths = [_relative(Path(p), Path(dataset.root)) for p, _ in items]
    log.info("decoded %d images (%s)", n, "train+eval" if with_train else "eval")
    return CachedSplit(eval_t, train_t, labels, paths)


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def _save_npy(cache_dir: Path, key: str, split: CachedSplit) -> None:
    folder = cache_dir / "pixels"
    if split.train is not None:
        _atomic_npy(folder / f"{key}.train.npy", split.train.numpy())
    _atomic_npy(folder / f"{key}.eval.npy", split.eval.numpy())
    meta = json.dumps({"labels": split.labels.tolist(), "paths": split.paths})
    atomic_write_text(folder / f"{key}.json", meta)  # written last: its presence means the arrays are complete


def _load_npy(cache_dir: Path, key: str, with_train: bool) -> CachedSplit | None:
    folder = cache_dir / "pixels"
    meta_path = folder / f"{key}.json"
    train_path = folder / f"{key}.train.npy"
    if not meta_path.is_file() or (with_train and not train_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        eval_t = torch.from_numpy(np.load(folder / f"{key}.eval.npy"))
        train_t = torch.from_numpy(np.load(train_path)) if with_train else None
    except (OSError, ValueError) as exc:
        log.warning("pixel cache %s unreadable (%s); decoding again", key, exc)
        return None
    return CachedSplit(eval_t, train_t, torch.tensor(meta["labels"], dtype=torch.int64), meta["paths"])


def clear_memory_cache() -> None:
    with _LOCK:
        _MEMORY.clear()
