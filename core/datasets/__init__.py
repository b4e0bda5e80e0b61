"""The dataset store: safe archive upload, per-file validation, duplicates, leak-free splits. Torch-free."""

from core.datasets.errors import (
    ArchiveCorrupt,
    ArchiveTooLarge,
    ArchiveUnsafe,
    DatasetError,
    DatasetInvalid,
    DatasetNotFound,
    UnsupportedArchive,
)
from core.datasets.models import Dataset, DuplicateGroup, FileEntry, IngestLimits, Problem
from core.datasets.store import DatasetStore

__all__ = [
    "ArchiveCorrupt",
    "ArchiveTooLarge",
    "ArchiveUnsafe",
    "Dataset",
    "DatasetError",
    "DatasetInvalid",
    "DatasetNotFound",
    "DatasetStore",
    "DuplicateGroup",
    "FileEntry",
    "IngestLimits",
    "Problem",
    "UnsupportedArchive",
]
