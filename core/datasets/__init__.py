"""Dataset contracts: the ``index.json`` schemas, the ingest limits and the errors (the store that
writes them is ``dataset_store``)."""

from core.datasets.errors import (
    ArchiveCorrupt,
    ArchiveTooLarge,
    ArchiveUnsafe,
    DatasetError,
    DatasetInvalid,
    DatasetNotFound,
    DatasetTooNew,
    UnsupportedArchive,
)
from core.datasets.schemas import (
    DATASET_FORMAT,
    Dataset,
    DuplicateCheck,
    DuplicateGroup,
    FileEntry,
    IngestLimits,
    Problem,
    SplitChoiceError,
    split_choice,
)

__all__ = [
    "DATASET_FORMAT",
    "ArchiveCorrupt",
    "ArchiveTooLarge",
    "ArchiveUnsafe",
    "Dataset",
    "DatasetError",
    "DatasetInvalid",
    "DatasetNotFound",
    "DatasetTooNew",
    "DuplicateCheck",
    "DuplicateGroup",
    "FileEntry",
    "IngestLimits",
    "Problem",
    "SplitChoiceError",
    "UnsupportedArchive",
    "split_choice",
]
