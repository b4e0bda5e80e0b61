"""Same-background, different-object photos for the near-duplicate benchmark (bench/datasets/dedup.py).

The issue's false alarms were different garments shot on one floor or bedspread: the background fills
most of an 8x8 thumbnail, so the thumbnails agree although the objects do not. This builds that case
from real photos: each scene is one textured backdrop (wooden planks, floor tiles or a patterned
bedspread, drawn at photo size with grain and noise) with several different real photos cut out with a
soft oval mask and laid near its centre, at 30-55 % of the frame's height, the way a phone photo of a
garment on the floor is framed. Every composite is a distinct photo; two composites of one scene are a
false pair with the same background.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.images import open_rgb

WIDTH, HEIGHT = 480, 360
KINDS = ("planks", "tiles", "bedspread")


def backdrop(kind: str, rng: np.random.Generator) -> Image.Image:
    """A photo-sized textured background of ``kind`` with a random base colour and fine noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    if kind == "planks":
        plank = rng.uniform(40, 80)
        offset = rng.uniform(0, 1000, size=64)
        row = (y // plank).astype(int)
        grain = np.sin((x + offset[row % 64]) / rng.uniform(6, 14) + 3 * np.sin(y / 23.0)) * 12
        shade = (rng.uniform(-18, 18, size=64))[row % 64]
        seam = np.where((y % plank) < 2, -40.0, 0.0)
        value = grain + shade + seam
    elif kind == "tiles":
        side = rng.uniform(50, 90)
        grout = ((x % side) < 3) | ((y % side) < 3)
        cell = (x // side).astype(int) * 31 + (y // side).astype(int) * 17
        value = np.where(grout, -55.0, rng.uniform(-10, 10, size=4096)[cell % 4096])
    else:  # bedspread: a woven check with a soft floral-ish wave
        period = rng.uniform(18, 40)
        value = 14 * np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period) + 8 * np.sin(
            (x + 2 * y) / rng.uniform(8, 16))
    noise = rng.normal(0, 6, size=(HEIGHT, WIDTH, 3)).astype(np.float32)
    tint = rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    rgb = np.clip(base + value[..., None] * tint + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(0.6))


def oval_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    w, h = size
    ImageDraw.Draw(mask).ellipse((w * 0.04, h * 0.04, w * 0.96, h * 0.96), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(max(1.0, min(size) / 30)))


def composite(back: Image.Image, obj: Image.Image, rng: random.Random) -> Image.Image:
    """``obj`` cut out with a soft oval, scaled to 30-55 % of the frame's height, laid near the centre."""
    out = back.copy()
    height = int(HEIGHT * rng.uniform(0.30, 0.55))
    width = max(8, int(height * obj.width / obj.height))
    piece = obj.resize((width, height), Image.Resampling.BICUBIC)
    left = int((WIDTH - width) / 2 + rng.uniform(-0.06, 0.06) * WIDTH)
    top = int((HEIGHT - height) / 2 + rng.uniform(-0.06, 0.06) * HEIGHT)
    out.paste(piece, (left, top), oval_mask(piece.size))
    return out


def scenes(objects: Sequence[tuple[Path, str]], count: int, per_scene: int, dest: Path, seed: int = 0
           ) -> list[tuple[Path, str, int]]:
    """``count`` scenes of ``per_scene`` different objects each (drawn without replacement from
    ``objects``, no two of one class in a scene): (file, label, scene) per composite, saved as JPEG."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    pool = list(objects)
    rng.shuffle(pool)
    out: list[tuple[Path, str, int]] = []
    for s in range(count):
        back = backdrop(KINDS[s % len(KINDS)], nrng)
        used: set[str] = set()
        for _ in range(per_scene):
            k = next(k for k, (_, label) in enumerate(pool) if label not in used)
            path, label = pool.pop(k)
            used.add(label)
            file = dest / f"scene{s:03d}_{len(used)}.jpg"
            composite(back, open_rgb(path, 10**9), rng).save(file, "JPEG", quality=90)
            out.append((file, label, s))
    return out
