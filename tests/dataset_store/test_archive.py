"""Safe unpacking: hostile names, links, devices, bombs and junk, with real zip and tar files."""

from __future__ import annotations

import gzip
import re
import tarfile
from pathlib import Path

import pytest

from core.datasets import ArchiveCorrupt, ArchiveTooLarge, ArchiveUnsafe, IngestLimits, UnsupportedArchive
from dataset_store.archive import is_junk, safe_name, unpack
from tests.dataset_store.datasets_kit import (
    class_files,
    make_tar,
    make_zip,
    photo,
    tar_member,
    tar_raw_names,
    zip_bomb,
    zip_raw_names,
    zip_symlink,
)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "sandbox" / "raw"
    d.mkdir(parents=True)
    return d


def _everything_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize(("raw", "expected"), [
    ("ants/a.jpg", "ants/a.jpg"), ("./ants//a.jpg", "ants/a.jpg"), ("ants\\a.jpg", "ants/a.jpg"),
])
def test_safe_name_normalises(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


@pytest.mark.parametrize("raw", ["../evil.jpg", "ants/../../evil.jpg", "/etc/passwd", "C:\\x.jpg",
                                 "..\\..\\evil.jpg", "a\x00b"])
def test_safe_name_refuses_escapes(raw: str) -> None:
    with pytest.raises(ArchiveUnsafe, match="archive entry"):
        safe_name(raw)


def test_junk_rules() -> None:
    for name in ["__MACOSX/ants/._a.jpg", "ants/.DS_Store", "ants/Thumbs.db", ".ipynb_checkpoints/a.jpg",
                 "ants/._a.jpg", ".hidden/x/y.jpg"]:
        assert is_junk(name), name
    assert not is_junk("ants/a.jpg") and not is_junk("my.ants/a.b.jpg")


def test_zip_slip_is_refused_before_anything_is_written(tmp_path: Path, dest: Path) -> None:
    files = class_files({"ants": 2})
    files["../../evil.jpg"] = photo(9)
    archive = make_zip(tmp_path / "slip.zip", files)
    with pytest.raises(ArchiveUnsafe, match=r"\.\./\.\./evil\.jpg"):
        unpack(archive, dest, IngestLimits())
    assert _everything_under(dest) == set()
    assert _everything_under(tmp_path) == {"slip.zip", "sandbox", "sandbox/raw"}


def test_absolute_path_in_tar_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "abs.tar", {"/tmp/evil.jpg": photo(1)}, mode="w")
    with pytest.raises(ArchiveUnsafe, match="absolute path"):
        unpack(archive, dest, IngestLimits())


@pytest.mark.parametrize(("kind", "word"), [
    (tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"), (tarfile.CHRTYPE, "device file"),
    (tarfile.FIFOTYPE, "device file"),
])
def test_links_and_devices_in_tar_are_refused(tmp_path: Path, dest: Path, kind: bytes, word: str) -> None:
    archive = make_tar(tmp_path / "links.tar.gz", class_files({"ants": 2}),
                       extra=[tar_member("ants/link.jpg", kind, "/etc/passwd")])
    with pytest.raises(ArchiveUnsafe, match=f"'ants/link.jpg' is a {word}"):
        unpack(archive, dest, IngestLimits())


def test_symlink_in_zip_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = zip_symlink(tmp_path / "link.zip", "ants/passwd.jpg", "/etc/passwd")
    with pytest.raises(ArchiveUnsafe, match=re.escape("'ants/passwd.jpg' is a symbolic link")):
        unpack(archive, dest, IngestLimits())
    assert _everything_under(dest) == set()


def test_zip_bomb_is_refused_by_ratio(tmp_path: Path, dest: Path) -> None:
    archive = zip_bomb(tmp_path / "bomb.zip", mib=4)
    assert archive.stat().st_size < 64 * 1024
    with pytest.raises(ArchiveTooLarge, match="zip bomb"):
        unpack(archive, dest, IngestLimits(ratio_floor_bytes=1024 * 1024))
    assert _everything_under(dest) == set()


def test_gzip_bomb_tar_is_refused_by_ratio(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "bomb.tar.gz", {"ants/zeros.bmp": bytes(4 * 1024 * 1024)})
    with pytest.raises(ArchiveTooLarge, match="zip bomb"):
        unpack(archive, dest, IngestLimits(ratio_floor_bytes=1024 * 1024))


def test_file_count_and_size_limits(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", class_files({"ants": 3, "bees": 3}))
    with pytest.raises(ArchiveTooLarge, match="more than 5 files"):
        unpack(archive, dest, IngestLimits(max_archive_files=5))
    with pytest.raises(ArchiveTooLarge, match="more than 1,000 bytes"):
        unpack(archive, dest, IngestLimits(max_uncompressed_bytes=1000))


def test_macos_junk_is_skipped_silently(tmp_path: Path, dest: Path) -> None:
    files = class_files({"ants": 2})
    files.update({"__MACOSX/ants/._ants_000.jpg": b"\x00\x05\x16\x07resource fork", "ants/.DS_Store": b"\x00" * 9,
                  ".ipynb_checkpoints/ants_000-checkpoint.jpg": photo(3), "ants/Thumbs.db": b"thumbs"})
    out = unpack(make_zip(tmp_path / "mac.zip", files), dest, IngestLimits())
    assert sorted(e.name for e in out.entries) == ["ants/ants_000.jpg", "ants/ants_001.jpg"]
    assert out.skipped == 4 and out.problems == []
    assert {e.local.read_bytes() for e in out.entries} == {files["ants/ants_000.jpg"], files["ants/ants_001.jpg"]}
    assert all(e.local.parent == dest for e in out.entries)  # generated names, never archive names


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_flavours_unpack(tmp_path: Path, dest: Path, mode: str) -> None:
    files = class_files({"ants": 2, "bees": 1})
    out = unpack(make_tar(tmp_path / "a.tar", files, mode=mode), dest, IngestLimits())
    assert {e.name: e.local.read_bytes() for e in out.entries} == files


def test_not_an_archive(tmp_path: Path, dest: Path) -> None:
    png = tmp_path / "x.zip"
    png.write_bytes(photo(1, fmt="PNG"))
    with pytest.raises(UnsupportedArchive, match=r"\.zip, \.tar or \.tar\.gz"):
        unpack(png, dest, IngestLimits())
    gz = tmp_path / "notatar.tar.gz"
    gz.write_bytes(gzip.compress(b"just some text, not a tar" * 40))
    with pytest.raises(UnsupportedArchive, match="holds no tar"):
        unpack(gz, dest, IngestLimits())


def test_zip_names_without_the_utf8_flag_are_decoded(tmp_path: Path, dest: Path) -> None:
    """Old Windows tools write cp437 and many current ones write UTF-8, both without the flag."""
    files = {"fourmis_é/a.jpg".encode("cp437"): photo(1), "abeilles_ü/b.jpg".encode(): photo(2),
             b"ants/plain.jpg": photo(3)}
    out = unpack(zip_raw_names(tmp_path / "legacy.zip", files), dest, IngestLimits())
    assert sorted(e.name for e in out.entries) == ["abeilles_ü/b.jpg", "ants/plain.jpg", "fourmis_é/a.jpg"]
    assert out.legacy_names == ["fourmis_é/a.jpg"]  # the guess (cp437) is said; UTF-8 and ASCII are not guesses
    assert {e.name: e.local.read_bytes() for e in out.entries}["fourmis_é/a.jpg"] == photo(1)


def test_zip_flagged_utf8_with_other_bytes_is_a_clear_refusal(tmp_path: Path, dest: Path) -> None:
    archive = zip_raw_names(tmp_path / "lies.zip", {b"ants/\xff\xfe.jpg": photo(1)}, utf8_flag=True)
    with pytest.raises(ArchiveCorrupt, match="flagged as UTF-8 but are not UTF-8"):
        unpack(archive, dest, IngestLimits())
    assert _everything_under(dest) == set()


def test_tar_names_that_are_not_utf8_are_read_as_latin1(tmp_path: Path, dest: Path) -> None:
    files = {"fourmis_é/a.jpg".encode("latin-1"): photo(1), "abeilles_ü/b.jpg".encode(): photo(2)}
    out = unpack(tar_raw_names(tmp_path / "legacy.tar", files), dest, IngestLimits())
    assert sorted(e.name for e in out.entries) == ["abeilles_ü/b.jpg", "fourmis_é/a.jpg"]
    assert out.legacy_names == ["fourmis_é/a.jpg"]
    for name in [e.name for e in out.entries]:
        name.encode("utf-8")  # no surrogates left: the names can be stored as JSON
