"""Model routes: list, describe, predict, activate (promotion and rollback)."""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from core.images import ImageError
from models import VersionInfo
from models.manifest import MANIFEST_FILE, MODEL_FILE, Preprocessing
from service import metrics
from service.artefacts import IMMUTABLE, REVALIDATE, content_type, serve_file
from service.deps import DecodePoolDep, ManagerDep, RegistryDep, SettingsDep
from service.errors import ApiError
from service.explain import CamHead, NoCamOutput, crop_box, explanation, oriented_size
from service.manager import LoadedModel
from service.onnx_session import softmax, top_k
from service.preprocess import preprocess
from service.schemas import PREDICT_BODY, PredictResponse, errors

router = APIRouter()

# Heatmaps are for people looking at a few photos; bounding them per request bounds the request's cost
# (each map is drawn and PNG-encoded in the decode pool, outside the batcher's fair share).
MAX_EXPLAIN_IMAGES = 16


def version_view(info: VersionInfo) -> dict[str, Any]:
    m = info.manifest
    return {
        "version": m.version, "status": info.status, "created_at": m.created_at,
        "metrics": m.metrics, "source": m.source, "backbone": m.backbone,
        "variants": sorted(["fp32", *m.variants]), "files": m.files,
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


async def decode_all(
    payloads: list[bytes], names: list[str | None], pre: Preprocessing, max_pixels: int, pool: ThreadPoolExecutor
) -> list[np.ndarray]:
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(pool, preprocess, data, pre, max_pixels) for data in payloads]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for i, res in enumerate(results):
        if isinstance(res, ImageError):
            named = f" ({names[i]})" if names[i] else ""
            prefix = f"image {i + 1} of {len(payloads)}{named}: " if len(payloads) > 1 else ""
            raise ImageError(res.kind, prefix + str(res))
        if isinstance(res, BaseException):
            raise res
    return results  # type: ignore[return-value]


async def explain_images(loaded: LoadedModel, head: CamHead, payloads: list[bytes], names: list[str | None],
                         max_pixels: int, pool: ThreadPoolExecutor) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Logits and a CAM of the top class per image: decoded in the pool, run off the batcher (it asks for
    the feature map, which plain predictions never copy out), maps drawn in numpy in the pool."""
    pre = loaded.preprocessing
    arrays = await decode_all(payloads, names, pre, max_pixels, pool)
    loop = asyncio.get_running_loop()

    def work() -> tuple[np.ndarray, list[dict[str, Any]]]:
        logits, feats = loaded.engine.run_outputs(np.stack(arrays), [loaded.engine.output_name, head.output])
        top = logits.argmax(1)
        maps = head.maps(feats, top)
        return logits, [
            explanation(maps[i], loaded.labels[int(top[i])], int(top[i]),
                        crop_box(*oriented_size(payloads[i], max_pixels), pre), pre.crop)
            for i in range(len(payloads))
        ]

    return await loop.run_in_executor(pool, work)


@router.post("/{name}/predict", response_model=PredictResponse, openapi_extra=PREDICT_BODY,
             responses=errors(400, 404, 409, 413, 415, 422, 503))
async def predict(
    name: str,
    request: Request,
    manager: ManagerDep,
    pool: DecodePoolDep,
    settings: SettingsDep,
    top_k_: Annotated[int | None, Query(alias="top_k", ge=1)] = None,
    explain: Annotated[bool, Query(description="add a class activation heatmap of the top class per image")] = False,
) -> Response:
    loaded = manager.get(name)  # 404 for an unknown model, before reading the body
    explained: list[dict[str, Any]] | None = None
    try:
        # Default: 5. More than the model's labels is clamped to all of them (and said in the answer).
        asked = settings.default_top_k if top_k_ is None else top_k_
        k = min(asked, len(loaded.labels))
        if explain:
            try:
                head = loaded.cam_head()
            except NoCamOutput as exc:
                raise ApiError(409, str(exc)) from exc
        payloads, names = await read_images(request)
        if explain and len(payloads) > MAX_EXPLAIN_IMAGES:
            raise ApiError(413, f"explain=true draws a heatmap per image and takes at most {MAX_EXPLAIN_IMAGES} images "
                                f"per request (got {len(payloads)}): send them in smaller requests, or drop explain")
        if explain:
            logits, explained = await explain_images(loaded, head, payloads, names, settings.max_image_pixels, pool)
        elif loaded.takes_encoded(len(payloads)):
            logits = await loaded.predict_encoded(payloads, settings.max_image_pixels)
        else:  # several images decode side by side in the pool, then run as one request
            arrays = await decode_all(payloads, names, loaded.preprocessing, settings.max_image_pixels, pool)
            logits = await loaded.predict(arrays)
        version, labels, temperature = loaded.version, loaded.labels, loaded.temperature
    finally:
        loaded.release()
    metrics.predicted(name, version, len(payloads))
    probs = softmax(logits, temperature)
    # Hot path: build the JSON directly. Returning a Response skips FastAPI's pydantic validation and
    # re-serialisation of the response_model (which stays above for the OpenAPI schema only).
    results: list[dict[str, Any]] = [
        {"file": file, "predictions": [{"label": labels[i], "index": i, "probability": p} for i, p in row]}
        for file, row in zip(names, top_k(probs, k), strict=True)
    ]
    for result, why in zip(results, explained or (), strict=False):
        result["explanation"] = why
    body = json.dumps({"model": name, "version": version, "top_k": k, "top_k_clamped": top_k_ is not None and k < asked,
                       "results": results}, separators=(",", ":"))
    return Response(body, media_type="application/json")
