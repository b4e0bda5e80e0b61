"""Datasets in object storage (``TUNESERVE_STORAGE_URL``): the store of dataset_store/store.py, shared
by processes with no common disk.

Layout under the storage prefix::

    datasets/<id>/images/...        the stored files, as in a local dataset folder
    datasets/<id>/.files.json       {path: {"size", "sha256"}} of every file above
    datasets/<id>/index.json        written last: a dataset without it does not exist

Uploads are checked and stored locally first (the same code as without object storage, in this
process's cache folder ``<home>/work/storage/datasets``), then every file is uploaded with its
SHA-256, and the index last. Readers list and describe datasets from the indexes; a worker downloads
a whole dataset (each file checked against its SHA-256, into a temp folder renamed into place) before
training on it (:meth:`S3DatasetStore.get_local`), and the API fetches single images on demand.
A dataset deleted through any process is gone from the bucket, and each process drops its copy the
next time it looks the dataset up or lists datasets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.datasets.errors import DatasetNotFound, DatasetTooNew
from core.datasets.schemas import DATASET_FORMAT, INDEX_FILE, Dataset, IngestLimits, Lineage
from core.formats import too_new
from core.fsutil import sha256_file
from core.settings import Settings
from core.storage import PreconditionFailed, Storage, StorageError
from dataset_store.dedup import ObjectFeatures
from dataset_store.store import ID_RE, DatasetStore

log = logging.getLogger(__name__)

FILES_FILE = ".files.json"
PARTIAL_PREFIX = ".partial-"  # single images fetched for the API, beside whole downloaded datasets


class DatasetDamaged(StorageError):
    """A stored file that does not match its recorded SHA-256 (the bucket was changed behind our back)."""


def datasets_for(settings: Settings) -> DatasetStore:
    """The dataset store every edge builds: object storage when ``TUNESERVE_STORAGE_URL`` is set, else the home."""
    if settings.storage_url:
        return S3DatasetStore(Storage(settings.storage_url), settings.storage_cache_dir)
    return DatasetStore(settings.datasets_dir)


class S3DatasetStore(DatasetStore):
    def __init__(self, storage: Storage, cache_root: Path) -> None:
        super().__init__(Path(cache_root) / "datasets")
        self.storage = storage
        self._indexes: dict[str, Dataset] = {}  # immutable once written: parsed once per process
        self._listings: dict[str, dict[str, Any]] = {}
        self._writing = threading.local()

    @staticmethod
    def _key(dataset_id: str, rel: str) -> str:
        return f"datasets/{dataset_id}/{rel}"

    # -- reading ------------------------------------------------------------------------------
    def get(self, dataset_id: str) -> Dataset:
        if getattr(self._writing, "active", False):  # DatasetStore's own ingest, reading what it just wrote
            return super().get(dataset_id)
        folder = self.path(dataset_id)  # 404 for a malformed id
        cached = self._indexes.get(dataset_id)
        if cached is not None and self.storage.exists(self._key(dataset_id, INDEX_FILE)):
            return cached
        blob = self.storage.get(self._key(dataset_id, INDEX_FILE))
        if blob is None:
            self._drop_local(dataset_id)
            raise DatasetNotFound(f"dataset {dataset_id!r} not found")
        dataset = Dataset.model_validate_json(blob.body).attach(folder)
        if dataset.format_version > DATASET_FORMAT:
            raise DatasetTooNew(too_new(f"dataset {dataset_id}", dataset.format_version, DATASET_FORMAT))
        self._indexes[dataset_id] = dataset
        return dataset

    def list(self) -> list[Dataset]:
        found = []
        ids = [n for n in self.storage.children("datasets/") if ID_RE.match(n)]
        for dataset_id in ids:
            try:
                found.append(self.get(dataset_id))
            except DatasetNotFound:  # half-written or deleted while listing
                continue
            except DatasetTooNew as exc:
                log.error("%s", exc)
        kept = {d.id for d in found}
        for child in self.root.iterdir():  # copies of datasets deleted through another process
            dataset_id = child.name.removeprefix(PARTIAL_PREFIX)
            if ID_RE.match(dataset_id) and dataset_id not in kept:
                self._drop_local(dataset_id)
        return sorted(found, key=lambda d: (d.created_at, d.id))

    def get_local(self, dataset_id: str) -> Dataset:
        """The dataset with every file here, checked: downloaded once, then reused until it is deleted."""
        dataset = self.get(dataset_id)
        folder = self.root / dataset_id
        if (folder / INDEX_FILE).is_file():
            return dataset
        tmp = self._temp_dir()
        try:
            for rel, record in self._listing(dataset_id).items():
                self._download(dataset_id, rel, record, tmp / rel)
            (tmp / INDEX_FILE).write_text(dataset.model_dump_json(indent=1), encoding="utf-8")
            try:
                os.rename(tmp, folder)
            except OSError:
                if not (folder / INDEX_FILE).is_file():  # not another process's finished download
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("downloaded dataset %s (%d files) from %s", dataset_id, len(dataset.files), self.storage.url)
        return dataset

    def file(self, dataset: Dataset, rel: str) -> Path:
        """One stored file, fetched and checked on its own when the whole dataset is not here."""
        whole = self.root / dataset.id / rel
        if (self.root / dataset.id / INDEX_FILE).is_file():
            return whole
        single = self.root / f"{PARTIAL_PREFIX}{dataset.id}" / rel
        if not single.is_file():
            record = self._listing(dataset.id).get(rel)
            if record is None:
                raise DatasetNotFound(f"dataset {dataset.id} has no stored file {rel!r}")
            tmp = single.with_name(f".tmp-{single.name}-{os.getpid()}")
            self._download(dataset.id, rel, record, tmp)
            os.replace(tmp, single)
        return single

    # -- writing ------------------------------------------------------------------------------
    def ingest(self, archive_path: Path, name: str | None, limits: IngestLimits,
               archive_sha256: str | None = None, objects: ObjectFeatures | None = None) -> tuple[Dataset, bool]:
        with self._locally():
            dataset, _ = super().ingest(archive_path, name, limits, archive_sha256, objects)
        return self._publish(dataset.id)

    def ingest_folder(self, folder: Path, name: str | None, limits: IngestLimits,
                      objects: ObjectFeatures | None = None, lineage: Lineage | None = None
                      ) -> tuple[Dataset, bool]:
        with self._locally():
            dataset, _ = super().ingest_folder(folder, name, limits, objects, lineage)
        return self._publish(dataset.id)

    def delete(self, dataset_id: str) -> None:
        """The index goes first (the dataset is gone for every reader at once), then its files."""
        self.path(dataset_id)
        if not self.storage.exists(self._key(dataset_id, INDEX_FILE)):
            raise DatasetNotFound(f"dataset {dataset_id!r} not found")
        self.storage.delete([self._key(dataset_id, INDEX_FILE)])
        prefix = f"datasets/{dataset_id}/"
        self.storage.delete([prefix + rel for rel in self.storage.keys(prefix)])
        self._drop_local(dataset_id)
        log.info("deleted dataset %s from %s", dataset_id, self.storage.url)

    # -- internals ----------------------------------------------------------------------------
    @contextmanager
    def _locally(self) -> Iterator[None]:
        """DatasetStore's ingest in the cache folder (its reads there are of its own writes), this thread only."""
        self._writing.active = True
        try:
            yield
        finally:
            self._writing.active = False

    def _publish(self, dataset_id: str) -> tuple[Dataset, bool]:
        """Upload the local dataset unless the bucket has it: every file, its listing, the index last."""
        if self.storage.exists(self._key(dataset_id, INDEX_FILE)):
            return self.get(dataset_id), False
        folder = self.root / dataset_id
        listing: dict[str, Any] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != INDEX_FILE):
            rel = path.relative_to(folder).as_posix()
            listing[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
            self.storage.put_file(self._key(dataset_id, rel), path, listing[rel]["sha256"], listing[rel]["size"])
        self.storage.put_bytes(self._key(dataset_id, FILES_FILE), json.dumps(listing).encode())
        try:
            self.storage.put_bytes(self._key(dataset_id, INDEX_FILE), (folder / INDEX_FILE).read_bytes(),
                                   create_only=True)
        except PreconditionFailed:  # the same upload finished first through another process
            return self.get(dataset_id), False
        log.info("stored dataset %s in %s (%d files)", dataset_id, self.storage.url, len(listing))
        return self.get(dataset_id), True

    def _listing(self, dataset_id: str) -> dict[str, Any]:
        if dataset_id not in self._listings:
            blob = self.storage.get(self._key(dataset_id, FILES_FILE))
            if blob is None:
                raise DatasetNotFound(f"dataset {dataset_id!r} not found (no file listing)")
            self._listings[dataset_id] = json.loads(blob.body)
        return self._listings[dataset_id]

    def _download(self, dataset_id: str, rel: str, record: dict[str, Any], dest: Path) -> None:
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise DatasetDamaged(f"dataset {dataset_id}: stored path {rel!r} leaves the dataset folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not self.storage.download(self._key(dataset_id, rel), dest):
            raise DatasetNotFound(f"dataset {dataset_id!r} not found ({rel} is gone: deleted meanwhile?)")
        if dest.stat().st_size != int(record["size"]) or sha256_file(dest) != record["sha256"]:
            dest.unlink(missing_ok=True)
            raise DatasetDamaged(f"dataset {dataset_id}: {rel} in the bucket does not match its recorded "
                                 "sha256; upload the dataset again")

    def _drop_local(self, dataset_id: str) -> None:
        self._indexes.pop(dataset_id, None)
        self._listings.pop(dataset_id, None)
        self._cache.pop(dataset_id, None)
        for folder in (self.root / dataset_id, self.root / f"{PARTIAL_PREFIX}{dataset_id}"):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
