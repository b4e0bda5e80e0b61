"""``index.json`` as pydantic models, and the limits one ingest runs under."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

from core.settings import Settings
from core.weak_validation import MIN_PER_CLASS

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
    # What confirmed the pair (the report's ``duplicate_check.method``): the cosine similarity of the two
    # photos' pooled backbone features, or 1 - mean absolute difference of the 8x8 colour thumbnails / 255.
    # 1.0 = identical either way.
    similarity: float


class DuplicateCheck(BaseModel):
    """How near duplicates were confirmed for this dataset (dataset_store/dedup.py)."""

    method: Literal["features", "thumbnail"]
    model: str | None = None  # the model whose pooled features judged the pairs ("imagenet v1")
    min_similarity: float  # a pair's similarity had to reach this (cosine for features)
    note: str = ""  # why the thumbnails decided, when they did


class DuplicateGroup(BaseModel):
    kind: Literal["exact", "near"]
    paths: list[str]  # archive paths ("original"), sorted
    # Near groups: the lowest similarity of the pairs that joined the group (1.0 for exact copies),
    # and those pairs (weakest first, at most MAX_PAIRS): how alike the files are, not just that they are.
    similarity: float = 1.0
    pairs: list[SimilarPair] = []


class NegativePhoto(BaseModel):
    """A reviewed photo marked "none of these": not a class, kept aside for the out-of-distribution threshold."""

    capture_id: str
    sha256: str


class Lineage(BaseModel):
    """Where a derived dataset came from: its parent plus reviewed feedback (feedback/dataset.py)."""

    parent: str  # the dataset id it extends
    source: Literal["feedback"] = "feedback"
    model: str  # whose captures were added
    model_version: int | None = None  # the active version whose dataset is the parent
    added: dict[str, int] = {}  # feedback photos added per class
    already_in_parent: int = 0  # labelled captures skipped: the same bytes (sha256) are in the parent
    negatives: list[NegativePhoto] = []
    note: str = ""


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
    duplicate_check: DuplicateCheck | None = None  # None: stored before the report named it
    warnings: list[str] = []
    split_reason: str = ""  # how the split was made and why (empty for an archive's own split)
    skipped: int = 0  # system/hidden files ignored silently (__MACOSX, .DS_Store, ...)
    lineage: Lineage | None = None  # None: uploaded as it is; else what it was derived from

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
            "parent": self.lineage.parent if self.lineage else None,
        }


DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION = 0.1, 0.1
MAX_HELD_OUT = 0.6  # val + test: training keeps at least 40 %


class SplitChoiceError(ValueError):
    """An uploader's split option that cannot be used; the message names the fix."""


def split_choice(val_fraction: str | None, test_fraction: str | None, min_val_per_class: str | None
                 ) -> dict[str, Any]:
    """IngestLimits overrides from an upload's form fields (strings, None when absent)."""
    out: dict[str, Any] = {}

    def number(name: str, raw: str, lo: float, hi: float, low_open: bool) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > hi or value < lo or (low_open and value == lo):
            side = f"above {lo}" if low_open else f"at least {lo}"
            raise SplitChoiceError(f"{name} must be a number {side} and at most {hi} (got {raw!r}); "
                                   f"e.g. {name}=0.2, or leave it out for the default")
        return value

    if val_fraction is not None and val_fraction.strip():
        out["val_fraction"] = number("val_fraction", val_fraction, 0.0, 0.5, True)
    if test_fraction is not None and test_fraction.strip():
        out["test_fraction"] = number("test_fraction", test_fraction, 0.0, 0.5, False)
    if min_val_per_class is not None and min_val_per_class.strip():
        raw = min_val_per_class.strip()
        if not raw.isdigit() or not 0 <= int(raw) <= 1000:
            raise SplitChoiceError(f"min_val_per_class must be a whole number from 0 to 1000 (got {raw!r}); "
                                   f"0 turns off raising small classes' val share")
        out["min_val_per_class"] = int(raw)
    held = out.get("val_fraction", DEFAULT_VAL_FRACTION) + out.get("test_fraction", DEFAULT_TEST_FRACTION)
    if held > MAX_HELD_OUT + 1e-9:
        raise SplitChoiceError(f"val_fraction + test_fraction is {held:.2f}: keep it at most {MAX_HELD_OUT} so "
                               f"training keeps at least {1 - MAX_HELD_OUT:.0%} of each class")
    if out:
        out["chosen_split"] = True
    return out


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
    # (of 64); it passes when its thumbnail similarity is at least near_duplicate_similarity, and, when the
    # ingest has a feature model, is confirmed when its features' cosine is at least near_duplicate_cosine
    # (chosen on labelled pairs: docs/benchmarks.md "Near-duplicate detection").
    near_duplicate_distance: int = 10
    near_duplicate_similarity: float = 0.94
    near_duplicate_cosine: float = 0.7
    # The made split (dataset_store/split.py). ``chosen_split``: the uploader set these (the report says so,
    # and the dataset id depends on them: the same archive with other ratios is another dataset).
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    min_val_per_class: int = MIN_PER_CLASS  # small classes' val share is raised towards this
    chosen_split: bool = False
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
    def split(self) -> tuple[float, float, float]:
        return 1.0 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)
