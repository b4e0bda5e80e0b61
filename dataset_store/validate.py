"""Per-file validation: decode every image fully, the same way the service does, and fingerprint it.

Runs in worker processes (decode, hash and dHash are CPU-bound); everything here is picklable.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
from PIL import Image

from core.datasets.errors import DatasetInvalid
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_file(local: str, max_pixels: int, min_side: int) -> Checked:
    """Hash and fully decode one file; never raises for a bad image. Reads in chunks: a huge
    non-image in an archive costs time, not memory."""
    path = Path(local)
    base = Checked(local=local, size=path.stat().st_size, sha256=_sha256(path))
    if not base.size:
        return _with_problem(base, "empty file (0 bytes)")
    try:
        with path.open("rb") as fh:
            img = open_image(fh, max_pixels)
            fmt = img.format or ""
            if fmt not in ALLOWED_FORMATS:
                return _with_problem(base, f"unsupported image format {fmt}; convert to JPEG, PNG or WebP")
            rgb = to_rgb(img)  # full decode: truncated or corrupt data fails here, not at training time
    except ImageError as exc:
        return _with_problem(base, _describe(exc))
    width, height = rgb.size
    if min(width, height) < min_side:
        return _with_problem(base, f"too small: {width}x{height}, each side must be at least {min_side} px")
    return Checked(local=local, size=base.size, sha256=base.sha256, format=fmt, width=width, height=height,
                   dhash=dhash(rgb))


def _with_problem(base: Checked, problem: str) -> Checked:
    return Checked(local=base.local, size=base.size, sha256=base.sha256, problem=problem)


def _describe(exc: ImageError) -> str:
    if exc.kind == "unsupported":
        return "not an image, or an unsupported image format"
    if exc.kind == "too_large":
        return f"too large: {exc}"
    return str(exc)


def _context() -> BaseContext:
    """forkserver: the API process has threads (event loop, decode pool) and forking those is unsafe.

    The server preloads this module, so each worker starts with Pillow and numpy already imported.
    """
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _check_many(locals_: list[str], max_pixels: int, min_side: int) -> list[Checked]:
    return [check_file(p, max_pixels, min_side) for p in locals_]


class FileChecker:
    """Checks files in worker processes while they are still arriving (unpacking overlaps decoding).

    ``add`` queues a file; every ``BATCH`` files go to the pool as one task (batches amortise
    pickling). ``results`` waits and answers in the order asked, checking anything not added yet.
    The pool only starts once there is enough work to pay for it.
    """

    BATCH = 32

    def __init__(self, max_pixels: int, min_side: int, workers: int) -> None:
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[str] = []
        self._tasks: list[tuple[list[str], Future[list[Checked]]]] = []
        self._added = 0

    def __enter__(self) -> FileChecker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, path: Path) -> None:
        if self.workers <= 1:
            return  # checked inline by results(): no pool, nothing to overlap
        self._pending.append(str(path))
        self._added += 1
        if len(self._pending) >= self.BATCH and self._added >= POOL_MIN_FILES:
            self._flush()

    def results(self, paths: Iterable[Path]) -> list[Checked]:
        wanted = [str(p) for p in paths]
        if self.workers <= 1 or (self._pool is None and len(wanted) < POOL_MIN_FILES):
            self._pending.clear()
            return _check_many(wanted, self.max_pixels, self.min_side)
        known = set(self._pending).union(*(batch for batch, _ in self._tasks))
        self._pending.extend(p for p in wanted if p not in known)
        while self._pending:
            self._flush()
        done: dict[str, Checked] = {}
        try:
            for _, future in self._tasks:
                done.update((c.local, c) for c in future.result())
        except BrokenProcessPool as exc:  # a decoder crashed (or was killed for memory) on some file
            raise DatasetInvalid(
                "an image crashed the decoder while checking the archive; remove damaged or exotic files "
                "(or convert them to JPEG/PNG) and upload again") from exc
        return [done[p] for p in wanted]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _flush(self) -> None:
        batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH:]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context())
        self._tasks.append((batch, self._pool.submit(_check_many, batch, self.max_pixels, self.min_side)))


def check_files(paths: Iterable[Path], max_pixels: int, min_side: int, workers: int) -> list[Checked]:
    """Check every file, in order; uses ``workers`` processes when there is enough work."""
    items = list(paths)
    with FileChecker(max_pixels, min_side, workers) as checker:
        return checker.results(items)
