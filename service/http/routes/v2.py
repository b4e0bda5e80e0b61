"""Open Inference Protocol v2 (KServe / Triton REST): health, metadata, readiness and infer.

Clients built for Triton or KServe (``tritonclient.http``, gateways) use these instead of ``/v1``. An
infer request goes through the same :class:`~service.inference.predictor.Predictor` as ``POST /v1/.../predict``
(same decoding, decode budget, batching and answers); keys, body limits and slow-body guards apply as
to every route (the predict role may infer). Inputs: one tensor, ``BYTES`` (encoded photos, one per
element) or ``FP32`` (preprocessed, ``[N, 3, crop, crop]``). Outputs: ``probabilities`` (FP32
``[N, classes]``), ``labels`` (BYTES ``[N, k]``, ``"score:index:label"`` as Triton's classification
extension writes them; ``parameters.classification`` on a requested output sets k, and turns
``probabilities`` into such strings too), ``unknown`` (BOOL ``[N]``, the "none of these" answer) and
``ood_score`` (FP32 ``[N]``) when the version has a score. Errors are ``{"error": "..."}`` as the
protocol says; a model that is not ready answers 400, as Triton does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from models import VersionInfo
from service.http.deps import ManagerDep, RegistryDep, SettingsDep
from service.http.v2_tensors import (
    HEADER_LENGTH,
    InferRequest,
    OutputTensor,
    ProtocolError,
    RequestedOutput,
    bytes_elements,
    encode_response,
    number_array,
    parse_request,
)
from service.inference.loaded import LoadedModel
from service.inference.predictor import Answer, Image, PredictOptions, TooManyImages
from service.inference.selective import manifest_section

MAX_IMAGES = 256  # per request, as /v1's multipart limit
SERVER_NAME = "tuneserve"
EXTENSIONS = ["binary_tensor_data", "classification"]
OUTPUTS = ("probabilities", "labels", "unknown", "ood_score")  # the order of a response without 'outputs'


class V2Error(BaseModel):
    error: str


ERROR_MEANING = {
    400: "Not protocol-conformant, or the model is not ready (as Triton answers)",
    401: "Missing or invalid API key", 403: "The key's role may not do this",
    404: "No such model or version", 413: "Too many images, or the body or decode budget is over its limit",
    415: "An image format that cannot be read", 422: "A parameter fails validation",
    503: "Not ready or overloaded: retry after the Retry-After header's seconds",
}


def v2_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": V2Error, "description": ERROR_MEANING[code]} for code in codes}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message.encode("utf-8", "backslashreplace").decode()}, status, headers)


class V2Route(APIRoute):
    """Errors as the protocol writes them: the app's handlers decide the status, ``detail`` becomes ``error``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ProtocolError as exc:
                return error(400, str(exc))
            except Exception as exc:
                for cls in type(exc).__mro__:
                    app_handler = request.app.exception_handlers.get(cls)
                    if app_handler is not None:
                        answer = await app_handler(request, exc)
                        kept = {k: v for k, v in answer.headers.items() if k in ("retry-after", "allow")}
                        return error(answer.status_code, json.loads(answer.body)["detail"], kept)
                raise

        return route


router = APIRouter(route_class=V2Route, tags=["inference protocol v2"])

VersionParam = Annotated[str, Path(pattern=r"^[0-9]+$", description="a version number of the model (the registry's)")]


def version_number(version: str | None) -> int | None:
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()):
        raise ProtocolError(f"model versions are whole numbers (got {version!r}): see GET /v2/models/{{name}}")
    return int(version)


@router.get("/v2")
def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": "0.1.0", "extensions": EXTENSIONS}


@router.get("/v2/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", responses=v2_errors(503))
def ready(manager: ManagerDep) -> JSONResponse:
    """Ready when every preloaded model is loaded (a model the budget keeps unloaded loads on demand)."""
    if manager.ready():
        return JSONResponse({"ready": True})
    return error(503, "models are still loading", {"Retry-After": "1"})


def model_metadata(info: VersionInfo, versions: list[str]) -> dict[str, Any]:
    m = info.manifest
    crop = m.preprocessing.crop
    outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(m.labels)]},
               {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
               {"name": "unknown", "datatype": "BOOL", "shape": [-1]}]
    if manifest_section(m, "ood") is not None:
        outputs.append({"name": "ood_score", "datatype": "FP32", "shape": [-1]})
    return {"name": m.name, "versions": versions, "platform": "onnxruntime_onnx",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                       {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, crop, crop]}],
            "outputs": outputs, "parameters": {"labels": m.labels}}


@router.get("/v2/models/{name}", responses=v2_errors(400, 404))
def metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    return model_metadata(registry.get(name), [str(v.version) for v in registry.versions(name)])


@router.get("/v2/models/{name}/versions/{version}", responses=v2_errors(400, 404, 422))
def version_metadata(name: str, version: VersionParam, registry: RegistryDep) -> dict[str, Any]:
    return model_metadata(registry.get(name, version_number(version)), [version])


def readiness(name: str, version: str | None, manager: ManagerDep) -> JSONResponse:
    """200 when an infer request would be answered: loaded, or unloaded and loaded on demand."""
    number = version_number(version)
    state, problem = manager.state(name, number)
    shown = version or str(manager.registry.get(name).version)
    if state in ("loaded", "unloaded"):
        return JSONResponse({"name": name, "version": shown, "ready": True, "state": state})
    why = f"could not be loaded ({problem})" if state == "failed" else "is still loading"
    return error(400, f"model {name!r} version {shown} {why}")


@router.get("/v2/models/{name}/ready", responses=v2_errors(400, 404))
def model_ready(name: str, manager: ManagerDep) -> JSONResponse:
    return readiness(name, None, manager)


@router.get("/v2/models/{name}/versions/{version}/ready", responses=v2_errors(400, 404, 422))
def version_ready(name: str, version: VersionParam, manager: ManagerDep) -> JSONResponse:
    return readiness(name, version, manager)


INFER_ERRORS = v2_errors(400, 404, 413, 415, 422, 503)
INFER_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"],
                                    "description": "an inference request of the Open Inference Protocol v2"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "description":
                                            f"JSON then binary tensors, the JSON's length in {HEADER_LENGTH}"}}}}}


@router.post("/v2/models/{name}/infer", responses=INFER_ERRORS, openapi_extra=INFER_BODY)
async def infer(name: str, request: Request, manager: ManagerDep, settings: SettingsDep) -> Response:
    return await run_infer(name, None, request, manager, settings.default_top_k)


@router.post("/v2/models/{name}/versions/{version}/infer", responses=INFER_ERRORS, openapi_extra=INFER_BODY)
async def infer_version(name: str, version: VersionParam, request: Request, manager: ManagerDep,
                        settings: SettingsDep) -> Response:
    return await run_infer(name, version, request, manager, settings.default_top_k)


async def run_infer(name: str, version: str | None, request: Request, manager: ManagerDep,
                    default_k: int) -> Response:
    loaded = await manager.acquire(name, version_number(version))  # 404 before the body; cold: loads it
    try:
        infer_request = parse_request(await request.body(), request.headers.get(HEADER_LENGTH))
        images = request_images(infer_request, loaded.preprocessing.crop)
        options = PredictOptions(top_k=len(loaded.labels),  # every probability, for the probabilities output
                                 ood_threshold=float_parameter(infer_request, "ood_threshold"),
                                 min_confidence=float_parameter(infer_request, "min_confidence", 0.0, 1.0))
        answer = await loaded.predictor.predict(images, options)
        outputs = response_outputs(infer_request, answer, loaded, default_k)
    finally:
        loaded.release()
    body, head = encode_response(answer.model, answer.version, infer_request.id, outputs)
    if head is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)})


def float_parameter(request: InferRequest, key: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    value = request.parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProtocolError(f"parameters.{key} must be a number" + (f" in [{low}, {high}]" if low > -math.inf else ""))
    return float(value)


def request_images(request: InferRequest, crop: int) -> list[Image]:
    """The one input as images: encoded photos (BYTES) or preprocessed ``(3, crop, crop)`` arrays (FP32)."""
    if len(request.inputs) != 1:
        raise ProtocolError(f"send exactly one input (got {len(request.inputs)}): BYTES 'image' with encoded "
                            f"photos, or FP32 'pixels' of shape [N, 3, {crop}, {crop}]")
    tensor = request.inputs[0]
    count = tensor.shape[0] if tensor.datatype != "BYTES" else tensor.count
    if count > MAX_IMAGES:
        raise TooManyImages(f"{count} images in one request; at most {MAX_IMAGES}: send them in smaller requests")
    if count == 0:
        raise ProtocolError(f"input {tensor.name!r} holds no image")
    if tensor.datatype == "BYTES":
        return list(bytes_elements(tensor))
    if tensor.shape[1:] != [3, crop, crop]:
        raise ProtocolError(f"input {tensor.name!r} has shape {tensor.shape}; this version takes preprocessed "
                            f"pixels of shape [N, 3, {crop}, {crop}] (or BYTES encoded photos)")
    return list(number_array(tensor))


def response_outputs(request: InferRequest, answer: Answer, loaded: LoadedModel, default_k: int) -> list[OutputTensor]:
    labels = loaded.labels
    has_ood = loaded.engine.ood_output is not None
    available = [o for o in OUTPUTS if o != "ood_score" or has_ood]
    asked = request.outputs or [RequestedOutput(o) for o in available]
    results = answer.results
    n = len(results)
    outputs = []
    for out in asked:
        if out.name not in available:
            raise ProtocolError(f"model {answer.model!r} has no output {out.name!r}; it has: {', '.join(available)}")
        binary = request.binary_output if out.binary is None else out.binary
        if out.name == "labels" or (out.name == "probabilities" and out.classification):
            k = min(out.classification or default_k, len(labels))
            # Triton's classification strings: value, class index and label, most probable first.
            strings = [f"{p:f}:{i}:{label}".encode() for r in results for label, i, p in r.predictions[:k]]
            outputs.append(OutputTensor(out.name, "BYTES", [n, k], strings, binary))
            continue
        if out.classification:
            raise ProtocolError(f"classification applies to 'probabilities' or 'labels', not {out.name!r}")
        if out.name == "probabilities":
            probs = np.zeros((n, len(labels)), np.float32)
            for row, r in enumerate(results):
                for _, i, p in r.predictions:
                    probs[row, i] = p
            outputs.append(OutputTensor(out.name, "FP32", [n, len(labels)], probs, binary))
        elif out.name == "unknown":
            outputs.append(OutputTensor(out.name, "BOOL", [n], np.array([r.unknown for r in results]), binary))
        else:  # ood_score: NaN where the model could not score a photo (JSON: null is not a number)
            scores = np.array([math.nan if r.ood_score is None else r.ood_score for r in results], np.float32)
            outputs.append(OutputTensor(out.name, "FP32", [n], scores, binary))
    return outputs
