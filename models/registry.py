"""Versions on disk, an active pointer per model name, promotion and rollback.

Layout::

    <root>/<name>/<version>/model.onnx       (and variants, report files)
    <root>/<name>/<version>/manifest.json
    <root>/<name>/ACTIVE                     {"version": 3, "history": [1, 2]}
    <root>/<name>/.tmp-*                     versions being written (never listed)
    <root>/<name>/.trash-*, <root>/.trash-*  versions / models being deleted (never listed)
    <root>/<name>/.deleted                   numbers of deleted versions (never given out again)

A version is written in a temp folder, verified (checksum, manifest round-trip), renamed into
place, and only then may the pointer be flipped: a crash at any point leaves the previous active
version serving and every listed version complete.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from core.formats import FormatTooNew, check_store, too_new
from core.fsutil import atomic_write_text, fsync_dir, sha256_file
from models.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MODEL_FILE, REGISTRY_FORMAT, Manifest

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
POINTER_FILE = "ACTIVE"
DELETED_FILE = ".deleted"
TRASH_PREFIX = ".trash-"
Status = Literal["active", "registered", "candidate"]


class RegistryError(Exception):
    """A registry operation that cannot be done (bad name, corrupt version, bad files)."""


class ModelNotFound(RegistryError):
    pass


class VersionNotFound(RegistryError):
    pass


class VersionInUse(RegistryError):
    """A delete refused because the version (or model) is still needed; the message says what to do first."""


class VersionTooNew(RegistryError, FormatTooNew):
    """A version whose manifest a newer tuneserve wrote; the message names the upgrade."""


@dataclass(frozen=True)
class VersionInfo:
    manifest: Manifest
    path: Path
    status: Status

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def file(self, variant: str = "fp32") -> Path:
        """Path of the ONNX file for ``variant``; fp32 is the main model."""
        if variant == "fp32":
            return self.model_path
        if variant not in self.manifest.variants:
            raise RegistryError(f"version {self.version} has no {variant!r} variant")
        return self.path / self.manifest.variants[variant].file


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-64 lowercase letters, digits, '_', '-' or '.'"
        )
    return name


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._verified: dict[Path, tuple[int, int]] = {}  # model file -> (size, mtime_ns) checked
        # A registry written by a newer release is refused (FormatTooNew); an older one is stamped
        # (a missing root is stamped by the first register).
        check_store(self.root, "the model registry", REGISTRY_FORMAT)
        self._stamped = self.root.is_dir()

    # ----------------------------------------------------------------- reading
    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name))

    def exists(self, name: str) -> bool:
        return (self.root / name).is_dir() and bool(NAME_RE.match(name))

    def active_version(self, name: str) -> int | None:
        return self._read_pointer(name)[0]

    def versions(self, name: str) -> list[VersionInfo]:
        """Every usable version of ``name``, oldest first. Corrupt or partial versions are skipped."""
        model_dir = self._model_dir(name)
        active = self.active_version(name)
        found = []
        for entry in model_dir.iterdir():
            if not entry.name.isdigit():
                continue  # temp folders, pointer, lock
            try:
                info = self._load(name, int(entry.name), active)
            except VersionTooNew as exc:  # the others stay usable
                log.error("%s", exc)
                continue
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda v: v.version)

    def version_numbers(self, name: str) -> list[int]:
        """Every version folder of ``name``, usable or not (a corrupt one can still be deleted)."""
        return sorted(int(p.name) for p in self._model_dir(name).iterdir() if p.name.isdigit())

    def get(self, name: str, version: int | None = None) -> VersionInfo:
        """One usable version; ``None`` means the active one."""
        model_dir = self._model_dir(name)
        active = self.active_version(name)
        if version is None:
            if active is None:
                raise VersionNotFound(f"model {name!r} has no active version")
            version = active
        if not (model_dir / str(version)).is_dir():
            raise VersionNotFound(f"model {name!r} has no version {version}")
        info = self._load(name, version, active)
        if info is None:
            raise VersionNotFound(f"version {version} of model {name!r} is corrupt or incomplete")
        return info

    def history(self, name: str) -> list[int]:
        return self._read_pointer(name)[1]

    # ----------------------------------------------------------------- writing
    def register(
        self,
        manifest: Manifest,
        model_file: Path,
        extra_files: dict[str, Path] | None = None,
        activate: bool = False,
    ) -> VersionInfo:
        """Copy ``model_file`` (and extras, keyed by their name in the version folder) into a new version.

        The manifest's ``version`` and ``sha256`` are set here. Returns the stored version.
        """
        name = validate_name(manifest.name)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        if not self._stamped:
            check_store(self.root, "the model registry", REGISTRY_FORMAT)
            self._stamped = True
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
        try:
            shutil.copyfile(model_file, tmp / MODEL_FILE)
            for rel, src in (extra_files or {}).items():
                dest = tmp / rel
                if dest.resolve().parent != tmp.resolve() and tmp.resolve() not in dest.resolve().parents:
                    raise RegistryError(f"extra file {rel!r} would land outside the version folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            for variant in manifest.variants.values():
                if not (tmp / variant.file).is_file():
                    raise RegistryError(f"variant file {variant.file!r} is missing")
            with self._lock(name):
                version = self._next_version(model_dir)
                stored = manifest.model_copy(update={"version": version, "sha256": sha256_file(tmp / MODEL_FILE),
                                                    "format_version": MANIFEST_FORMAT})
                atomic_write_text(tmp / MANIFEST_FILE, stored.model_dump_json(indent=2))
                self._verify_folder(tmp, stored)
                os.rename(tmp, model_dir / str(version))
                fsync_dir(model_dir)
                log.info("registered %s version %d", name, version)
                if activate:
                    self._flip_pointer(name, version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(name, version)

    def activate(self, name: str, version: int) -> VersionInfo:
        """Make ``version`` the active one (promotion, or rollback to an older version)."""
        info = self.get(name, version)  # refuses corrupt versions
        with self._lock(name):
            self._flip_pointer(name, version)
        log.info("activated %s version %d", name, version)
        return self.get(name, info.version)

    def rollback(self, name: str) -> VersionInfo:
        """Re-activate the version that was active before the current one."""
        history = self.history(name)
        current = self.active_version(name)
        for version in reversed(history):
            if version != current:
                try:
                    return self.activate(name, version)
                except VersionNotFound:
                    continue
        raise VersionNotFound(f"model {name!r} has no earlier version to roll back to")

    def set_stage(self, name: str, version: int, stage: Literal["registered", "candidate"]) -> VersionInfo:
        info = self.get(name, version)
        with self._lock(name):
            updated = info.manifest.model_copy(update={"stage": stage})
            atomic_write_text(info.path / MANIFEST_FILE, updated.model_dump_json(indent=2))
        return self.get(name, version)

    def delete_version(self, name: str, version: int) -> None:
        """Remove one version that is not active. The folder is renamed away first (a reader sees the
        whole version or none of it), its number recorded so that it is never given out again, then removed."""
        model_dir = self._model_dir(name)
        folder = model_dir / str(version)
        with self._lock(name):
            if not folder.is_dir():
                raise VersionNotFound(f"model {name!r} has no version {version}")
            active, history = self._read_pointer(name)
            if active == version:
                raise VersionInUse(f"version {version} of {name!r} is active: activate another version "
                                   f"(POST /v1/models/{name}/versions/<v>/activate) first, or delete the whole model")
            deleted = sorted({*self._deleted(model_dir), version})
            atomic_write_text(model_dir / DELETED_FILE, json.dumps(deleted))
            doomed = model_dir / f"{TRASH_PREFIX}{version}-{time.time_ns()}"
            os.rename(folder, doomed)
            fsync_dir(model_dir)
            if version in history:  # a rollback must not aim at it
                atomic_write_text(model_dir / POINTER_FILE,
                                  json.dumps({"version": active, "history": [v for v in history if v != version]}))
        self._verified.pop(folder / MODEL_FILE, None)
        self._sweep_trash(model_dir)
        log.info("deleted %s version %d", name, version)

    def delete_model(self, name: str) -> list[int]:
        """Remove every version and the pointer of ``name`` (renamed away whole, then removed); returns the
        versions that were there."""
        model_dir = self._model_dir(name)
        with self._lock(name):
            versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
            doomed = self.root / f"{TRASH_PREFIX}{name}-{time.time_ns()}"
            try:
                os.rename(model_dir, doomed)
            except FileNotFoundError:  # another request deleted it while this one waited for the lock
                raise ModelNotFound(f"model {name!r} not found") from None
            fsync_dir(self.root)
        self._verified = {p: k for p, k in self._verified.items() if model_dir not in p.parents}
        self._sweep_trash(self.root)
        log.info("deleted model %s (versions %s)", name, versions)
        return versions

    # ----------------------------------------------------------------- internals
    @staticmethod
    def _sweep_trash(folder: Path) -> None:
        """Remove this delete's trash and any a crashed delete left behind (already invisible to readers)."""
        for trash in folder.glob(f"{TRASH_PREFIX}*"):
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _deleted(model_dir: Path) -> list[int]:
        try:
            return [int(v) for v in json.loads((model_dir / DELETED_FILE).read_text(encoding="utf-8"))]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError):
            log.error("%s is unreadable; version numbers are taken from the folders only", model_dir / DELETED_FILE)
            return []

    def _model_dir(self, name: str) -> Path:
        model_dir = self.root / name
        if not NAME_RE.match(name) or not model_dir.is_dir():
            raise ModelNotFound(f"model {name!r} not found")
        return model_dir

    def _read_pointer(self, name: str) -> tuple[int | None, list[int]]:
        """(active version, earlier active versions oldest first) from the pointer file."""
        path = self.root / name / POINTER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            version = data.get("version")
            return (int(version) if version is not None else None), [int(v) for v in data.get("history", [])]
        except FileNotFoundError:
            return None, []
        except (OSError, ValueError, TypeError, AttributeError):
            log.error("active pointer of %s is unreadable; treating as unset", name)
            return None, []

    def _flip_pointer(self, name: str, version: int) -> None:
        previous, history = self._read_pointer(name)
        if previous is not None and previous != version:
            history = [v for v in history if v != previous] + [previous]
        text = json.dumps({"version": version, "history": history[-50:]})
        atomic_write_text(self.root / name / POINTER_FILE, text)

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Serialise writers across processes (two workers registering the same name)."""
        lock_path = self.root / name / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _next_version(self, model_dir: Path) -> int:
        # Deleted numbers count: a job result or a replica that knew "v3" must never meet a different v3.
        numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] + self._deleted(model_dir)
        return max(numbers, default=0) + 1

    def _verify_folder(self, folder: Path, manifest: Manifest) -> None:
        reread = Manifest.model_validate_json((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if reread != manifest:
            raise RegistryError("manifest did not round-trip")
        if sha256_file(folder / MODEL_FILE) != manifest.sha256:
            raise RegistryError("model file checksum mismatch after copy")
        for variant in manifest.variants.values():
            if sha256_file(folder / variant.file) != variant.sha256:
                raise RegistryError(f"variant {variant.file!r} checksum mismatch")

    def _load(self, name: str, version: int, active: int | None) -> VersionInfo | None:
        path = self.root / name / str(version)
        try:
            manifest = Manifest.model_validate_json((path / MANIFEST_FILE).read_text(encoding="utf-8"))
            if manifest.format_version > MANIFEST_FORMAT:  # older ones read as they are (core/formats.py)
                raise VersionTooNew(too_new(f"version {version} of model {name!r}", manifest.format_version,
                                            MANIFEST_FORMAT))
            model_file = path / MODEL_FILE
            stat = model_file.stat()
            key = (stat.st_size, stat.st_mtime_ns)
            if self._verified.get(model_file) != key:
                if sha256_file(model_file) != manifest.sha256:
                    log.error("%s version %d: checksum mismatch, not usable", name, version)
                    return None
                self._verified[model_file] = key
        except (OSError, ValueError, ValidationError) as exc:
            log.warning("%s version %d is not usable: %s", name, version, exc)
            return None
        if manifest.name != name or manifest.version != version:
            log.error("%s version %d: manifest names %s v%d", name, version, manifest.name, manifest.version)
            return None
        status: Status = "active" if version == active else manifest.stage
        return VersionInfo(manifest=manifest, path=path, status=status)
