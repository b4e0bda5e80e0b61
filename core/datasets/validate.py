"""Per-file validation: decode every image fully, the same way the service does, and fingerprint it.

Runs in worker processes (decode, hash and dHash are CPU-bound); everything here is picklable.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from core.images import ImageError, open_image, to_rgb

log = logging.getLogger(__name__)

# Formats a training pipeline can rely on. Pillow opens more (PSD, EPS, ICO, PDF...), but those
# are documents or icons, not photos: reject them by name so the uploader knows what to convert.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
# Below this many files a process pool costs more to start than it saves.
POOL_MIN_FILES = 48


@dataclass(frozen=True)
class Checked:
    """The outcome for one file: either ``problem`` or the image facts."""

    local: str
    size: int
    sha256: str
    problem: str | None = None
    format: str = ""
    width: int = 0
    height: int = 0
    dhash: int = 0


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: survives re-encoding and resizing, changes with the picture."""
    small = img.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = np.asarray(small, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def check_file(local: str, max_pixels: int, min_side: int) -> Checked:
    """Read, hash and fully decode one file; never raises for a bad image."""
    data = Path(local).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    base = Checked(local=local, size=len(data), sha256=digest)
    if not data:
        return _with_problem(base, "empty file (0 bytes)")
    try:
        img = open_image(data, max_pixels)
        fmt = img.format or ""
        if fmt not in ALLOWED_FORMATS:
            return _with_problem(base, f"unsupported image format {fmt}; convert to JPEG, PNG or WebP")
        rgb = to_rgb(img)  # full decode: truncated or corrupt data fails here, not at training time
    except ImageError as exc:
        return _with_problem(base, _describe(exc))
    width, height = rgb.size
    if min(width, height) < min_side:
        return _with_problem(base, f"too small: {width}x{height}, each side must be at least {min_side} px")
    return Checked(local=local, size=len(data), sha256=digest, format=fmt, width=width, height=height,
                   dhash=dhash(rgb))


def _with_problem(base: Checked, problem: str) -> Checked:
    return Checked(local=base.local, size=base.size, sha256=base.sha256, problem=problem)


def _describe(exc: ImageError) -> str:
    if exc.kind == "unsupported":
        return "not an image, or an unsupported image format"
    if exc.kind == "too_large":
        return f"too large: {exc}"
    return str(exc)


def _check_many(locals_: list[str], max_pixels: int, min_side: int) -> list[Checked]:
    return [check_file(p, max_pixels, min_side) for p in locals_]


def check_files(paths: Iterable[Path], max_pixels: int, min_side: int, workers: int) -> list[Checked]:
    """Check every file, in order; uses ``workers`` processes when there is enough work."""
    items = [str(p) for p in paths]
    if workers <= 1 or len(items) < POOL_MIN_FILES:
        return _check_many(items, max_pixels, min_side)
    # Batches amortise pickling; several per worker keep both cores busy to the end.
    size = max(8, min(64, len(items) // (workers * 4) or 1))
    batches = [items[i:i + size] for i in range(0, len(items), size)]
    # forkserver: the API process has threads (event loop, decode pool), and forking those is unsafe.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver")) as pool:
        results = pool.map(_check_many, batches, [max_pixels] * len(batches), [min_side] * len(batches))
        return [c for batch in results for c in batch]
