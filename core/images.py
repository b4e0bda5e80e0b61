"""Opening user images the same way everywhere (API, dataset ingest, training): torch-free.

Every path that turns bytes into pixels opens with :func:`open_image` (our pixel limit) and converts
with :func:`to_rgb` (EXIF orientation applied, palette/grey/CMYK/16-bit/alpha converted), so the
service and the trainer agree on orientation and colour. Dataset ingest and training call both at
once through :func:`open_rgb`; the service (``service/preprocess.py``) calls them separately so that
it can ask a big JPEG for a reduced-scale decode in between (``draft``), which stays within what
``tests/service/test_preprocess.py`` accepts against torchvision's full decode.
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
        self.kind = kind  # "unsupported" | "corrupt" | "too_large" | "too_small" | "empty"


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


def open_image(source: Source, max_pixels: int) -> Image.Image:
    """Open (header only) and check the size; raises :class:`ImageError`."""
    try:
        img = _open(source)
    except UnidentifiedImageError as exc:
        raise ImageError("unsupported", "not an image, or an unsupported image format") from exc
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("corrupt", f"corrupt image header: {exc}") from exc
    check_size(*img.size, max_pixels)
    return img


def check_size(width: int, height: int, max_pixels: int) -> None:
    """Raises :class:`ImageError` for an image over ``max_pixels`` or without pixels."""
    if width * height > max_pixels:
        raise ImageError(
            "too_large",
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}",
        )
    if width < 1 or height < 1:
        raise ImageError("corrupt", "image has no pixels")


def to_rgb(img: Image.Image) -> Image.Image:
    """Decode fully and convert to 8-bit RGB, honouring EXIF orientation and transparency."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency chatter
            img.load()
            img = ImageOps.exif_transpose(img) or img
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


def open_rgb(source: Source, max_pixels: int) -> Image.Image:
    """Open, check size, decode and convert: the one way bytes become an RGB image."""
    return to_rgb(open_image(source, max_pixels))
