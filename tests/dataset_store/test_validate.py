"""Per-file validation with real bytes: every rejection reason, and what passes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dataset_store.validate import FileChecker, check_file, check_files
from tests.dataset_store.datasets_kit import photo
from tests.photos import HYMENOPTERA

LIMIT = 40_000_000


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_real_photo_passes_with_facts(tmp_path: Path) -> None:
    src = HYMENOPTERA / "train" / "ants" / "0013035.jpg"
    result = check_file(str(src), LIMIT, 32)
    with Image.open(src) as img:
        assert (result.width, result.height) == img.size
    assert result.problem is None and result.format == "JPEG" and result.size == src.stat().st_size
    assert len(result.sha256) == 64 and result.fingerprint is not None
    assert result.fingerprint.dhash != 0 and result.fingerprint.phash != 0 and len(result.fingerprint.thumb) == 192


def test_truncated_jpeg_is_caught_by_full_decode(tmp_path: Path) -> None:
    data = (HYMENOPTERA / "train" / "ants" / "0013035.jpg").read_bytes()
    cut = data[: len(data) // 2]
    Image.open(io.BytesIO(cut)).verify()  # the header alone looks fine: only a full decode tells
    result = check_file(_write(tmp_path, "cut.jpg", cut), LIMIT, 32)
    assert result.problem is not None and "truncated" in result.problem


def test_corrupt_jpeg_is_caught(tmp_path: Path) -> None:
    data = bytearray((HYMENOPTERA / "train" / "bees" / "16838648_415acd9e3f.jpg").read_bytes())
    table = data.find(b"\xff\xc4") + 5  # inside the Huffman table: the header still parses
    data[table:table + 30] = bytes(range(200, 230))
    with Image.open(io.BytesIO(bytes(data))) as img:
        assert img.size == (400, 360)  # the header still parses
    result = check_file(_write(tmp_path, "bad.jpg", bytes(data)), LIMIT, 32)
    assert result.problem is not None and "corrupt" in result.problem


@pytest.mark.parametrize(("name", "data", "words"), [
    ("empty.jpg", b"", "empty file"),
    ("notes.jpg", b"this is a text file, not a photo\n" * 10, "not an image"),
    ("tiny.png", None, "too small: 20x40"),
    ("icon.ico", None, "unsupported image format ICO"),
])
def test_rejections(tmp_path: Path, name: str, data: bytes | None, words: str) -> None:
    if name == "tiny.png":
        data = _encoded(Image.new("RGB", (20, 40), "red"), "PNG")
    elif name == "icon.ico":
        data = _encoded(Image.new("RGB", (64, 64), "red"), "ICO")
    assert data is not None
    result = check_file(_write(tmp_path, name, data), LIMIT, 32)
    assert result.problem is not None and words in result.problem
    assert result.size == len(data)


def test_pixel_limit_and_min_side_are_settings(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.jpg", photo(1, size=(400, 300)))
    assert "over the limit of 100,000" in (check_file(path, 100_000, 32).problem or "")
    assert check_file(path, LIMIT, 32).problem is None
    assert "at least 301 px" in (check_file(path, LIMIT, 301).problem or "")


def test_odd_modes_are_accepted(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (48, 48), (0, 0, 255, 128))
    grey16 = Image.new("I;16", (48, 48), 30000)
    for name, img, fmt in [("a.png", rgba, "PNG"), ("g.png", grey16, "PNG"), ("p.gif", rgba.convert("P"), "GIF")]:
        assert check_file(_write(tmp_path, name, _encoded(img, fmt)), LIMIT, 32).problem is None, name


def test_process_pool_gives_the_same_answers(tmp_path: Path) -> None:
    paths = [Path(_write(tmp_path, f"{i}.jpg", photo(i))) for i in range(50)]
    paths.append(Path(_write(tmp_path, "empty.jpg", b"")))
    inline = check_files(paths, LIMIT, 32, workers=1)
    pooled = check_files(paths, LIMIT, 32, workers=2)
    assert pooled == inline and pooled[-1].problem == "empty file (0 bytes)"


def test_checker_started_while_files_arrive(tmp_path: Path) -> None:
    paths = [Path(_write(tmp_path, f"{i}.jpg", photo(i))) for i in range(70)]
    extra = Path(_write(tmp_path, "labels.csv", b"path,label\n"))
    with FileChecker(LIMIT, 32, workers=2) as checker:
        for p in [*paths[:60], extra]:  # as unpacking would: some files arrive, one is never asked for
            checker.add(p)
        wanted = paths[::-1]  # asked in another order, including files never added
        results = checker.results(wanted)
    assert [r.local for r in results] == [str(p) for p in wanted]
    assert results == check_files(wanted, LIMIT, 32, workers=1)
