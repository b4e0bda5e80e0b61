"""Trainer fixtures: small real and synthetic datasets ingested through the real dataset store.

Everything expensive (ingest, decoded pixels, backbone features) is built once per session; the
trainer's own per-process caches make repeated runs on the same data cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import Dataset
from tests.trainer.dataset_helpers import make_dataset, subset_folder

# Tiny on purpose: a fine-tuning epoch over 12 images at 224 px takes ~2 s on 2 cores.
HYM_SMALL = {"train": 6, "val": 4}  # per class
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (50, 60, 200)}


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def hym_small(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path, store_root: Path) -> Dataset:
    """6 train + 4 val images per class of the real hymenoptera photos."""
    folder = subset_folder(hymenoptera, tmp_path_factory.mktemp("hym_small") / "hym", HYM_SMALL)
    return make_dataset(folder, store_root, "hym-small")


@pytest.fixture(scope="session")
def hym_probe(tmp_path_factory: pytest.TempPathFactory, hymenoptera: Path, store_root: Path) -> Dataset:
    """20 train + 10 val per class: enough for a linear probe to show real accuracy."""
    folder = subset_folder(hymenoptera, tmp_path_factory.mktemp("hym_probe") / "hym", {"train": 20, "val": 10})
    return make_dataset(folder, store_root, "hym-probe")


def write_synthetic(folder: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    """Three colour classes of noisy 48x48 photos-alike (distinct enough to avoid duplicate checks)."""
    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for name, colour in COLOURS.items():
            out = folder / split / name
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.normal(0, 60, size=(48, 48, 3))
                gradient = np.linspace(-40, 40, 48)[None, :, None] * rng.choice([-1, 1])
                pixels = np.clip(np.array(colour)[None, None, :] + noise + gradient, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(out / f"{name}_{split}_{i}.png")
    return folder


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory, store_root: Path) -> Dataset:
    """3 classes with train/val/test splits."""
    folder = write_synthetic(tmp_path_factory.mktemp("synthetic") / "colours", {"train": 6, "val": 4, "test": 4})
    return make_dataset(folder, store_root, "colours")
