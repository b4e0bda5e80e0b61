"""Datasets on disk: ``<root>/<id>/index.json`` + ``images/``; written in a temp folder, renamed in.

The id is the first 16 hex digits of the sha256 of the uploaded archive, so the same archive always
maps to the same dataset. Stored datasets are never modified; delete removes them whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from core.datasets.errors import DatasetNotFound, DatasetTooNew
from core.datasets.schemas import DATASET_FORMAT, INDEX_FILE, Dataset, IngestLimits, Lineage, Problem
from core.formats import check_store, too_new
from core.fsutil import atomic_write_text, fsync_dir, sha256_file
from dataset_store.archive import Entry, Unpacked, decode_name, is_junk, unpack
from dataset_store.dedup import ObjectFeatures
from dataset_store.ingest import Source, build
from dataset_store.validate import FileChecker

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[0-9a-f]{16}$")
TMP_PREFIX = ".tmp-"
STALE_TMP_S = 6 * 3600  # temp folders older than this are left over from a crash


class DatasetStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # A store written by a newer release is refused (FormatTooNew); an older one is stamped.
        check_store(self.root, "the dataset store", DATASET_FORMAT)
        self._cache: dict[str, Dataset] = {}
        self._remove_stale_temps()

    # -- reading ------------------------------------------------------------------------------

    def path(self, dataset_id: str) -> Path:
        if not ID_RE.match(dataset_id):
            raise DatasetNotFound(f"dataset {dataset_id!r} not found (ids are 16 hex digits)")
        return self.root / dataset_id

    def get(self, dataset_id: str) -> Dataset:
        folder = self.path(dataset_id)
        cached = self._cache.get(dataset_id)
        if cached is not None and folder.is_dir():
            return cached
        try:
            text = (folder / INDEX_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            self._cache.pop(dataset_id, None)
            raise DatasetNotFound(f"dataset {dataset_id!r} not found") from None
        dataset = Dataset.model_validate_json(text).attach(folder)
        if dataset.format_version > DATASET_FORMAT:  # older ones read as they are (core/formats.py)
            raise DatasetTooNew(too_new(f"dataset {dataset_id}", dataset.format_version, DATASET_FORMAT))
        self._cache[dataset_id] = dataset  # immutable once stored, so caching is safe
        return dataset

    def get_local(self, dataset_id: str) -> Dataset:
        """The dataset with its files on this machine (a worker about to train; object storage downloads)."""
        return self.get(dataset_id)

    def file(self, dataset: Dataset, rel: str) -> Path:
        """Where one stored file of ``dataset`` is on this machine (``rel`` from its listing)."""
        return dataset.root / rel

    def list(self) -> list[Dataset]:
        found = []
        for child in sorted(self.root.iterdir()):
            if ID_RE.match(child.name) and (child / INDEX_FILE).is_file():
                try:
                    found.append(self.get(child.name))
                except DatasetNotFound:  # deleted while listing
                    continue
                except DatasetTooNew as exc:  # the others stay usable
                    log.error("%s", exc)
        return sorted(found, key=lambda d: (d.created_at, d.id))

    # -- writing ------------------------------------------------------------------------------

    def ingest(self, archive_path: Path, name: str | None, limits: IngestLimits,
               archive_sha256: str | None = None, objects: ObjectFeatures | None = None) -> tuple[Dataset, bool]:
        """Unpack, validate and store an archive; ``(dataset, created)``. Same archive -> same dataset.

        ``objects``: features that confirm near duplicates on the object (the caller's model); without
        them the thumbnails decide and the report says so."""
        dataset_id = upload_id(archive_sha256 or sha256_file(archive_path), limits)
        if (self.root / dataset_id / INDEX_FILE).is_file():
            return self.get(dataset_id), False
        tmp = self._temp_dir()
        try:
            raw = tmp / "raw"
            raw.mkdir()
            with FileChecker(limits.max_image_pixels, limits.min_image_side, limits.worker_count) as checker:
                unpacked = unpack(archive_path, raw, limits, on_file=checker.add)  # checking starts meanwhile
                source = Source(unpacked.entries, unpacked.skipped, unpacked.problems, owned=True,
                                legacy_names=unpacked.legacy_names)
                dataset = build(source, tmp, limits, name or default_name(archive_path), checker, objects)
            shutil.rmtree(raw)
            return self._commit(tmp, dataset, dataset_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename

    def ingest_folder(self, folder: Path, name: str | None, limits: IngestLimits,
                      objects: ObjectFeatures | None = None, lineage: Lineage | None = None
                      ) -> tuple[Dataset, bool]:
        """Same checks for a folder on disk (the CLI, feedback datasets); the files are copied, never moved."""
        folder = Path(folder)
        walked = _walk(folder)
        tmp = self._temp_dir()
        try:
            source = Source(walked.entries, walked.skipped, walked.problems, owned=False,
                            legacy_names=walked.legacy_names)
            dataset = build(source, tmp, limits, name or folder.resolve().name, objects=objects)
            dataset.lineage = lineage
            dataset_id = _content_id(dataset)
            if (self.root / dataset_id / INDEX_FILE).is_file():
                return self.get(dataset_id), False
            return self._commit(tmp, dataset, dataset_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, dataset_id: str) -> None:
        """Remove a dataset: renamed away first (atomic disappearance), then deleted."""
        folder = self.path(dataset_id)
        if not (folder / INDEX_FILE).is_file():
            raise DatasetNotFound(f"dataset {dataset_id!r} not found")
        doomed = self.root / f"{TMP_PREFIX}deleted-{dataset_id}-{os.getpid()}-{time.time_ns()}"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            raise DatasetNotFound(f"dataset {dataset_id!r} not found") from None
        self._cache.pop(dataset_id, None)
        shutil.rmtree(doomed, ignore_errors=True)

    def _temp_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.root))

    def _commit(self, tmp: Path, dataset: Dataset, dataset_id: str) -> tuple[Dataset, bool]:
        dataset.id = dataset_id
        dataset.format_version = DATASET_FORMAT
        atomic_write_text(tmp / INDEX_FILE, dataset.model_dump_json(indent=1))
        final = self.root / dataset_id
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / INDEX_FILE).is_file():  # the same archive finished first in another request
                return self.get(dataset_id), False
            raise
        fsync_dir(self.root)
        log.info("stored dataset %s (%s): %d files, %d problems", dataset_id, dataset.name,
                 len(dataset.files), len(dataset.problems))
        return self.get(dataset_id), True

    def _remove_stale_temps(self) -> None:
        remove_stale(self.root, f"{TMP_PREFIX}*")


def remove_stale(folder: Path, pattern: str, max_age_s: float = STALE_TMP_S) -> int:
    """Delete what matches ``pattern`` in ``folder`` untouched for ``max_age_s``: left by a crash.

    Age, not ownership, decides: several processes may share the folder, and a live writer keeps
    touching its file. Returns how many entries were removed.
    """
    cutoff = time.time() - max_age_s
    removed = 0
    for child in folder.glob(pattern):
        try:
            if child.lstat().st_mtime >= cutoff:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def default_name(archive: Path | str) -> str:
    name = str(archive).replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _walk(folder: Path) -> Unpacked:
    """Regular files under ``folder`` as entries (links are refused per file, not followed)."""
    if not folder.is_dir():
        raise DatasetNotFound(f"folder {folder} does not exist")
    out = Unpacked()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            rel, legacy = decode_name(path.relative_to(folder).as_posix())
            if legacy:
                out.legacy_names.append(rel)
            if is_junk(rel):
                out.skipped += 1
            elif path.is_symlink() or not path.is_file():
                out.problems.append(Problem(path=rel, problem="not a regular file (link or device); ignored"))
            else:
                out.entries.append(Entry(rel, path))
    return out


def _content_id(dataset: Dataset) -> str:
    """Id of a folder dataset: hash of every (original path, sha256, label, split) it holds."""
    digest = hashlib.sha256()
    for f in sorted(dataset.files, key=lambda f: f.original):
        digest.update(f"{f.original}\0{f.sha256}\0{f.label}\0{f.split}\n".encode())
    return digest.hexdigest()[:16]


def upload_id(archive_sha256: str, limits: IngestLimits) -> str:
    """Id of an uploaded archive: its hash, and the split ratios when the uploader chose them (the same
    archive with other ratios is another dataset; without a choice the id is what it always was)."""
    if not limits.chosen_split:
        return archive_sha256[:16]
    choice = f"{archive_sha256}\0{limits.val_fraction!r}\0{limits.test_fraction!r}\0{limits.min_val_per_class}"
    return hashlib.sha256(choice.encode()).hexdigest()[:16]
