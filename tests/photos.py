"""Where the real photos committed with the tests live (tests/data/*/SOURCE.md says where they come from).

A clone needs nothing beside it: no test reads a folder outside the repository.
"""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
IMAGENET_SAMPLES = DATA / "imagenet"  # 43 ImageNet photos and labels.csv
HYMENOPTERA = DATA / "ants_bees"  # a small subset of the ants/bees tutorial set, quirks kept


def imagenet_rows(folder: Path = IMAGENET_SAMPLES) -> list[dict[str, str]]:
    """The rows of the ImageNet photos' labels.csv (file, ImageNet index, ...)."""
    with (folder / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
