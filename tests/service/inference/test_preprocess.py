"""The service's numpy/PIL preprocessing: the cropped resize, EXIF, modes and errors (the comparison with the
trainer's torchvision transform needs torch: tests/integration/test_preprocess_twin.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import ImageError, open_rgb
from models.manifest import Preprocessing
from service.inference.preprocess import center_crop_box, decode, preprocess, resized_size

PRE = Preprocessing()
LIMIT = 40_000_000


def real_photos(imagenet_samples: Path, hymenoptera: Path) -> list[Path]:
    return sorted(imagenet_samples.glob("*.JPEG")) + sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:10]


def test_cropped_resize_matches_resize_then_crop(imagenet_samples: Path, hymenoptera: Path) -> None:
    """decode() computes only the crop's columns, then its rows; against the full resize then crop (what
    torchvision does) it may differ where Pillow rounds a filter weight the other way: one grey level
    after a pass, which the vertical bicubic pass (negative lobes) can make two, on few pixels. Each
    photo also turned a quarter (PNG, lossless), so landscape and portrait both crop either way."""
    differing = total = 0
    for path in real_photos(imagenet_samples, hymenoptera):
        photo = open_rgb(path, LIMIT)
        for data in (path.read_bytes(), encode(photo.transpose(Image.Transpose.ROTATE_90), "PNG")):
            img = open_rgb(data, LIMIT)
            size = resized_size(img.width, img.height, PRE.resize)
            full = img.resize(size, Image.Resampling.BICUBIC).crop(center_crop_box(*size, PRE.crop))
            ours = np.asarray(decode(data, PRE, LIMIT, use_draft=False), dtype=np.int16)
            diff = np.abs(ours - np.asarray(full, dtype=np.int16))
            assert diff.max() <= 2, path.name
            differing += int((diff > 0).sum())
            total += diff.size
    assert differing < 0.001 * total


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
