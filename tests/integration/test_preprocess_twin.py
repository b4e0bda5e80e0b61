"""The service's numpy/PIL preprocessing (service/inference/preprocess.py) against the trainer's torchvision
eval transform (trainer/data/transforms.py) on real photos: the two twins agree within 0.02.

Here rather than in tests/service: it needs the train extra (torch), and tests/service runs without it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.images import open_rgb
from models.manifest import Preprocessing
from service.inference.preprocess import preprocess
from trainer.data.transforms import EvalPreset

PRE = Preprocessing()
LIMIT = 40_000_000


def real_photos(imagenet_samples: Path, hymenoptera: Path) -> list[Path]:
    return sorted(imagenet_samples.glob("*.JPEG")) + sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:10]


def test_matches_torchvision_on_real_photos(imagenet_samples: Path, hymenoptera: Path) -> None:
    preset = EvalPreset(PRE)
    worst = 0.0
    for path in real_photos(imagenet_samples, hymenoptera):
        ours = preprocess(path.read_bytes(), PRE, LIMIT)
        theirs = preset(open_rgb(path, LIMIT)).numpy()
        assert ours.shape == theirs.shape == (3, 224, 224)
        worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst <= 0.02


def test_matches_torchvision_on_large_jpeg_decoded_in_draft_mode(imagenet_samples: Path) -> None:
    """Big JPEGs take the reduced-scale decode path; it must stay within the same tolerance."""
    preset = EvalPreset(PRE)
    for path in sorted(imagenet_samples.glob("*.JPEG"))[:4]:
        big = open_rgb(path, LIMIT).resize((3000, 2250), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        ours = preprocess(buf.getvalue(), PRE, LIMIT)
        theirs = preset(open_rgb(buf.getvalue(), LIMIT)).numpy()
        assert float(np.abs(ours - theirs).max()) <= 0.02
