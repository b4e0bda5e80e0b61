"""S3DatasetStore on the suite's S3 API server (moto): a worker's download is checked file by file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets.errors import DatasetNotFound
from core.datasets.schemas import IngestLimits
from core.fsutil import sha256_file
from core.storage import Storage, StorageError
from dataset_store import S3DatasetStore


def folder_dataset(root: Path, hymenoptera: Path) -> Path:
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True)
        for photo in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:6]:
            (root / label / photo.name).write_bytes(photo.read_bytes())
    return root


def test_a_dataset_is_downloaded_checked_and_a_tampered_file_refused(
    s3_url: str, tmp_path: Path, hymenoptera: Path
) -> None:
    writer = S3DatasetStore(Storage(s3_url), tmp_path / "writer")
    dataset, created = writer.ingest_folder(folder_dataset(tmp_path / "src", hymenoptera), "small",
                                            IngestLimits(workers=1))
    assert created and writer.ingest_folder(tmp_path / "src", "small", IngestLimits(workers=1))[1] is False

    worker = S3DatasetStore(Storage(s3_url), tmp_path / "worker")
    assert [d.id for d in worker.list()] == [dataset.id]
    local = worker.get_local(dataset.id)
    for entry in local.files:
        copy = local.root / entry.path
        assert copy.is_relative_to(tmp_path / "worker") and sha256_file(copy) == sha256_file(dataset.root / entry.path)

    third = S3DatasetStore(Storage(s3_url), tmp_path / "third")
    Storage(s3_url).put_bytes(f"datasets/{dataset.id}/{dataset.files[0].path}", b"tampered")
    with pytest.raises(StorageError, match="does not match its recorded sha256"):  # 503, never served
        third.get_local(dataset.id)
    assert not (tmp_path / "third" / "datasets" / dataset.id).exists()  # nothing half-downloaded is kept

    writer.delete(dataset.id)
    assert Storage(s3_url).keys(f"datasets/{dataset.id}/") == []
    with pytest.raises(DatasetNotFound):
        worker.get(dataset.id)
    assert not (tmp_path / "worker" / "datasets" / dataset.id).exists()  # its copy dropped on the way
