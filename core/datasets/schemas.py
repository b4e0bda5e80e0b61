"""``index.json`` as pydantic models, and the limits one ingest runs under."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

from core.settings import Settings

INDEX_FILE = "index.json"
# index.json's format (core/formats.py): 1 = this layout with the key; 0 = the same layout without it.
DATASET_FORMAT = 1
IMAGES_DIR = "images"
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str  # relative to the dataset folder, e.g. "images/train/ants/x.jpg"
    original: str  # path inside the uploaded archive (or folder)
    label: str
    split: Split
    sha256: str
    size: int
    width: int
    height: int


class Problem(BaseModel):
    path: str
    problem: str


class SimilarPair(BaseModel):
    paths: tuple[str, str]  # archive paths
    similarity: float  # 1 - mean absolute difference of the 8x8 colour thumbnails / 255; 1.0 = identical


class DuplicateGroup(BaseModel):
    kind: Literal["exact", "near"]
    paths: list[str]  # archive paths ("original"), sorted
    # Near groups: the lowest similarity of the pairs that joined the group (1.0 for exact copies),
    # and those pairs (weakest first, at most MAX_PAIRS): how alike the files are, not just that they are.
    similarity: float = 1.0
    pairs: list[SimilarPair] = []


class Dataset(BaseModel):
    """A stored dataset: the parsed ``index.json`` plus where it lives."""

    model_config = ConfigDict(extra="ignore")

    format_version: int = 0  # absent: written before formats were versioned (same layout as 1)
    id: str
    name: str
    created_at: str
    classes: list[str]  # sorted; label index = position
    split_source: Literal["archive", "made"]
    layout: str = ""  # "class_folders" | "split_folders" | "labels_csv"
    files: list[FileEntry]
    counts: dict[str, dict[str, int]]
    problems: list[Problem] = []
    duplicates: list[DuplicateGroup] = []
    warnings: list[str] = []
    skipped: int = 0  # system/hidden files ignored silently (__MACOSX, .DS_Store, ...)

    _root: Path | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError(f"dataset {self.id} is not attached to a folder")
        return self._root

    def attach(self, root: Path) -> Dataset:
        self._root = root
        return self

    def items(self, split: str) -> list[tuple[Path, int]]:
        """(absolute image path, label index) for every file of ``split``, in index order."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [(self.root / f.path, index[f.label]) for f in self.files if f.split == split]

    def report(self) -> dict[str, object]:
        """Everything but the per-file list: what the API shows for a dataset."""
        data = self.model_dump(exclude={"files", "format_version"})
        data["num_files"] = len(self.files)
        return data

    def summary(self) -> dict[str, object]:
        return {
            "id": self.id, "name": self.name, "created_at": self.created_at, "classes": self.classes,
            "split_source": self.split_source, "counts": self.counts, "num_files": len(self.files),
            "problems": len(self.problems), "warnings": len(self.warnings),
        }


def _setting_default(name: str) -> Any:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class IngestLimits:
    """Everything an ingest is allowed to do; build it from Settings with :meth:`from_settings`."""

    # The limits a user can set default to Settings' defaults (one place for each number).
    max_uncompressed_bytes: int = _setting_default("max_uncompressed_bytes")
    max_archive_files: int = _setting_default("max_archive_files")
    max_compression_ratio: float = _setting_default("max_compression_ratio")
    # The ratio check applies once this much is unpacked: tiny archives of flat images compress
    # well without being bombs.
    ratio_floor_bytes: int = 16 * 1024**2
    max_image_pixels: int = _setting_default("max_image_pixels")
    min_image_side: int = _setting_default("min_image_side")
    min_images_per_class: int = _setting_default("min_images_per_class")
    # Near duplicates (dataset_store/dedup.py): a candidate has a dHash or pHash within this many bits
    # (of 64); it is confirmed when its thumbnail similarity is at least near_duplicate_similarity.
    near_duplicate_distance: int = 10
    near_duplicate_similarity: float = 0.94
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    workers: int = 0  # 0 = one process per core

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> IngestLimits:
        limits = cls(
            max_uncompressed_bytes=settings.max_uncompressed_bytes,
            max_archive_files=settings.max_archive_files,
            max_compression_ratio=settings.max_compression_ratio,
            max_image_pixels=settings.max_image_pixels,
            min_image_side=settings.min_image_side,
            min_images_per_class=settings.min_images_per_class,
        )
        return dataclasses.replace(limits, **overrides)

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)
