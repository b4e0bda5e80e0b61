"""Numpy/PIL twin of torchvision's eval transform (Resize shorter side, CenterCrop, Normalize).

Kept compatible with what the trainer feeds the network: the same PIL bicubic filter and the same crop
arithmetic as torchvision, within two grey levels on a few pixels (the resize computes only the pixels
the crop keeps, see ``_resize_cropped``); ``tests/integration/test_preprocess_twin.py`` checks the two
agree, ``tests/service/inference/test_preprocess.py`` the cropped resize against a full one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from core.images import DRAFT_MARGIN, MAX_ASPECT, Source, check_resized, draft, open_image, resized_size, to_rgb
from models.manifest import Preprocessing
from service.metrics import DECODE_SECONDS

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
__all__ = ["DRAFT_MARGIN", "center_crop_box", "decode", "normalise_into", "preprocess", "resized_size"]

# JPEG draft mode (core.images.draft) decodes at 1/2, 1/4 or 1/8 scale, 2-3x faster for big photos.
# It only shrinks to DRAFT_MARGIN x the resize target so the final bicubic resize still sees
# enough detail to match a full decode. Measured after normalisation against torchvision's full
# decode + Resize(256, bicubic) + CenterCrop(224): margin 2 differed by up to 0.0235 on a 2400x1800
# JPEG and by 0.047 (one pixel, 6 grey levels) on the real 1488x1984 photo in hymenoptera; margin 4
# by 0 on both. Photos with hard synthetic edges (mosaics) can still differ by ~0.05 at a few pixels
# when drafted at any margin; the mean difference stays below 0.003.


def center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    top = round((height - crop) / 2.0)
    left = round((width - crop) / 2.0)
    return left, top, left + crop, top + crop


def decode(source: Source | Path, pre: Preprocessing, max_pixels: int, use_draft: bool = True,
           max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Decode to RGB, resized and center-cropped to ``pre.crop`` (still uint8). The header's size and
    shape are checked first, and the resized size before the resize: no photo costs more than its bounds."""
    img = open_image(source, max_pixels, max_aspect)
    check_resized(*img.size, pre.resize, max_aspect)  # EXIF rotation swaps the sides, not the product
    if use_draft:
        draft(img, pre.resize * DRAFT_MARGIN)
    rgb = to_rgb(img)
    new_w, new_h = check_resized(rgb.width, rgb.height, pre.resize, max_aspect)
    if pre.crop > min(new_w, new_h):  # torchvision pads in this case; we keep it simple and exact
        if (new_w, new_h) != rgb.size:
            rgb = rgb.resize((new_w, new_h), _RESAMPLE[pre.interpolation])
        rgb = rgb.resize((max(new_w, pre.crop), max(new_h, pre.crop)), _RESAMPLE[pre.interpolation])
        return rgb.crop(center_crop_box(rgb.width, rgb.height, pre.crop))
    return _resize_cropped(rgb, new_w, new_h, pre)


def _resize_cropped(rgb: Image.Image, new_w: int, new_h: int, pre: Preprocessing) -> Image.Image:
    """Resize to ``new_w`` x ``new_h`` and centre-crop, computing only the pixels the crop keeps.

    Pillow resizes horizontally, then vertically. Each pass is its own call, asked for the crop's
    columns (then rows) alone (``box``: same scale and filter centres, so the same pixels up to a
    rounding of the filter weights), so the vertical pass runs on ``crop`` columns instead of ``new_w``
    and writes ``crop`` rows instead of ``new_h``. Columns alone took resize and crop from 5.36 to 3.18 ms
    a photo (196 ImageNet-sample and hymenoptera val photos, min of 5 interleaved passes on a loaded
    machine); rows too, 1.68 to 1.58 ms on the 153 hymenoptera val photos (quiet VNNI EPYC). The result
    differs from resize-then-crop by one grey level on a few pixels (1,926 of 23 million values over
    those 153 photos, 1,676 with the columns alone; none by more than one; fp32 top-1 unchanged). Both
    boxes in one call was tried and rejected: Pillow's two-box path differed by up to 13 grey levels.
    """
    resample = _RESAMPLE[pre.interpolation]
    left, top, right, bottom = center_crop_box(new_w, new_h, pre.crop)
    if new_w != rgb.width:
        scale = rgb.width / new_w
        rgb = rgb.resize((right - left, rgb.height), resample, box=(left * scale, 0, right * scale, rgb.height))
        left, right = 0, right - left
    if new_h != rgb.height:
        scale = rgb.height / new_h
        rgb = rgb.resize((rgb.width, bottom - top), resample, box=(0, top * scale, rgb.width, bottom * scale))
        top, bottom = 0, bottom - top
    return rgb.crop((left, top, right, bottom))


@lru_cache(maxsize=32)
def _affine(mean: tuple[float, float, float], std: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(x / 255 - mean) / std  ==  x * scale - shift, computed once per preprocessing."""
    std_arr = np.asarray(std, dtype=np.float32)
    return 1.0 / (255.0 * std_arr), np.asarray(mean, dtype=np.float32) / std_arr


def normalise_into(img: Image.Image, pre: Preprocessing, out: np.ndarray) -> None:
    """Write the CHW float32 tensor of ``img`` into ``out`` (a slot of a batch buffer, no extra copy)."""
    hwc = np.asarray(img, dtype=np.uint8)
    scale, shift = _affine(tuple(pre.mean), tuple(pre.std))
    for channel in range(3):
        np.multiply(hwc[:, :, channel], scale[channel], out=out[channel], casting="unsafe")
        out[channel] -= shift[channel]


def preprocess(
    source: Source | Path, pre: Preprocessing, max_pixels: int, use_draft: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One image to a (3, crop, crop) float32 array, normalised (into ``out`` when given)."""
    with DECODE_SECONDS.time():
        img = decode(source, pre, max_pixels, use_draft)
        if out is None:
            out = np.empty((3, pre.crop, pre.crop), dtype=np.float32)
        normalise_into(img, pre, out)
    return out
