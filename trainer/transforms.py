"""Transform presets (torchvision transforms v2), in the style of torchvision's references."""

from __future__ import annotations

import torch
import torchvision.transforms.v2 as T
from PIL import Image

from models.manifest import Preprocessing

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


class EvalPreset:
    """Resize shorter side, center crop, normalise: the transform the service mirrors in numpy."""

    def __init__(self, pre: Preprocessing) -> None:
        self.transforms = T.Compose([
            T.Resize(pre.resize, interpolation=_INTERPOLATION[pre.interpolation], antialias=True),
            T.CenterCrop(pre.crop),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(pre.mean), std=list(pre.std)),
        ])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.transforms(img)  # type: ignore[no-any-return]
