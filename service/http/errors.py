"""Every error the API returns is JSON ``{"detail": "<what is wrong>"}``."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.datasets import (
    ArchiveCorrupt,
    ArchiveTooLarge,
    ArchiveUnsafe,
    DatasetInvalid,
    DatasetNotFound,
    DatasetTooNew,
    UnsupportedArchive,
)
from core.images import ImageError
from core.storage import PreconditionFailed, StorageError
from models import ModelNotFound, PointerConflict, RegistryError, VersionInUse, VersionNotFound
from service.inference.batching import QueueFull
from service.inference.explain import NoCamOutput
from service.inference.lifecycle import JobNotDeletable
from service.inference.loaded import ModelUnavailable
from service.inference.predictor import TooManyImages

log = logging.getLogger(__name__)

DATASET_STATUS: dict[type[Exception], int] = {
    DatasetNotFound: 404, DatasetInvalid: 422, ArchiveUnsafe: 400, ArchiveCorrupt: 400,
    ArchiveTooLarge: 413, UnsupportedArchive: 415, DatasetTooNew: 409,
}
# The status (and headers) each of our exceptions answers with; one handler serves them all.
ERROR_STATUS: dict[type[Exception], tuple[int, dict[str, str] | None]] = {
    ModelNotFound: (404, None), VersionNotFound: (404, None), RegistryError: (400, None),
    VersionInUse: (409, None), JobNotDeletable: (409, None), NoCamOutput: (409, None),
    TooManyImages: (413, None), ModelUnavailable: (503, {"Retry-After": "2"}),
    QueueFull: (503, {"Retry-After": "1"}),
    # Object storage unreachable or refusing (core/storage.py): the request may well work in a moment.
    StorageError: (503, {"Retry-After": "5"}), PointerConflict: (409, None), PreconditionFailed: (409, None),
    **{cls: (code, None) for cls, code in DATASET_STATUS.items()},
}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's words (fastapi/routing.py)
IMAGE_STATUS = {"unsupported": 415, "corrupt": 400, "too_large": 413, "empty": 400, "too_small": 400,
                "aspect": 422}


class ApiError(Exception):
    """Raised by routes and dependencies for a clean 4xx/5xx with a message."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # A message may quote user text holding lone surrogates (JSON "\ud800"), which UTF-8 cannot encode.
    safe = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"detail": safe}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            where = f" at character {loc[-1]}" if len(loc) > 1 else ""
            parts.append(f"the body is not valid JSON{where}: {err.get('ctx', {}).get('error', err.get('msg'))}")
            continue
        where = ".".join(str(p) for p in loc if p != "body") or ("body" if loc[:1] == ("body",) else "")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def allowed_methods(request: Request) -> list[str]:
    """Every method the API serves at this path, from its OpenAPI document (Starlette's 405 names only
    the first route that matched the path), plus HEAD where GET is served. Where several templates match,
    those with the most literal segments are the path's (the rest answer 405 there: service/http/routes/jobs.py)."""
    paths = request.app.openapi().get("paths", {})
    matching = [(template, item) for template, item in paths.items()
                if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), request.url.path)]
    # The most literal templates win, as routing decides: /v1/jobs/schema is that route only, not also
    # /v1/jobs/{job_id}; /v1/models/{name}/feedback/dataset is not also .../feedback/{capture_id}.
    literal = max((template.count("/") - template.count("{") for template, _ in matching), default=0)
    templates = [item for template, item in matching if template.count("/") - template.count("{") == literal]
    methods = {m.upper() for item in templates for m in item if m in HTTP_METHODS}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # FastAPI's answer when json.loads fails other than by syntax (a 5000-digit number): bad JSON
            # gets one status, the 422 of every other unparsable body.
            return _json(422, f"the body is not valid JSON: {exc.__cause__ or exc.detail}")
        return _json(exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(ImageError)
    async def image_error(_: Request, exc: ImageError) -> JSONResponse:
        return _json(IMAGE_STATUS.get(exc.kind, 400), str(exc))

    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        # The nearest listed class in the exception's MRO, as Starlette picks the handler.
        status, headers = next(ERROR_STATUS[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUS)
        return _json(status, str(exc), headers)

    for exc_class in ERROR_STATUS:
        app.add_exception_handler(exc_class, known_error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, _validation_message(exc))
