"""Model routes: list, describe, predict, activate (promotion and rollback), delete."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from models import VersionInfo
from models.manifest import MANIFEST_FILE, MODEL_FILE
from service.http.artefacts import IMMUTABLE, REVALIDATE, content_type, serve_file
from service.http.deps import DriftDep, FeedbackDep, JobStoreDep, ManagerDep, RegistryDep, SettingsDep
from service.http.errors import ApiError
from service.http.schemas import PREDICT_BODY, PredictResponse, errors
from service.inference import drift, lifecycle
from service.inference.predictor import MAX_EXPLAIN_IMAGES, ImageAnswer, PredictOptions
from service.inference.selective import manifest_section

router = APIRouter()


def version_view(info: VersionInfo) -> dict[str, Any]:
    m = info.manifest
    return {
        "version": m.version, "status": info.status, "created_at": m.created_at,
        "metrics": m.metrics, "source": m.source, "backbone": m.backbone,
        "variants": sorted(["fp32", *m.variants]), "files": m.files,
        # The out-of-distribution scorer and the selective-answer curve, as the trainer wrote them (or null).
        "ood": manifest_section(m, "ood"), "selective": manifest_section(m, "selective"),
        "files_url": f"/v1/models/{m.name}/versions/{m.version}/files",
    }


def version_files(info: VersionInfo) -> list[str]:
    """Every file of a version that may be downloaded: the stored listing, nothing found on disk."""
    m = info.manifest
    return [MODEL_FILE, MANIFEST_FILE, *(v.file for v in m.variants.values()), *m.files]


def model_view(name: str, registry: RegistryDep, manager: ManagerDep) -> dict[str, Any]:
    versions = registry.versions(name)
    active = registry.active_version(name)
    loaded = manager.loaded().get(name)
    labels = next((v.manifest.labels for v in versions if v.version == active), versions[-1].manifest.labels
                  if versions else [])
    error = manager.errors.get(name)
    return {
        "name": name,
        "active_version": active,
        "serving_version": loaded.version if loaded else None,
        "provider": loaded.provider if loaded else None,
        "variant": loaded.variant if loaded else None,
        "variant_reason": loaded.variant_reason if loaded else None,  # why that variant (gate passed, or fp32's why)
        "pid": os.getpid(),  # the API process that answered (serving_version is per process; see --workers)
        "decoder": loaded.decoder if loaded else None,
        "labels": labels,
        "versions": [version_view(v) for v in versions],
        "load_error": None if error is None else {"version": error.version, "error": error.error, "at": error.at},
    }


@router.get("")
def list_models(registry: RegistryDep) -> list[dict[str, Any]]:
    return [
        {"name": name, "active_version": registry.active_version(name),
         "versions": [v.version for v in registry.versions(name)]}
        for name in registry.model_names()
    ]


@router.get("/{name}", responses=errors(404))
def get_model(name: str, registry: RegistryDep, manager: ManagerDep) -> dict[str, Any]:
    return model_view(name, registry, manager)


@router.get("/{name}/versions/{version}/files", responses=errors(404, 422))
def list_files(name: str, version: int, registry: RegistryDep) -> dict[str, Any]:
    """The version's files (model, variants, manifest, report and plots) with their sizes and URLs."""
    info = registry.get(name, version)
    base = f"/v1/models/{name}/versions/{version}/files"
    return {"model": name, "version": version, "files": [
        {"name": f, "size": (info.path / f).stat().st_size, "content_type": content_type(f), "url": f"{base}/{f}"}
        for f in version_files(info) if (info.path / f).is_file()
    ]}


FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file (JSON, PNG, or an ONNX/torch download)",
          "content": {t: {} for t in ("application/json", "image/png", "application/octet-stream")}},
    304: {"description": "not modified (If-None-Match named this file's ETag)"},
    **errors(404, 422),
}


@router.get("/{name}/versions/{version}/files/{file:path}", responses=FILE_RESPONSES)
def get_file(name: str, version: int, file: str, request: Request, registry: RegistryDep) -> Response:
    """One file of a version. Versions never change, so it is cached for good (ETag, 304)."""
    info = registry.get(name, version)
    allowed = version_files(info)
    if file not in allowed:  # the listing, not the disk, decides: no "../", no stray files
        raise ApiError(404, f"version {version} of {name!r} has no file {file!r}; "
                            f"it has: {', '.join(allowed)}")
    path = info.path / file
    if not path.is_file():
        raise ApiError(404, f"file {file!r} of {name!r} version {version} is listed but missing on disk")
    etag = f'"{info.manifest.sha256}"' if file == MODEL_FILE else None  # already hashed: no stat games
    return serve_file(request, path, REVALIDATE if file == MANIFEST_FILE else IMMUTABLE, etag)


@router.post("/{name}/versions/{version}/activate", responses=errors(400, 404, 422))
def activate(name: str, version: int, registry: RegistryDep, manager: ManagerDep) -> dict[str, Any]:
    """Point the model at ``version``; answers once this process serves it, or says the swap is pending."""
    registry.activate(name, version)
    from transport.promotions import announce_promotion  # local: keeps redis import off the hot path

    announce_promotion(manager.settings.broker_url, name, version)
    manager.wake()
    state = manager.wait_serving(name, version, manager.settings.activate_wait_s)
    view = model_view(name, registry, manager)
    return {**view, "swap": swap_view(name, version, state, view)}


@router.delete("/{name}/versions/{version}", status_code=204, responses=errors(404, 409, 422))
def delete_version(name: str, version: int, registry: RegistryDep, manager: ManagerDep, jobs: JobStoreDep) -> Response:
    """Delete one version: 409 while it is active or a queued or running job uses it as its base."""
    lifecycle.delete_version(registry, manager, jobs, name, version)
    return Response(status_code=204)


@router.delete("/{name}", responses=errors(404, 409, 422))
def delete_model(
    name: str, registry: RegistryDep, manager: ManagerDep, jobs: JobStoreDep,
    force_bootstrapped: Annotated[bool, Query(description="also delete the bootstrapped pretrained model "
                                                          "(refused without this)")] = False,
) -> dict[str, Any]:
    """Delete every version of a model: 409 while a queued or running job publishes to it or builds on it."""
    versions = lifecycle.delete_model(registry, manager, jobs, name, force_bootstrapped)
    return {"model": name, "deleted_versions": versions}


def swap_view(name: str, version: int, state: str, view: dict[str, Any]) -> dict[str, Any]:
    """What the activation did in this API process; other processes follow within their refresh interval."""
    serving = view["serving_version"]
    detail = {
        "serving": f"version {version} is active and this API process now serves it",
        "pending": f"version {version} is active; this API process still serves version {serving} while it loads "
                   f"version {version}: GET /v1/models/{name} shows serving_version when the swap is done",
        "failed": f"version {version} is active but could not be loaded here "
                  f"({(view['load_error'] or {}).get('error')}); still serving version {serving}: "
                  "activate the previous version to roll back",
    }[state]
    return {"version": version, "state": state, "detail": detail}


async def read_images(request: Request) -> tuple[list[bytes], list[str | None]]:
    """Image payloads (and their file names) from multipart fields named ``file`` or a raw ``image/*`` body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=256) as form:  # closes the spooled files (over 1 MB: on disk)
            files = [f for f in form.getlist("file") if not isinstance(f, str)]
            if not files:
                raise ApiError(422, "no image: send one or more multipart fields named 'file'")
            return [await f.read() for f in files], [f.filename or None for f in files]
    body = await request.body()
    if not body:
        raise ApiError(422, "no image: send multipart field 'file' or a raw image/* body")
    if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
        raise ApiError(415, f"unsupported content type {ctype!r}: send image/* or multipart/form-data")
    return [body], [None]


@router.post("/{name}/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY,
             responses=errors(400, 404, 409, 413, 415, 422, 503))
async def predict(
    name: str,
    request: Request,
    manager: ManagerDep,
    settings: SettingsDep,
    feedback: FeedbackDep,
    history: DriftDep,
    top_k_: Annotated[int | None, Query(alias="top_k", ge=1)] = None,
    explain: Annotated[bool, Query(description=f"add a class activation heatmap of the top class per image; "
                                   f"at most {MAX_EXPLAIN_IMAGES} images per request then (413 past it)")] = False,
    ood_threshold: Annotated[float | None, Query(
        allow_inf_nan=False, description="answer unknown when a photo's ood_score is above this (default: the "
        "version's threshold, chosen at training for its stated in-distribution recall)")] = None,
    min_confidence: Annotated[float | None, Query(
        ge=0, le=1, allow_inf_nan=False, description="answer unknown when the top probability is below this "
        "(default: the version's floor, set when its training named a target accuracy; else none)")] = None,
) -> Response:
    loaded = await manager.acquire(name)  # 404 for an unknown model, before reading the body; cold: loads it
    asked = settings.default_top_k if top_k_ is None else top_k_  # more than the labels: clamped, and said
    options = PredictOptions(asked, explain, ood_threshold, min_confidence)
    try:
        if explain:
            loaded.predictor.cam_head()  # 409 before reading the body
        payloads, names = await read_images(request)
        answer = await loaded.predictor.predict(payloads, options, names)
    finally:
        loaded.release()
    drift.observe(answer)
    history.observe(answer)  # the persisted series of GET .../drift
    capture_ids = await feedback.capture(answer, payloads)  # the policy's choice (none while it is off)
    # Hot path: build the JSON directly. Returning a Response skips FastAPI's pydantic validation and
    # re-serialisation of the response_model (which stays above for the OpenAPI schema only).
    results = [result_view(file, r, c) for file, r, c in zip(names, answer.results, capture_ids, strict=True)]
    body = json.dumps({"model": answer.model, "version": answer.version, "top_k": answer.top_k,
                       "top_k_clamped": top_k_ is not None and answer.top_k < asked, "results": results},
                      separators=(",", ":"))
    return Response(body, media_type="application/json")


def result_view(file: str | None, r: ImageAnswer, capture_id: str | None = None) -> dict[str, Any]:
    predictions = [{"label": label, "index": i, "probability": p} for label, i, p in r.predictions]
    view: dict[str, Any] = {"file": file, "predictions": predictions, "ood_score": r.ood_score,
                            "unknown": r.unknown, "unknown_reason": r.unknown_reason}
    if r.explanation is not None:
        view["explanation"] = r.explanation
    if capture_id is not None:  # kept for review (the model's feedback policy): label it with this id
        view["capture_id"] = capture_id
    return view
