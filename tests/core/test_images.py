"""core.images applies our own pixel limit, not Pillow's decompression-bomb check."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib

import pytest
from PIL import Image

from core.images import ImageError, open_image


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (opening reads only the header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_open_image_lifts_pillows_bomb_check_and_keeps_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's default limit, as in a fresh process: 20000x20000 would raise DecompressionBombError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024 * 1024 // 4 // 3)
    big = png_header(20_000, 20_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        img = open_image(big, max_pixels=500_000_000)
    assert img.size == (20_000, 20_000)
    with pytest.raises(ImageError) as err:
        open_image(big, max_pixels=40_000_000)
    assert err.value.kind == "too_large" and "40,000,000" in str(err.value)


def test_importing_core_images_changes_no_pillow_setting() -> None:
    code = "from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import core.images; " \
           "print(before == Image.MAX_IMAGE_PIXELS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr
