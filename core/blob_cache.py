"""A local cache of downloaded files keyed by their SHA-256 (``<root>/<2 hex>/<sha256>``).

Readers of object storage never use a byte they have not checked: a blob is downloaded to a temp
name, its size and SHA-256 compared with what the writer recorded, and only then renamed into place.
A blob already here is hashed again whenever its size, mtime or inode changed since it was last
checked (a corrupted copy is downloaded again). Views (a version's folder, a dataset's folder) are
hard links to blobs, so identical files are stored once; a blob no view links to any more is swept.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.fsutil import sha256_file
from core.storage import StorageError

log = logging.getLogger(__name__)


class BlobCorrupt(StorageError):
    """A download whose size or SHA-256 is not what the writer recorded (the API answers 503, as for a
    store that does not answer: the next try downloads again)."""


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._checked: dict[Path, tuple[int, int, int]] = {}  # blob -> (size, mtime_ns, inode) hashed

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def verified(self, path: Path, sha256: str, size: int | None = None) -> bool:
        """True when ``path`` holds exactly the bytes ``sha256`` names (hashed again after any change)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if self._checked.get(path) == key:
            return True
        if (size is not None and stat.st_size != size) or sha256_file(path) != sha256:
            self._checked.pop(path, None)
            return False
        self._checked[path] = key
        return True

    def fetch(self, sha256: str, size: int, download: Callable[[Path], bool]) -> Path | None:
        """The checked blob ``sha256``, downloaded with ``download(dest)`` when absent or damaged;
        None when ``download`` finds nothing. Raises :class:`BlobCorrupt` for a download that does not match."""
        blob = self.path(sha256)
        if self.verified(blob, sha256, size):
            return blob
        if blob.exists():
            log.warning("cached file %s is damaged; downloading it again", blob)
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=blob.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            if not download(tmp):
                return None
            if not self.verified(tmp, sha256, size):
                raise BlobCorrupt(f"downloaded file does not match its record (expected {size} bytes, "
                                  f"sha256 {sha256})")
            os.replace(tmp, blob)  # a fresh inode: views linked to a damaged copy keep theirs until relinked
            self._checked[blob] = self._checked.pop(tmp)
            return blob
        finally:
            tmp.unlink(missing_ok=True)

    def adopt(self, source: Path, sha256: str) -> Path:
        """Put a local file the caller has hashed (a writer's own upload) into the cache without a download."""
        blob = self.path(sha256)
        if self.verified(blob, sha256):
            return blob
        blob.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=blob.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, name)
            os.replace(name, blob)
        finally:
            Path(name).unlink(missing_ok=True)
        return blob

    def link(self, blob: Path, dest: Path) -> None:
        """Make ``dest`` the blob (a hard link; a copy where links are not possible), replacing atomically."""
        try:
            if dest.stat().st_ino == blob.stat().st_ino:
                return
        except FileNotFoundError:
            pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}-{id(self)}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)

    def sweep(self) -> int:
        """Remove blobs no view links to any more; returns how many."""
        removed = 0
        for blob in self.root.glob("??/*"):
            try:
                if not blob.name.startswith(".tmp-") and blob.stat().st_nlink <= 1:
                    blob.unlink()
                    self._checked.pop(blob, None)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
