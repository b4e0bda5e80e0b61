"""Opening user images the same way everywhere (API, dataset ingest, training): torch-free.

Every path that turns bytes into pixels opens with :func:`open_image` (our pixel limit) and converts
with :func:`to_rgb` (EXIF orientation applied, palette/grey/CMYK/16-bit/alpha converted), so the
service and the trainer agree on orientation and colour. Dataset ingest and training call both at
once through :func:`open_rgb`; the service (``service/inference/preprocess.py``) calls them separately so that
it can ask a big JPEG for a reduced-scale decode in between (``draft``), which stays within what
``tests/integration/test_preprocess_twin.py`` accepts against torchvision's full decode.

Every photo's cost is bounded from its header, before any pixel is decoded or resized: its pixel count
(``max_pixels``) and its aspect ratio (``max_aspect``). The aspect bound is what keeps the resize cheap:
the shorter side is scaled to the model's input size, so the longer side after resize is at most
``max_aspect`` times that (a 20000x1 PNG would otherwise become 5,120,000x256 before the crop).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An image that cannot be used. ``kind`` tells the HTTP layer which status code fits."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "unsupported" | "corrupt" | "too_large" | "too_small" | "empty" | "aspect"


# Longest side / shortest side. Phone panoramas stay under ~12:1; a model sees a centre square anyway, so
# a stripe longer than this is refused everywhere (API, dataset ingest, training) by the same number.
MAX_ASPECT = 30.0
# JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling). We let it shrink to no less than
# DRAFT_MARGIN x the resize target so the final resize still sees enough detail to match a full decode
# (service/inference/preprocess.py has the measurements).
DRAFT_MARGIN = 4


Source = bytes | Path | BinaryIO


def _open(source: Source) -> Image.Image:
    # We enforce our own pixel limit (with a clear message) right after reading the header; Pillow's
    # own bomb check would fire only at twice its default and with a warning first. Set here, where
    # images are opened, rather than as a side effect of importing this module.
    Image.MAX_IMAGE_PIXELS = None
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty", "empty file")
        return Image.open(io.BytesIO(source))
    return Image.open(source)


def open_image(source: Source, max_pixels: int, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Open (header only) and check the size and shape; raises :class:`ImageError`."""
    try:
        img = _open(source)
    except UnidentifiedImageError as exc:
        raise ImageError("unsupported", "not an image, or an unsupported image format") from exc
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("corrupt", f"corrupt image header: {exc}") from exc
    try:
        check_size(*img.size, max_pixels, max_aspect)
    except ImageError:
        img.close()  # a path's file handle is Pillow's until closed
        raise
    return img


def check_size(width: int, height: int, max_pixels: int, max_aspect: float = MAX_ASPECT) -> None:
    """Raises :class:`ImageError` for an image over ``max_pixels``, longer than ``max_aspect`` times its
    width (or the reverse), or without pixels."""
    if width * height > max_pixels:
        raise ImageError(
            "too_large",
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
        )
    if width < 1 or height < 1:
        raise ImageError("corrupt", "image has no pixels")
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(
            "aspect",
            f"image is {width}x{height}, an aspect ratio of {max(width, height) / min(width, height):,.0f}:1, "
            f"over the limit of {max_aspect:g}:1; crop it to the part to classify",
        )


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(int): shorter side to ``size``, longer side scaled and truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def check_resized(width: int, height: int, size: int, max_aspect: float = MAX_ASPECT) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is resized to (shorter side ``size``), checked before
    the resize is paid: never over ``size`` x ``size * max_aspect`` pixels."""
    new_w, new_h = resized_size(width, height, size)
    bound = size * max(size, int(size * max_aspect))
    if new_w * new_h > bound:
        raise ImageError("aspect", f"image is {width}x{height}; resized to {new_w}x{new_h} it would be over "
                                   f"{bound:,} pixels (aspect ratio limit {max_aspect:g}:1): crop it")
    return new_w, new_h


def to_rgb(img: Image.Image) -> Image.Image:
    """Decode fully and convert to 8-bit RGB, honouring EXIF orientation and transparency."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency chatter
            img.load()
            # In place: an upright photo is not copied (the copy was 0.16 ms of a 3.6 ms preprocess of a
            # 500x375 JPEG); callers pass an image they opened for this call alone.
            ImageOps.exif_transpose(img, in_place=True)
            return _convert(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated data, bad huffman tables...
        raise ImageError("corrupt", f"corrupt or truncated image: {exc}") from exc


def _convert(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def open_rgb(source: Source, max_pixels: int, max_aspect: float = MAX_ASPECT, draft_to: int = 0) -> Image.Image:
    """Open, check size, decode and convert: the one way bytes become an RGB image. ``draft_to`` > 0: a
    JPEG is decoded at the smallest DCT scale whose sides stay at least that long (much less memory and
    time for a big photo that is resized anyway)."""
    img = open_image(source, max_pixels, max_aspect)
    if draft_to > 0:
        draft(img, draft_to)
    return to_rgb(img)


def draft(img: Image.Image, target: int) -> None:
    """Ask a JPEG for a reduced-scale decode keeping both sides >= ``target`` (no-op for other formats)."""
    if img.format == "JPEG":
        img.draft("RGB", (target, target))
