"""Builders for real test archives (zip/tar with real image bytes); used by the dataset tests."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    """A distinct picture per seed: random blocks upscaled, so the dHash differs between seeds."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def reencoded(data: bytes, scale: float = 0.6, quality: int = 60) -> bytes:
    """The same picture re-encoded and resized: a near-duplicate."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def cropped(data: bytes, fraction: float) -> bytes:
    """The picture with ``fraction`` of its width and height cut from every side, re-encoded."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    dx, dy = max(1, round(img.width * fraction)), max(1, round(img.height * fraction))
    buf = io.BytesIO()
    img.crop((dx, dy, img.width - dx, img.height - dy)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def exif_rotated(data: bytes) -> bytes:
    """The pixels stored turned a quarter, with the EXIF orientation that turns them back (as cameras do)."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buf = io.BytesIO()
    img.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def low_detail(sky: tuple[int, int, int], blob: tuple[int, int, int], shape: tuple[int, int],
               side: int = 32) -> bytes:
    """A tiny low-detail photo as in CIFAR-10: a dark shape in the middle of a plain background,
    lit from the top left (so its light/dark layout, which the hashes see, is set by the scene)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    shade = 1.2 - 0.25 * y / side - 0.25 * x / side
    img = np.clip(np.array(sky, np.float32) * shade[..., None], 0, 255)
    inside = ((x - side / 2) / shape[0]) ** 2 + ((y - side / 2) / shape[1]) ** 2 <= 1
    img[inside] = blob
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def class_files(counts: Mapping[str, int], prefix: str = "", seed: int = 0) -> dict[str, bytes]:
    """``{prefix}{class}/{class}_{i}.jpg`` -> distinct photo bytes."""
    out = {}
    for c, (label, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            out[f"{prefix}{label}/{label}_{i:03d}.jpg"] = photo(seed * 100_000 + c * 1000 + i)
    return out


def make_zip(path: Path, files: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def zip_symlink(path: Path, name: str, target: str) -> Path:
    """A zip holding one Unix symlink entry (as `zip -y` writes it)."""
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        zf.writestr("ants/a.jpg", photo(1))
    return path


def make_tar(path: Path, files: Mapping[str, bytes], mode: str = "w:gz",
             extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tf.addfile(info)
    return path


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_bomb(path: Path, mib: int) -> Path:
    """``mib`` MiB of zeros deflated to a few KiB, beside a couple of real images."""
    files = class_files({"ants": 1, "bees": 1})
    files["ants/huge.bmp"] = bytes(mib * 1024 * 1024)
    return make_zip(path, files)


class _RawNameInfo(zipfile.ZipInfo):
    """A zip entry whose name is written as given bytes, with or without the UTF-8 flag (bit 11)."""

    raw_name = b""
    utf8_flag = False

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:  # zipfile's hook for the name bytes (its spelling)
        return self.raw_name, self.flag_bits | (0x800 if self.utf8_flag else 0)


def zip_raw_names(path: Path, files: Mapping[bytes, bytes], utf8_flag: bool = False) -> Path:
    """A zip whose names are the given bytes: e.g. cp437 or UTF-8 without the flag, as old tools write."""
    with zipfile.ZipFile(path, "w") as zf:
        for raw, data in files.items():
            info = _RawNameInfo(raw.decode("latin-1"))
            info.raw_name, info.utf8_flag = raw, utf8_flag
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def tar_raw_names(path: Path, files: Mapping[bytes, bytes]) -> Path:
    """A (GNU) tar whose names are the given bytes, e.g. latin-1 as tar on a latin-1 system writes them."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for raw, data in files.items():
            info = tarfile.TarInfo(raw.decode("utf-8", "surrogateescape"))
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
