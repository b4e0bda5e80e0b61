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
INTERPOLATION = _INTERPOLATION
AUGMENTS = ("none", "light", "standard", "strong")


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
        out: torch.Tensor = self.transforms(img)
        return out


# ------------------------------------------------------------------ training presets
# They run on the cached uint8 tensors (square, ``resize`` pixels a side) and return uint8 crops of
# ``crop`` pixels; normalisation happens on the whole batch, on the training device.
class NonePreset:
    """No augmentation: the same center crop as evaluation."""

    def __init__(self, crop: int) -> None:
        self.transforms = T.CenterCrop(crop)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.transforms(img)
        return out


class LightPreset:
    """Random resized crop and horizontal flip."""

    def __init__(self, crop: int, extra: list[T.Transform] | None = None) -> None:
        self.transforms = T.Compose([
            T.RandomResizedCrop(crop, scale=(0.25, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            *(extra or []),
        ])

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.transforms(img)
        return out


class StandardPreset(LightPreset):
    """Light plus TrivialAugmentWide."""

    def __init__(self, crop: int) -> None:
        super().__init__(crop, [T.TrivialAugmentWide()])


class StrongPreset(LightPreset):
    """Light plus RandAugment and random erasing; mixup/cutmix are applied per batch (see batch_mix)."""

    def __init__(self, crop: int) -> None:
        super().__init__(crop, [T.RandAugment(num_ops=2, magnitude=9), T.RandomErasing(p=0.25, value=0)])


def train_preset(augment: str, crop: int) -> NonePreset | LightPreset:
    presets: dict[str, type[NonePreset | LightPreset]] = {
        "none": NonePreset, "light": LightPreset, "standard": StandardPreset, "strong": StrongPreset,
    }
    if augment not in presets:
        raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTS)}")
    return presets[augment](crop)


def batch_mix(augment: str, num_classes: int) -> T.Transform | None:
    """MixUp or CutMix (one at random per batch) for ``strong``; None otherwise."""
    if augment != "strong":
        return None
    return T.RandomChoice([T.MixUp(alpha=0.2, num_classes=num_classes),
                           T.CutMix(alpha=1.0, num_classes=num_classes)])
