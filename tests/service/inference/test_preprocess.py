"""The service's numpy/PIL preprocessing matches torchvision's eval transform used in training."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import ImageError, open_rgb
from models.manifest import Preprocessing
from service.inference.preprocess import preprocess

PRE = Preprocessing()
LIMIT = 40_000_000


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(imagenet_samples: Path) -> Image.Image:
    return open_rgb(imagenet_samples / "n02123045_tabby.JPEG", LIMIT)


def test_exif_orientation_is_honoured(photo: Image.Image) -> None:
    rotated = photo.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the tag that says "rotate 90 CW to display"
    data = encode(rotated, "PNG", exif=exif.tobytes())
    upright = open_rgb(data, LIMIT)
    assert upright.size == photo.size
    assert np.abs(np.asarray(upright, np.int16) - np.asarray(photo, np.int16)).mean() < 1.0


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "I;16", "1"])
def test_image_modes_are_converted(photo: Image.Image, mode: str) -> None:
    if mode == "I;16":
        grey = np.asarray(photo.convert("L"), np.uint16) * 257
        img = Image.fromarray(grey)
        assert img.mode.startswith("I;16")
        data = encode(img, "PNG")
    elif mode == "P":
        data = encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    elif mode == "CMYK":
        data = encode(photo.convert("CMYK"), "JPEG")
    else:
        data = encode(photo.convert(mode), "PNG")
    rgb = open_rgb(data, LIMIT)
    assert rgb.mode == "RGB" and rgb.size == photo.size
    arr = preprocess(data, PRE, LIMIT)
    assert arr.shape == (3, 224, 224) and np.isfinite(arr).all()
    if mode in ("L", "I;16"):  # grey survives as grey, not white or black
        ref = np.asarray(photo.convert("L"), np.float32)
        assert abs(float(np.asarray(rgb, np.float32)[..., 0].mean()) - float(ref.mean())) < 2.0


def test_transparent_pixels_become_white(photo: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)
    rgb = open_rgb(encode(rgba, "PNG"), LIMIT)
    assert np.asarray(rgb).min() == 255


def test_errors_have_kinds(photo: Image.Image) -> None:
    data = encode(photo, "JPEG")
    with pytest.raises(ImageError) as err:
        open_rgb(data[: len(data) // 2], LIMIT)
    assert err.value.kind == "corrupt"
    with pytest.raises(ImageError) as err:
        open_rgb(b"plain text, not a picture", LIMIT)
    assert err.value.kind == "unsupported"
    with pytest.raises(ImageError) as err:
        open_rgb(data, max_pixels=1000)
    assert err.value.kind == "too_large"
    with pytest.raises(ImageError) as err:
        open_rgb(b"", LIMIT)
    assert err.value.kind == "empty"
