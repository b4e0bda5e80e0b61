"""Build datasets for trainer tests and benchmarks through the real dataset store (contract section 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.datasets import Dataset, IngestLimits
from dataset_store import DatasetStore

SUFFIXES = {".jpg", ".jpeg", ".png"}


def make_dataset(folder: Path, store_root: Path, name: str | None = None) -> Dataset:
    """Ingest ``folder`` (split/class/image or class/image) the way the API and CLI do."""
    dataset, _ = DatasetStore(store_root).ingest_folder(folder, name, IngestLimits(workers=1))
    return dataset


def subset_folder(src: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """Copy the first N images (sorted names) of each class of each split into ``dest``."""
    for split, n in per_class.items():
        for class_dir in sorted((src / split).iterdir()):
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in SUFFIXES)[:n]
            for p in files:
                out = dest / split / class_dir.name / p.name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out)
    return dest
