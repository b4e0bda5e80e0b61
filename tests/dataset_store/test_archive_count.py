"""Too many entries: refused before any extraction, for every archive format, from the count alone."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from core.datasets import ArchiveTooLarge, IngestLimits
from dataset_store.archive import unpack

LIMIT = 300


def make_tar(path: Path, mode: str, files: int, folders: int = 0) -> Path:
    with tarfile.open(str(path), mode) as tf:
        for i in range(folders):
            info = tarfile.TarInfo(f"set/dir{i}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for i in range(files):
            data = b"x" * (i % 700)  # sizes that end mid-block, and empty ones
            info = tarfile.TarInfo(f"set/{'long-' * 30 if i % 50 == 0 else ''}{i}.jpg")  # some need pax/GNU names
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: int, zip64: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(files):
            if zip64:
                with zf.open(f"set/{i}.jpg", "w", force_zip64=True) as fh:
                    fh.write(b"x")
            else:
                zf.writestr(f"set/{i}.jpg", b"x")
    return path


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz", "w|gz"])
def test_tar_over_the_limit_is_refused_before_extraction(tmp_path: Path, mode: str) -> None:
    archive = make_tar(tmp_path / "a.tar", mode, LIMIT + 1, folders=20)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveTooLarge, match=f"more than {LIMIT:,} files"):
        unpack(archive, dest, IngestLimits(max_archive_files=LIMIT))
    assert list(dest.iterdir()) == []  # not one entry was written


def test_tar_at_the_limit_unpacks(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", "w:gz", LIMIT, folders=20)  # folders are not files
    dest = tmp_path / "out"
    dest.mkdir()
    assert len(unpack(archive, dest, IngestLimits(max_archive_files=LIMIT)).entries) == LIMIT


@pytest.mark.parametrize("zip64", [False, True])
def test_zip_count_from_its_end_record(tmp_path: Path, zip64: bool) -> None:
    archive = make_zip(tmp_path / "a.zip", LIMIT + 1, zip64)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveTooLarge, match=f"more than {LIMIT:,} files"):
        unpack(archive, dest, IngestLimits(max_archive_files=LIMIT))
    assert list(dest.iterdir()) == []
    assert len(unpack(archive, dest, IngestLimits(max_archive_files=LIMIT + 1)).entries) == LIMIT + 1
