"""Dataset routes: upload (streamed to disk), list, report, delete.

The upload body is parsed with python-multipart's streaming parser straight into a temp file under
``<home>/work/uploads`` (hashing as it goes), so an archive of any size never sits in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from core.datasets import Dataset, FileEntry, IngestLimits, SplitChoiceError, split_choice
from core.settings import Settings
from dataset_store import DatasetStore
from dataset_store.store import default_name, remove_stale
from service import metrics
from service.http.artefacts import IMMUTABLE, not_modified, serve_file, thumbnail_jpeg
from service.http.deps import DatasetStoreDep, FeatureModelDep, SettingsDep
from service.http.errors import ApiError
from service.http.schemas import DATASET_UPLOAD_BODY, errors
from service.inference.object_features import FeatureModel

log = logging.getLogger(__name__)

UPLOAD_PREFIX, UPLOAD_SUFFIX = "upload-", ".part"


def sweep_stale_uploads(uploads_dir: Path) -> int:
    """Remove partial uploads a crashed API process left behind (live ones are written to constantly)."""
    removed = remove_stale(uploads_dir, f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}")
    if removed:
        log.info("removed %d stale partial upload(s) from %s", removed, uploads_dir)
    return removed


router = APIRouter()

FILE_FIELD = "file"
MAX_FIELD_BYTES = 4096  # plain form fields (name) are short
MAX_NAME_CHARS = 200


class MultipartUpload:
    """Feeds a multipart body through the streaming parser; the ``file`` part goes to a temp file."""

    def __init__(self, boundary: bytes, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.filename = ""
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.fields: dict[str, str] = {}
        self._file: IO[bytes] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._part: str | None = None
        self._buffer = bytearray()
        callbacks: Any = {
            "on_header_field": self._on_header_field, "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end, "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data, "on_part_end": self._on_part_end,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise ApiError(400, f"malformed multipart body: {exc}") from exc

    def finish(self) -> None:
        self.parser.finalize()
        if self._file is not None:  # body ended inside the file part
            raise ApiError(400, "upload ended before the file part was complete")

    def cleanup(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    # -- parser callbacks ----------------------------------------------------------------------

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._headers = {}
        self._part = params.get(b"name", b"").decode("utf-8", "replace")
        self._buffer.clear()
        if self._part != FILE_FIELD:
            return
        if self.path is not None:
            raise ApiError(400, f"send one archive per upload (field {FILE_FIELD!r} appears twice)")
        self.filename = params.get(b"filename", b"").decode("utf-8", "replace")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX, dir=self.directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._file.write(chunk)
            self.sha256.update(chunk)
            self.size += len(chunk)
        elif self._part:
            self._buffer += chunk
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise ApiError(400, f"form field {self._part!r} is over {MAX_FIELD_BYTES} bytes")

    def _on_part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._part:
            if self._part in self.fields:  # which of two values was meant? (the schema has one of each)
                raise ApiError(422, f"form field {self._part!r} appears twice: send each field once")
            self.fields[self._part] = self._buffer.decode("utf-8", "replace")
        self._part = None


def _boundary(request: Request) -> bytes:
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(415, f"send multipart/form-data with the archive in the field {FILE_FIELD!r}")
    return boundary


def _dataset_name(upload: MultipartUpload) -> str | None:
    name = upload.fields.get("name", "").strip()
    if len(name) > MAX_NAME_CHARS:
        raise ApiError(422, f"name is over {MAX_NAME_CHARS} characters")
    return name or (default_name(upload.filename) if upload.filename else None)


SPLIT_FIELDS = ("val_fraction", "test_fraction", "min_val_per_class")
FORM_FIELDS = (FILE_FIELD, "name", *SPLIT_FIELDS)  # the upload's schema (service/http/schemas.py) has no others


def _check_fields(upload: MultipartUpload) -> None:
    """A misspelt field (``val_fracton``) would otherwise be dropped without a word, and the split made
    with the default the user meant to change."""
    unknown = sorted(set(upload.fields) - set(FORM_FIELDS))
    if unknown:
        raise ApiError(422, f"unknown form field(s) {', '.join(map(repr, unknown))}: an upload takes "
                            f"{', '.join(FORM_FIELDS)}")


def _split_choice(upload: MultipartUpload) -> dict[str, Any]:
    """The made split's ratios from the form (an archive with its own val/ folder keeps its split)."""
    try:
        return split_choice(*(upload.fields.get(name) for name in SPLIT_FIELDS))
    except SplitChoiceError as exc:
        raise ApiError(422, str(exc)) from exc


@router.post("", status_code=201, openapi_extra=DATASET_UPLOAD_BODY,
             responses={200: {"description": "This archive is already stored: its report"},
                        **errors(400, 413, 415, 422)})
async def upload_dataset(request: Request, response: Response, store: DatasetStoreDep,
                         settings: SettingsDep, features: FeatureModelDep) -> dict[str, Any]:
    """Upload a .zip/.tar/.tar.gz; 201 with the report, or 200 when this archive is already stored."""
    try:
        dataset, created = await _receive_and_ingest(request, store, settings, features)
    except ClientDisconnect:
        metrics.upload_finished("aborted")
        raise
    except Exception:
        metrics.upload_finished("refused")
        raise
    metrics.upload_finished("created" if created else "duplicate")
    response.status_code = 201 if created else 200
    return dataset.report()


async def _receive_and_ingest(request: Request, store: DatasetStore, settings: Settings, features: FeatureModel
                              ) -> tuple[Dataset, bool]:
    upload = MultipartUpload(_boundary(request), settings.uploads_dir)
    try:
        async for chunk in request.stream():
            upload.write(chunk)
        upload.finish()
        if upload.path is None:
            raise ApiError(422, f"field {FILE_FIELD!r} is required: attach a .zip, .tar or .tar.gz archive")
        _check_fields(upload)
        if upload.size == 0:
            raise ApiError(400, "the uploaded archive is empty (0 bytes)")
        limits = IngestLimits.from_settings(settings, **_split_choice(upload))
        path, name, digest = upload.path, _dataset_name(upload), upload.sha256.hexdigest()

        def ingest() -> tuple[Dataset, bool]:  # near duplicates are judged on the object when a model is there
            return store.ingest(path, name, limits, digest, objects=features.current())

        return await run_in_threadpool(ingest)
    finally:
        upload.cleanup()


@router.get("")
def list_datasets(store: DatasetStoreDep) -> list[dict[str, Any]]:
    return [d.summary() for d in store.list()]


@router.get("/{dataset_id}", responses=errors(404, 422))
def get_dataset(dataset_id: str, store: DatasetStoreDep, files: bool = False) -> dict[str, Any]:
    """The full report; ``?files=true`` adds the per-file list."""
    dataset = store.get(dataset_id)
    return dataset.model_dump() if files else dataset.report()


@router.delete("/{dataset_id}", status_code=204, responses=errors(404, 409))
def delete_dataset(dataset_id: str, request: Request, store: DatasetStoreDep) -> Response:
    store.get(dataset_id)  # 404 first
    in_use: Callable[[str], bool] = getattr(request.app.state, "dataset_in_use", None) or (lambda _id: False)
    if in_use(dataset_id):
        raise ApiError(409, f"dataset {dataset_id} is used by a job; cancel or wait for the job, then delete")
    store.delete(dataset_id)
    return Response(status_code=204)


def _stored_file(dataset: Dataset, path: str) -> FileEntry:
    """The stored file ``path`` names: its path in the dataset folder or in the uploaded archive.

    Only names in the dataset's listing are served: nothing outside it can be reached with ``..``.
    """
    for f in dataset.files:
        if path in (f.path, f.original):
            return f
    raise ApiError(404, f"dataset {dataset.id} has no image {path!r}: use a 'path' or 'original' "
                        f"from GET /v1/datasets/{dataset.id}?files=true")


@router.get("/{dataset_id}/images/{path:path}", responses={
    200: {"description": "the image as stored, or a JPEG thumbnail with ?size",
          "content": {"image/jpeg": {}, "image/png": {}, "application/octet-stream": {}}},
    304: {"description": "not modified (If-None-Match named its ETag)"}, **errors(404, 413, 422)})
def get_image(dataset_id: str, path: str, request: Request, store: DatasetStoreDep, settings: SettingsDep,
              size: Annotated[int | None, Query(ge=16, le=1024)] = None) -> Response:
    """A dataset image as stored, or a JPEG thumbnail fitting ``size`` x ``size``. Cached for good (ETag)."""
    dataset = store.get(dataset_id)
    entry = _stored_file(dataset, path)
    stored = store.file(dataset, entry.path)
    if size is None:
        return serve_file(request, stored, etag=f'"{entry.sha256[:32]}"')
    etag = f'"{entry.sha256[:32]}-{size}"'  # datasets are immutable: content hash and size name the thumbnail
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    body = thumbnail_jpeg(stored, size, settings.max_image_pixels)
    return Response(body, media_type="image/jpeg", headers=headers)
