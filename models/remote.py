"""The registry in object storage (``TUNESERVE_STORAGE_URL``): what models/registry.py does on disk.

Layout under the storage prefix::

    models/<name>/ACTIVE                        {"version": 3, "history": [1, 2]}, moved by conditional puts
    models/<name>/claims/<v>                    version numbers, each claimed once (create-only put)
    models/<name>/versions/<v>/<file>           model.onnx, variants, report, plots ...
    models/<name>/versions/<v>/.files.json      {file: {"size", "sha256"}} of every file above
    models/<name>/versions/<v>/manifest.json    written last: a version without it does not exist

A writer claims a number, uploads every file (each with its SHA-256, checked again once stored),
records the listing, writes the manifest, and moves the pointer last with ``If-Match`` on the ETag
it read (``If-None-Match: *`` for a first pointer), so of two writers only one wins a given pointer
state and the other re-reads and tries again: no promotion is lost. A writer killed anywhere
leaves the previous active version serving and every listed version complete. Readers download a
version's files into ``<home>/work/storage`` (core/blob_cache.py: keyed by SHA-256, checked before
use, damaged copies downloaded again) and serve from there; versions deleted from the bucket are
dropped from that cache too.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import ValidationError

from core.blob_cache import BlobCache
from core.formats import too_new
from core.fsutil import atomic_write_text, sha256_file
from core.settings import Settings
from core.storage import PreconditionFailed, Storage
from models.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MODEL_FILE, Manifest
from models.registry import (
    NAME_RE,
    ModelNotFound,
    Registry,
    RegistryError,
    VersionInfo,
    VersionInUse,
    VersionNotFound,
    VersionTooNew,
    validate_name,
)

log = logging.getLogger(__name__)

FILES_FILE = ".files.json"
POINTER_KEY = "ACTIVE"
RESERVED = {MANIFEST_FILE, FILES_FILE}
POINTER_TRIES = 20


class PointerConflict(RegistryError):
    """The active pointer kept changing under this writer (others moving it); try again."""


def registry_for(settings: Settings) -> Registry:
    """The registry every edge builds: object storage when ``TUNESERVE_STORAGE_URL`` is set, else the home."""
    if settings.storage_url:
        return S3Registry(Storage(settings.storage_url), settings.storage_cache_dir)
    return Registry(settings.models_dir)


class S3Registry(Registry):
    """:class:`Registry`'s interface over object storage; ``VersionInfo.path`` is this process's checked copy."""

    # Called with "files" (every file uploaded and checked) and "manifest" (written, pointer not yet
    # moved): where a crash test stops a writer. Nothing in the service sets it.
    stage_hook: Callable[[str], None] | None = None

    def __init__(self, storage: Storage, cache_root: Path, prune_interval_s: float = 10.0) -> None:
        # Not Registry.__init__: nothing here is the store itself, the folder is a cache.
        self.storage = storage
        self.root = Path(cache_root) / "models"
        self.root.mkdir(parents=True, exist_ok=True)
        self._verified = {}
        self._stamped = True
        self.blobs = BlobCache(Path(cache_root) / "blobs")
        self.prune_interval_s = prune_interval_s
        self._pruned_at = float("-inf")

    # ----------------------------------------------------------------- keys
    @staticmethod
    def _key(name: str, *parts: str | int) -> str:
        return "/".join(["models", name, *map(str, parts)])

    def _version_key(self, name: str, version: int, rel: str) -> str:
        return self._key(name, "versions", version, rel)

    # ----------------------------------------------------------------- reading
    def model_names(self) -> list[str]:
        names = [n for n in self.storage.children("models/") if NAME_RE.match(n)]
        if time.monotonic() - self._pruned_at >= self.prune_interval_s:
            self._pruned_at = time.monotonic()
            self._prune(names)
        return names

    def exists(self, name: str) -> bool:
        return bool(NAME_RE.match(name)) and self.storage.any_under(self._key(name) + "/")

    def active_version(self, name: str) -> int | None:
        return self._pointer(name)[0]

    def history(self, name: str) -> list[int]:
        return self._pointer(name)[1]

    def version_numbers(self, name: str) -> list[int]:
        numbers = sorted(self._listing(name))
        self._prune_versions(name, set(numbers))
        return numbers

    def versions(self, name: str) -> list[VersionInfo]:
        """Every committed version (its manifest written), oldest first; files are fetched by :meth:`get`."""
        listing = self._listing(name)
        self._prune_versions(name, set(listing))
        active = self.active_version(name)
        found = []
        for version in sorted(v for v, files in listing.items() if MANIFEST_FILE in files):
            try:
                manifest = self._manifest(name, version)
            except VersionTooNew as exc:
                log.error("%s", exc)
                continue
            if manifest is not None:
                found.append(self._info(name, manifest, active))
        return found

    def get(self, name: str, version: int | None = None) -> VersionInfo:
        """One committed version with its files checked in the local cache; ``None`` means the active one."""
        active = self.active_version(name)
        if version is None:
            if active is None:
                if not self.exists(name):
                    raise ModelNotFound(f"model {name!r} not found")
                raise VersionNotFound(f"model {name!r} has no active version")
            version = active
        manifest = self._manifest(name, version)
        if manifest is None:
            self._drop_view(name, version)
            if not self.exists(name):
                raise ModelNotFound(f"model {name!r} not found")
            raise VersionNotFound(f"model {name!r} has no version {version}")
        self._materialize(name, manifest)
        return self._info(name, manifest, active)

    # ----------------------------------------------------------------- writing
    def register(
        self,
        manifest: Manifest,
        model_file: Path,
        extra_files: dict[str, Path] | None = None,
        activate: bool = False,
    ) -> VersionInfo:
        name = validate_name(manifest.name)
        files = {MODEL_FILE: Path(model_file), **{_safe_rel(rel): Path(p) for rel, p in (extra_files or {}).items()}}
        for variant in manifest.variants.values():
            if variant.file not in files:
                raise RegistryError(f"variant file {variant.file!r} is missing")
        listing = {rel: (p.stat().st_size, sha256_file(p)) for rel, p in files.items()}
        version = self._claim(name)
        stored = manifest.model_copy(update={"version": version, "sha256": listing[MODEL_FILE][1],
                                            "format_version": MANIFEST_FORMAT})
        written: list[str] = []
        try:
            for rel, path in files.items():
                key = self._version_key(name, version, rel)
                written.append(key)
                self.storage.put_file(key, path, listing[rel][1], listing[rel][0])
            written.append(self._version_key(name, version, FILES_FILE))
            record = {rel: {"size": size, "sha256": sha} for rel, (size, sha) in listing.items()}
            self.storage.put_bytes(written[-1], json.dumps(record).encode(), create_only=True)
            self._stage("files")
            self.storage.put_bytes(self._version_key(name, version, MANIFEST_FILE),
                                   stored.model_dump_json(indent=2).encode(), create_only=True)
        except BaseException:
            try:  # the number stays claimed; what was uploaded is invisible without a manifest anyway
                self.storage.delete(written)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                log.warning("could not remove the partial upload of %s version %d", name, version)
            raise
        self._stage("manifest")
        for rel, path in files.items():  # the writer's own files seed its cache: no download
            self.blobs.link(self.blobs.adopt(path, listing[rel][1]), self.root / name / str(version) / rel)
        log.info("registered %s version %d in %s", name, version, self.storage.url)
        if activate:
            self._flip_pointer(name, version)
        return self.get(name, version)

    def activate(self, name: str, version: int) -> VersionInfo:
        if self._manifest(name, version) is None:
            raise VersionNotFound(f"model {name!r} has no version {version}")
        self._flip_pointer(name, version)
        if self._manifest(name, version) is None:  # deleted between the check and the flip: undo the flip
            self._update_pointer(name, lambda active, history: (
                (history[-1], history[:-1]) if active == version and history else
                (None, history) if active == version else (active, history)))
            raise VersionNotFound(f"model {name!r} has no version {version} (deleted meanwhile)")
        log.info("activated %s version %d", name, version)
        return self.get(name, version)

    def set_stage(self, name: str, version: int, stage: Literal["registered", "candidate"]) -> VersionInfo:
        key = self._version_key(name, version, MANIFEST_FILE)
        for _ in range(POINTER_TRIES):
            blob = self.storage.get(key)
            if blob is None:
                raise VersionNotFound(f"model {name!r} has no version {version}")
            updated = Manifest.model_validate_json(blob.body).model_copy(update={"stage": stage})
            try:
                self.storage.put_bytes(key, updated.model_dump_json(indent=2).encode(), if_match=blob.etag)
                return self.get(name, version)
            except PreconditionFailed:
                continue
        raise PointerConflict(f"the manifest of {name!r} version {version} kept changing; try again")

    def delete_version(self, name: str, version: int) -> None:
        """The manifest goes first (the version disappears for every reader at once), then its files; the
        claimed number stays, so it is never given out again."""
        listing = self._listing(name)
        if version not in listing:
            raise VersionNotFound(f"model {name!r} has no version {version}")
        if self.active_version(name) == version:
            raise VersionInUse(f"version {version} of {name!r} is active: activate another version "
                               f"(POST /v1/models/{name}/versions/<v>/activate) first, or delete the whole model")
        self.storage.delete([self._version_key(name, version, MANIFEST_FILE)])
        prefix = self._key(name, "versions", version) + "/"
        self.storage.delete([prefix + rel for rel in self.storage.keys(prefix)])
        self._update_pointer(name, lambda active, history: (active, [v for v in history if v != version]))
        self._drop_view(name, version)
        log.info("deleted %s version %d from %s", name, version, self.storage.url)

    def delete_model(self, name: str) -> list[int]:
        """The pointer first (no replica serves it after its next look), then every manifest, then the rest."""
        if not self.exists(name):
            raise ModelNotFound(f"model {name!r} not found")
        keys = [self._key(name, rel) for rel in self.storage.keys(self._key(name) + "/")]
        versions = sorted(self._listing(name))
        manifests = [k for k in keys if k.endswith("/" + MANIFEST_FILE)]
        self.storage.delete([self._key(name, POINTER_KEY)])
        self.storage.delete(manifests)
        self.storage.delete([k for k in keys if k not in manifests])
        shutil.rmtree(self.root / name, ignore_errors=True)
        self.blobs.sweep()
        log.info("deleted model %s (versions %s) from %s", name, versions, self.storage.url)
        return versions

    # ----------------------------------------------------------------- internals
    def _stage(self, stage: str) -> None:
        if self.stage_hook is not None:
            self.stage_hook(stage)

    def _pointer(self, name: str) -> tuple[int | None, list[int], str | None]:
        """(active version, earlier active versions oldest first, the pointer's ETag or None when absent)."""
        blob = self.storage.get(self._key(name, POINTER_KEY))
        if blob is None:
            return None, [], None
        try:
            data = json.loads(blob.body)
            version = data.get("version")
            return (int(version) if version is not None else None), [int(v) for v in data.get("history", [])], blob.etag
        except (ValueError, TypeError, AttributeError):
            log.error("active pointer of %s is unreadable; treating as unset", name)
            return None, [], blob.etag

    def _update_pointer(self, name: str,
                        change: Callable[[int | None, list[int]], tuple[int | None, list[int]]]) -> None:
        """Read, change, and write the pointer only over the state read (else read again): two writers
        never both win one state, and neither's change is lost."""
        for attempt in range(POINTER_TRIES):
            active, history, etag = self._pointer(name)
            new_active, new_history = change(active, history)
            if (new_active, new_history) == (active, history):
                return
            body = json.dumps({"version": new_active, "history": new_history[-50:]}).encode()
            try:
                self.storage.put_bytes(self._key(name, POINTER_KEY), body, if_match=etag, create_only=etag is None)
                return
            except PreconditionFailed:
                log.info("active pointer of %s moved meanwhile; reading it again", name)
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise PointerConflict(f"the active pointer of {name!r} kept changing under this write; try again")

    def _flip_pointer(self, name: str, version: int) -> None:
        def change(active: int | None, history: list[int]) -> tuple[int | None, list[int]]:
            if active is not None and active != version:
                history = [v for v in history if v != active] + [active]
            return version, history

        self._update_pointer(name, change)

    def _claim(self, name: str) -> int:
        """The next version number, claimed with a create-only put (a number is given out once, ever)."""
        taken = [int(n) for n in self.storage.children(self._key(name, "claims") + "/") if n.isdigit()]
        number = max([*taken, *self._listing(name, must_exist=False)], default=0) + 1
        for _ in range(100):
            try:
                self.storage.put_bytes(self._key(name, "claims", number), b"", create_only=True)
                return number
            except PreconditionFailed:
                number += 1
        raise RegistryError(f"could not claim a version number for {name!r}")

    def _listing(self, name: str, must_exist: bool = True) -> dict[int, set[str]]:
        """{version: its object names} from one listing (raises ModelNotFound for an unknown name)."""
        if not NAME_RE.match(name):
            raise ModelNotFound(f"model {name!r} not found")
        found: dict[int, set[str]] = {}
        for rel in self.storage.keys(self._key(name, "versions") + "/"):
            number, _, file = rel.partition("/")
            if number.isdigit():
                found.setdefault(int(number), set()).add(file)
        if must_exist and not found and not self.exists(name):
            raise ModelNotFound(f"model {name!r} not found")
        return found

    def _manifest(self, name: str, version: int) -> Manifest | None:
        blob = self.storage.get(self._version_key(name, version, MANIFEST_FILE))
        if blob is None:
            return None
        try:
            manifest = Manifest.model_validate_json(blob.body)
        except ValidationError as exc:
            log.warning("%s version %d is not usable: %s", name, version, exc)
            return None
        if manifest.format_version > MANIFEST_FORMAT:
            raise VersionTooNew(too_new(f"version {version} of model {name!r}", manifest.format_version,
                                        MANIFEST_FORMAT))
        if manifest.name != name or manifest.version != version:
            log.error("%s version %d: manifest names %s v%d", name, version, manifest.name, manifest.version)
            return None
        return manifest

    def _info(self, name: str, manifest: Manifest, active: int | None) -> VersionInfo:
        status: Literal["active", "registered", "candidate"] = (
            "active" if manifest.version == active else manifest.stage)
        return VersionInfo(manifest=manifest, path=self.root / name / str(manifest.version), status=status)

    def _materialize(self, name: str, manifest: Manifest) -> None:
        """Every file of the version, checked against its recorded SHA-256, linked into its cache folder."""
        version = manifest.version
        blob = self.storage.get(self._version_key(name, version, FILES_FILE))
        if blob is None:
            raise VersionNotFound(f"version {version} of model {name!r} has no file listing (incomplete)")
        listing: dict[str, dict[str, Any]] = json.loads(blob.body)
        if listing.get(MODEL_FILE, {}).get("sha256") != manifest.sha256:
            raise RegistryError(f"version {version} of {name!r}: the model file's checksum differs from the manifest's")
        folder = self.root / name / str(version)
        for rel, record in listing.items():
            sha, size = str(record["sha256"]), int(record["size"])
            key = self._version_key(name, version, _safe_rel(rel))

            def download(dest: Path, key: str = key) -> bool:
                return self.storage.download(key, dest)

            path = self.blobs.fetch(sha, size, download)
            if path is None:
                raise VersionNotFound(f"version {version} of model {name!r} is missing {rel} (deleted meanwhile?)")
            self.blobs.link(path, folder / rel)
        text = manifest.model_dump_json(indent=2)
        local = folder / MANIFEST_FILE
        if not local.is_file() or local.read_text(encoding="utf-8") != text:
            atomic_write_text(local, text)

    def _drop_view(self, name: str, version: int) -> None:
        folder = self.root / name / str(version)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            self.blobs.sweep()

    def _prune_versions(self, name: str, numbers: set[int]) -> None:
        folder = self.root / name
        if not folder.is_dir():
            return
        gone = [p for p in folder.iterdir() if p.name.isdigit() and int(p.name) not in numbers]
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        if gone:
            self.blobs.sweep()

    def _prune(self, names: list[str]) -> None:
        """Drop cached models and versions the bucket no longer has (deleted through another replica)."""
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            if folder.name not in names:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                self._prune_versions(folder.name, set(self._listing(folder.name)))
            except ModelNotFound:
                shutil.rmtree(folder, ignore_errors=True)
        self.blobs.sweep()


def _safe_rel(rel: str) -> str:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts or str(path) in RESERVED:
        raise RegistryError(f"file {rel!r} would land outside the version folder (or replace its manifest)")
    return str(path)
