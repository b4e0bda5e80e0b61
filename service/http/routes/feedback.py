"""Feedback routes: the capture policy, corrections, the review queue, and the dataset made from it.

Thin: the capture decision lives in service/inference/capture.py, the store in feedback/store.py, the dataset in
feedback/dataset.py. Reading captures and labelling them needs an admin key (service/http/auth.py); sending a
correction is open to predict keys, like predicting.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from core.datasets.schemas import IngestLimits
from core.images import open_image
from feedback import CapturePolicy, FeedbackFull, FeedbackNotFound, FeedbackStore
from feedback.dataset import build_feedback_dataset
from feedback.store import LabelInvalid, check_label
from service.http.deps import DatasetStoreDep, DriftDep, FeatureModelDep, FeedbackDep, RegistryDep, SettingsDep
from service.http.errors import ApiError
from service.http.schemas import errors
from service.inference import drift
from service.inference.capture import extension

CAPTURE_ID = "[0-9a-f]{32}"  # feedback/store.py: uuid4().hex


class CaptureIdConvertor(Convertor[str]):
    """Only capture ids match ``{capture_id:capture}``, so ``/feedback/dataset`` and ``/feedback/policy``
    are never read as captures (their 405s list only their own methods)."""

    regex = CAPTURE_ID

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Registered before the routes below compile their paths (a name -> convertor table in Starlette).
register_url_convertor("capture", CaptureIdConvertor())
router = APIRouter()
CaptureId = Annotated[str, Path(pattern=f"^{CAPTURE_ID}$", description="a capture's id (32 hex digits)")]
MAX_PAGE = 500
IMAGE_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "gif": "image/gif", "tif": "image/tiff"}


def model_store(name: str, registry: RegistryDep, feedback: FeedbackDep) -> FeedbackStore:
    registry.versions(name)  # 404 naming the models there are, before any folder is made
    return feedback.store(name)


StoreDep = Annotated[FeedbackStore, Depends(model_store)]


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str | None  # a class (known or new), or null for "none of these"


def not_found(exc: FeedbackNotFound) -> ApiError:
    return ApiError(404, str(exc))


@router.get("/{name}/feedback/policy", responses=errors(404))
def get_policy(store: StoreDep) -> CapturePolicy:
    """The model's capture policy (``off`` until one is set)."""
    return store.policy()


@router.put("/{name}/feedback/policy", responses=errors(400, 404, 422))
def put_policy(policy: CapturePolicy, store: StoreDep) -> CapturePolicy:
    """Set which predictions are kept for review; a lower cap drops the oldest unlabelled captures now."""
    return store.set_policy(policy)


@router.post("/{name}/feedback", status_code=201, responses=errors(400, 404, 409, 413, 415, 422))
async def send_correction(name: str, request: Request, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """A user's correction: multipart ``file`` (the photo) and ``label`` (its true class, known or new)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise ApiError(415, f"unsupported content type {ctype!r}: send multipart/form-data with fields "
                            "'file' (the photo) and 'label' (its true class)")
    async with request.form(max_files=1) as form:
        upload, label = form.get("file"), form.get("label")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "no image: send the photo in the multipart field 'file'")
        if not isinstance(label, str):
            raise ApiError(422, "no label: send the photo's true class in the multipart field 'label'")
        photo = await upload.read()
    try:
        label = check_label(label)
    except LabelInvalid as exc:
        raise ApiError(422, str(exc)) from exc
    open_image(photo, settings.max_image_pixels).close()  # not an image: 4xx, nothing kept

    def keep() -> str | None:
        return store.add(photo, hashlib.sha256(photo).hexdigest(), extension(photo), source="correction",
                         version=None, answer=None, label=label, labeled=True)

    try:
        capture_id = await run_in_threadpool(keep)
    except FeedbackFull as exc:
        raise ApiError(409, str(exc)) from exc
    assert capture_id is not None  # a labelled photo is kept or refused, never skipped
    return store.get(capture_id).view(name)


@router.get("/{name}/feedback", responses=errors(404, 422))
def list_feedback(
    name: str, store: StoreDep,
    state: Annotated[Literal["unlabeled", "labeled"] | None, Query(description="omit for both")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> dict[str, Any]:
    """A page of captures, oldest first; ``next_offset`` is null on the last page."""
    items, total = store.page(state, limit, offset)
    more = offset + len(items) < total
    return {"model": name, "state": state, "total": total, "offset": offset, "limit": limit,
            "next_offset": offset + len(items) if more else None, "items": [c.view(name) for c in items]}


@router.post("/{name}/feedback/dataset", status_code=201,
             responses={200: {"description": "the same content is already stored: that dataset's report"},
                        **errors(404, 409, 422)})
async def make_dataset(name: str, response: Response, store: StoreDep, registry: RegistryDep,
                       datasets: DatasetStoreDep, settings: SettingsDep, features: FeatureModelDep
                       ) -> dict[str, Any]:
    """A new dataset version: the active version's dataset plus the labelled captures (train/val only)."""
    info = registry.get(name)  # the active version
    parent_id = info.manifest.source.get("dataset_id")
    if not isinstance(parent_id, str):
        raise ApiError(409, f"version {info.manifest.version} of {name!r} was not trained on a stored dataset "
                            "(bootstrapped or imported): train a version on an uploaded dataset first, or "
                            "upload one holding the reviewed photos")
    parent = datasets.get_local(parent_id)  # 404 when it was deleted since; its photos here

    def build() -> tuple[Any, bool]:
        return build_feedback_dataset(datasets, parent, store, name, info.manifest.version,
                                      IngestLimits.from_settings(settings), settings.work_dir,
                                      objects=features.current())

    dataset, created = await run_in_threadpool(build)
    response.status_code = 201 if created else 200
    return dataset.report()  # type: ignore[no-any-return]


@router.get("/{name}/feedback/{capture_id:capture}", responses=errors(404))
def get_capture(name: str, capture_id: CaptureId, store: StoreDep) -> dict[str, Any]:
    try:
        return store.get(capture_id).view(name)
    except FeedbackNotFound as exc:
        raise not_found(exc) from exc


@router.get("/{name}/feedback/{capture_id:capture}/image", responses={
    200: {"description": "the captured photo", "content": {t: {} for t in IMAGE_TYPES.values()}}, **errors(404)})
def get_capture_image(capture_id: CaptureId, store: StoreDep) -> FileResponse:
    try:
        capture = store.get(capture_id)
    except FeedbackNotFound as exc:
        raise not_found(exc) from exc
    ext = capture.file.rsplit(".", 1)[-1]
    return FileResponse(store.photo(capture), media_type=IMAGE_TYPES.get(ext, "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=3600"})


@router.post("/{name}/feedback/{capture_id:capture}", responses=errors(400, 404, 422))
def label_capture(name: str, capture_id: CaptureId, body: LabelBody, store: StoreDep,
                  history: DriftDep) -> dict[str, Any]:
    """Label a capture: ``{"label": "<class>"}`` (known or new) or ``{"label": null}`` for "none of these"."""
    try:
        before = store.get(capture_id)
        after = store.label(capture_id, body.label)
    except FeedbackNotFound as exc:
        raise not_found(exc) from exc
    except LabelInvalid as exc:
        raise ApiError(422, str(exc)) from exc
    if not before.labeled and before.answer is not None:  # the first review of a prediction: live accuracy
        top = before.answer["predictions"][0]["label"] if before.answer["predictions"] else None
        drift.observe_review(name, before.version, after.label, top)
        if before.version is not None:
            history.review(name, before.version, drift.review_outcome(after.label, top))
    return after.view(name)
