"""Dataset errors. Each maps to one HTTP status (service/http/errors.py) and says what to fix."""

from __future__ import annotations

from core.formats import FormatTooNew


class DatasetError(Exception):
    """Base class: a dataset operation that cannot be done."""


class DatasetNotFound(DatasetError):
    """No stored dataset with that id (-> 404)."""


class DatasetInvalid(DatasetError):
    """The archive was read but does not make a usable dataset (-> 422); the message names the fix."""


class ArchiveUnsafe(DatasetError):
    """An entry that could write outside the dataset or is not a plain file (-> 400); names the entry."""


class ArchiveCorrupt(DatasetError):
    """The archive format is right but its data is damaged (-> 400)."""


class ArchiveTooLarge(DatasetError):
    """Too many files, too many bytes once unpacked, or a suspicious compression ratio (-> 413)."""


class UnsupportedArchive(DatasetError):
    """Not a zip, tar or tar.gz (-> 415)."""


class DatasetTooNew(DatasetError, FormatTooNew):
    """index.json written by a newer tuneserve (-> 409); the message names the upgrade."""
