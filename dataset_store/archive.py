"""Safe unpacking of uploaded archives (zip, tar, tar.gz/bz2/xz).

Every entry is checked before a byte of it is written: no absolute paths, no ``..``, no links, no
devices. Entries are written under ``dest`` with generated names (``000001``...), never with the
names from the archive, so nothing can land outside ``dest`` whatever the names say. Size limits
count declared sizes up front (cheap refusal of bombs) and the bytes actually written (headers lie).

Names are text by the time they leave here. A zip entry without the UTF-8 flag is read as UTF-8
when its bytes are valid UTF-8 (what most tools write today), else as cp437 (the zip standard);
a tar name that is not UTF-8 is read as latin-1. Both fallbacks are listed in ``legacy_names``, so
the dataset report can say that those names (and the class names taken from them) were guessed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from core.datasets.errors import ArchiveCorrupt, ArchiveTooLarge, ArchiveUnsafe, UnsupportedArchive
from core.datasets.schemas import IngestLimits, Problem

log = logging.getLogger(__name__)

ArchiveKind = Literal["zip", "tar"]
OnFile = Callable[[Path], None]
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "ehthumbs.db"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_COPY_CHUNK = 1 << 20
_ZIP_UTF8_FLAG = 0x800
ONLY_FILES = "only regular files and folders are allowed"


@dataclass
class Entry:
    """One regular file: its normalised path in the archive and where its bytes are now."""

    name: str
    local: Path


@dataclass
class Unpacked:
    entries: list[Entry] = field(default_factory=list)
    skipped: int = 0  # junk entries not extracted (__MACOSX, dot-files, Thumbs.db)
    problems: list[Problem] = field(default_factory=list)
    legacy_names: list[str] = field(default_factory=list)  # not UTF-8: decoded as cp437 (zip) or latin-1


def is_junk(name: str) -> bool:
    """System clutter skipped silently: macOS resource forks, dot-files/folders, Windows thumbnails."""
    return any(part.startswith(".") or part in JUNK_NAMES for part in name.split("/"))


def safe_name(raw: str) -> str:
    """Normalise an entry name to ``a/b/c``; raise :class:`ArchiveUnsafe` for anything that escapes."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise ArchiveUnsafe(f"archive entry {raw!r} has a NUL byte in its name")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveUnsafe(f"archive entry {raw!r} has an absolute path; use paths relative to the archive")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveUnsafe(f"archive entry {raw!r} climbs out of the archive with '..'")
    return "/".join(parts)


def decode_name(raw: str) -> tuple[str, bool]:
    """A name read with ``surrogateescape`` (tar, ``os.walk``) as real text: ``(name, was_not_utf8)``.

    Bytes that were not UTF-8 are read as latin-1, which maps every byte to a character, so the
    name can be stored in the JSON index and shown, instead of failing there.
    """
    try:
        raw.encode("utf-8")
        return raw, False
    except UnicodeEncodeError:
        pass
    try:
        return raw.encode("utf-8", "surrogateescape").decode("latin-1"), True
    except UnicodeEncodeError:  # a surrogate that did not come from a byte: keep it visible, escaped
        return raw.encode("utf-8", "backslashreplace").decode("utf-8"), True


def _zip_name(info: zipfile.ZipInfo) -> tuple[str, bool]:
    """The entry's name: ``(name, read_as_cp437)``; see the module docstring."""
    if info.flag_bits & _ZIP_UTF8_FLAG:
        return info.filename, False
    raw = info.filename.encode("cp437")  # zipfile decoded the bytes as cp437, which maps all 256
    if raw.isascii():
        return info.filename, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return info.filename, True


def detect(path: Path) -> ArchiveKind:
    """Tell the format from the bytes, not the file name."""
    with path.open("rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # compressed; whether a tar is inside shows when it is opened
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise UnsupportedArchive("unsupported archive: upload a .zip, .tar or .tar.gz (.tgz) file")


class _Budget:
    """Counts files and bytes against the limits while unpacking."""

    def __init__(self, limits: IngestLimits, archive_bytes: int) -> None:
        self.limits = limits
        self.archive_bytes = max(archive_bytes, 1)
        self.files = 0
        self.declared = 0
        self.written = 0

    def add_file(self, name: str, size: int) -> None:
        self.files += 1
        if self.files > self.limits.max_archive_files:
            raise ArchiveTooLarge(
                f"archive holds more than {self.limits.max_archive_files:,} files (the limit); split it up"
            )
        self.declared += size
        self._check_total(self.declared, name)
        lim = self.limits
        ratio = self.declared / self.archive_bytes
        if self.declared > lim.ratio_floor_bytes and ratio > lim.max_compression_ratio:
            raise ArchiveTooLarge(
                f"archive unpacks to over {lim.max_compression_ratio:g}x its size (at entry {name!r}): "
                "refusing a likely zip bomb; images barely compress, so re-pack without padding"
            )

    def add_written(self, n: int, name: str) -> None:
        self.written += n
        self._check_total(self.written, name)

    def _check_total(self, total: int, name: str) -> None:
        if total > self.limits.max_uncompressed_bytes:
            raise ArchiveTooLarge(
                f"archive unpacks to more than {self.limits.max_uncompressed_bytes:,} bytes "
                f"(the limit, reached at entry {name!r}); upload a smaller dataset"
            )


def _copy(src: IO[bytes], dest: Path, budget: _Budget, name: str) -> None:
    with dest.open("wb") as out:
        while chunk := src.read(_COPY_CHUNK):
            budget.add_written(len(chunk), name)
            out.write(chunk)


def unpack(archive: Path, dest: Path, limits: IngestLimits, on_file: OnFile | None = None) -> Unpacked:
    """Check and extract every regular file of ``archive`` into ``dest`` (which must exist).

    ``on_file(path)`` is called as each file lands, so checking can start while unpacking goes on.
    """
    kind = detect(archive)
    # Count the entries before any extraction work: a 1 MB archive of 200,001 empty files used to be
    # refused only after unpacking and checking 200,000 of them.
    (_check_zip_count if kind == "zip" else _check_tar_count)(archive, limits.max_archive_files)
    budget = _Budget(limits, archive.stat().st_size)
    notify = on_file or (lambda _path: None)
    if kind == "zip":
        return _unpack_zip(archive, dest, budget, notify)
    return _unpack_tar(archive, dest, budget, notify)


def _too_many(limit: int) -> ArchiveTooLarge:
    return ArchiveTooLarge(f"archive holds more than {limit:,} files (the limit); split it up")


# -- zip ------------------------------------------------------------------------------------------


def _check_zip_count(archive: Path, limit: int) -> None:
    """The end-of-central-directory record states the entry count: read it before zipfile parses
    every entry of the directory (seconds for 200,000). Folders count too: a bound, not the count."""
    with archive.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - (22 + 65535)))  # the record, then at most a 64 KiB comment
        tail = fh.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return  # no record: zipfile reports the archive as damaged
    total = struct.unpack_from("<H", tail, pos + 10)[0]
    if total == 0xFFFF:  # zip64: the real count is in the zip64 record, just before the locator
        pos64 = tail.rfind(b"PK\x06\x06", 0, pos)
        if pos64 < 0 or pos64 + 40 > len(tail):
            return
        total = struct.unpack_from("<Q", tail, pos64 + 32)[0]
    if total > limit:
        raise _too_many(limit)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', or what makes it unsafe ('symbolic link', 'device file')."""
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:  # made on Unix: the high bits are st_mode
        if stat.S_ISLNK(mode):
            return "symbolic link"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            return "device file"
    return "dir" if info.is_dir() else "file"


def _unpack_zip(archive: Path, dest: Path, budget: _Budget, on_file: OnFile) -> Unpacked:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveCorrupt(f"damaged zip archive: {exc}") from exc
    except UnicodeDecodeError as exc:  # zipfile reads every name at open, so no entry can be singled out
        raise ArchiveCorrupt(
            "damaged zip archive: entry names are flagged as UTF-8 but are not UTF-8 "
            f"({exc.object[:60]!r}); re-create the archive with a current zip tool") from exc
    with zf:
        todo = _check_zip_entries(zf.infolist(), budget)
        out = Unpacked(skipped=sum(1 for i in zf.infolist() if not i.is_dir()) - len(todo))
        out.legacy_names = [name for name, info in todo if _zip_name(info)[1]]
        for n, (name, info) in enumerate(todo):
            local = dest / f"{n:06d}"
            try:
                with zf.open(info) as src:
                    _copy(src, local, budget, name)
            except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError) as exc:
                # One unreadable member (bad CRC, encrypted, odd compression) is that file's problem.
                local.unlink(missing_ok=True)
                out.problems.append(Problem(path=name, problem=f"could not unpack: {exc}"))
                continue
            out.entries.append(Entry(name, local))
            on_file(local)
    return out


def _admit(raw: str, kind: str, size: int, budget: _Budget) -> str | None:
    """The safe name of a file entry, counted against the budget; None for a folder; refuses anything else."""
    name = safe_name(raw)
    if kind not in ("dir", "file"):
        raise ArchiveUnsafe(f"archive entry {raw!r} is a {kind}; {ONLY_FILES}")
    if kind == "dir":
        return None
    budget.add_file(name, size)
    return name


def _check_zip_entries(infos: list[zipfile.ZipInfo], budget: _Budget) -> list[tuple[str, zipfile.ZipInfo]]:
    """Vet every entry before extracting any; return the (name, info) pairs worth extracting."""
    lim = budget.limits
    todo = []
    for info in infos:
        name = _admit(_zip_name(info)[0], _zip_kind(info), info.file_size, budget)
        if name is None:
            continue
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > lim.ratio_floor_bytes and ratio > lim.max_compression_ratio:
            raise ArchiveTooLarge(
                f"archive entry {name!r} unpacks to {ratio:,.0f}x its compressed size "
                f"(limit {lim.max_compression_ratio:g}x): refusing a likely zip bomb"
            )
        if name and not is_junk(name):
            todo.append((name, info))
    return todo


# -- tar ------------------------------------------------------------------------------------------


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tf
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveCorrupt(f"damaged tar archive: {exc}") from exc


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device file"
    if member.isdir():
        return "dir"
    return "file" if member.isreg() else "special file"


def _check_tar_count(archive: Path, limit: int) -> None:
    """A tar states no count: walk its 512-byte headers (data is skipped, nothing is written) and stop
    at the first file over the limit. tarfile's own walk costs ~100 us a member (20 s for 200,000);
    this one a few. Anything odd is left for the real pass to report."""
    with archive.open("rb") as raw:
        head = raw.read(6)
        raw.seek(0)
        stream: io.BufferedIOBase = raw
        if head[:2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=raw)
        elif head[:3] == b"BZh":
            stream = bz2.BZ2File(raw)
        elif head == b"\xfd7zXZ\x00":
            stream = lzma.LZMAFile(raw)  # noqa: SIM115 - wraps raw, which the with closes
        try:
            files = 0
            for flag in _tar_typeflags(stream):
                files += flag not in _TAR_META_OR_DIR
                if files > limit:
                    raise _too_many(limit)
        except (EOFError, OSError, ValueError, lzma.LZMAError, zlib.error):
            return


_TAR_META_OR_DIR = frozenset({b"5", b"x", b"g", b"L", b"K"})  # folders, pax and GNU long-name headers


def _tar_typeflags(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """The type flag of each header, in order, until the end-of-archive block or the data ends."""
    while len(block := stream.read(512)) == 512 and block.count(0) != 512:
        field = block[124:136]
        size = int.from_bytes(field[1:], "big") if field[0] & 0x80 else int(field.strip(b"\0 ") or b"0", 8)
        yield block[156:157]
        skip = -(-size // 512) * 512
        while skip > 0:
            got = len(stream.read(min(skip, _COPY_CHUNK)))
            if not got:
                return
            skip -= got


def _unpack_tar(archive: Path, dest: Path, budget: _Budget, on_file: OnFile) -> Unpacked:
    out = Unpacked()
    with archive.open("rb") as fh:
        try:
            # Stream mode: one forward pass, never seeking back in a compressed stream.
            # Names as UTF-8 whatever the locale; other bytes survive as surrogates (decode_name).
            tf = tarfile.open(fileobj=fh, mode="r|*", encoding="utf-8",  # noqa: SIM115 (closed below)
                              errors="surrogateescape")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise UnsupportedArchive(
                "unsupported archive: the file is compressed but holds no tar; upload .zip, .tar or .tar.gz"
            ) from exc
        with tf:
            for member in _tar_members(tf):
                _tar_member(tf, member, dest, budget, out, on_file)
    return out


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, budget: _Budget,
                out: Unpacked, on_file: OnFile) -> None:
    raw, legacy = decode_name(member.name)
    name = _admit(raw, _tar_kind(member), member.size, budget)
    if name is None:
        return
    if not name or is_junk(name):
        out.skipped += 1
        return
    if legacy:
        out.legacy_names.append(name)
    local = dest / f"{len(out.entries):06d}"
    src = tf.extractfile(member)
    if src is None:  # cannot happen for a regular file; be explicit rather than crash
        out.problems.append(Problem(path=name, problem="could not unpack"))
        return
    try:
        _copy(src, local, budget, name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveCorrupt(f"damaged tar archive at entry {name!r}: {exc}") from exc
    out.entries.append(Entry(name, local))
    on_file(local)
