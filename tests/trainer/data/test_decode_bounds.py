"""The trainer's loader refuses the photos the API refuses (tests/service/inference/test_hostile_photos.py),
from their header, with the same bounds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.images import ImageError
from models.manifest import Preprocessing
from trainer.data.pixels import decode_image

PRE = Preprocessing()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_trainer_loader_applies_the_same_bounds(tmp_path: Path) -> None:
    stripe = tmp_path / "stripe.png"
    stripe.write_bytes(png(20000, 1))
    with pytest.raises(ImageError) as err:
        decode_image(stripe, PRE, False, 40_000_000)
    assert err.value.kind == "aspect"
    ok = tmp_path / "ok.png"
    ok.write_bytes(png(300, 200))
    eval_arr, _ = decode_image(ok, PRE, False, 40_000_000)
    assert np.asarray(eval_arr).shape == (3, PRE.crop, PRE.crop)
