"""Class activation maps in numpy: why a served model predicted its top class, drawn over the photo.

A version exported with a CAM output (trainer/publish/cam.py) answers ``features`` (N, C, h, w) beside its
logits, and ``cam.npz`` holds the linear head. The map for class k is ``W_k . F`` (exact for a
global-average-pool + linear head): upsampled to the crop, coloured, and sent as a PNG whose alpha
follows the activation, so a client lays it straight over the crop. The crop box says where that
crop lies in the uploaded photo (resize shorter side, center crop: service/inference/preprocess.py).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from core.images import open_image
from models.manifest import CamOutput, Preprocessing
from service.inference.preprocess import center_crop_box, resized_size

MAX_ALPHA = 200  # the hottest pixel stays a little see-through


class NoCamOutput(Exception):
    """The version was exported without the feature-map output (answered with 409)."""


@dataclass(frozen=True)
class CamHead:
    output: str
    weight: np.ndarray  # (classes, channels) float32
    bias: np.ndarray  # (classes,)

    @classmethod
    def load(cls, folder: Path, cam: CamOutput | None, name: str, version: int) -> CamHead:
        if cam is None or not (folder / cam.weights).is_file():
            raise NoCamOutput(
                f"version {version} of {name!r} was exported without the feature-map output that explain=true "
                "needs (versions trained or bootstrapped before heatmaps existed, or a backbone whose head is "
                "not global-average-pool + linear): train a new version, or for the default model run "
                "`tuneserve bootstrap --force`; predict without explain=true meanwhile")
        with np.load(folder / cam.weights) as data:
            return cls(cam.output, data["weight"].astype(np.float32), data["bias"].astype(np.float32))

    def maps(self, features: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(N, h, w) maps of ``classes[i]`` for image i; ``mean(map) + bias`` is that class's logit."""
        maps: np.ndarray = np.einsum("nc,nchw->nhw", self.weight[classes], features.astype(np.float32, copy=False))
        return maps


def _jet(v: np.ndarray) -> np.ndarray:
    """The classic blue-cyan-yellow-red ramp for values in [0, 1]: (..., 3) uint8."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255 + 0.5).astype(np.uint8)


def heat(cam: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) map to (size, size) values in [0, 1]: negative evidence clipped, scaled to its peak."""
    positive = np.maximum(cam, 0).astype(np.float32)
    top = float(positive.max())
    if top <= 0:
        return np.zeros((size, size), np.float32)
    up = Image.fromarray(positive / top, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(up, dtype=np.float32), 0, 1)


def heatmap_png(values: np.ndarray) -> bytes:
    rgba = np.empty((*values.shape, 4), np.uint8)
    rgba[..., :3] = _jet(values)
    rgba[..., 3] = (values * MAX_ALPHA + 0.5).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG", compress_level=1)  # speed over a few hundred bytes
    return out.getvalue()


def oriented_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) as the model sees the photo: after its EXIF orientation, as core.images applies it."""
    img = open_image(data, max_pixels)
    size = img.size
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
        return size[1], size[0]
    return size


def crop_box(width: int, height: int, pre: Preprocessing) -> list[float]:
    """[left, top, right, bottom] of the model's input crop in the original photo's pixels."""
    new_w, new_h = resized_size(width, height, pre.resize)
    new_w, new_h = max(new_w, pre.crop), max(new_h, pre.crop)  # small photos are enlarged to the crop
    left, top, right, bottom = center_crop_box(new_w, new_h, pre.crop)
    sx, sy = width / new_w, height / new_h
    return [round(left * sx, 2), round(top * sy, 2), round(right * sx, 2), round(bottom * sy, 2)]


def explanation(cam: np.ndarray, label: str, index: int, box: list[float], crop: int) -> dict[str, Any]:
    values = heat(cam, crop)
    py, px = np.unravel_index(int(values.argmax()), values.shape)
    scale_x, scale_y = (box[2] - box[0]) / crop, (box[3] - box[1]) / crop
    peak = [round(box[0] + (px + 0.5) * scale_x, 1), round(box[1] + (py + 0.5) * scale_y, 1)]
    png = base64.b64encode(heatmap_png(values)).decode("ascii")
    return {"label": label, "index": index, "method": "cam", "size": [crop, crop], "grid": list(cam.shape),
            "crop_box": box, "peak": peak, "heatmap": f"data:image/png;base64,{png}"}
