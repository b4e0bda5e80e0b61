"""The API's own documentation: the OpenAPI document as the routes answer, and /docs served offline.

FastAPI adds a 422 with its list-of-errors schema to every route that has parameters; this API
answers ``{"detail": string}`` (service/http/errors.py) and each route declares the 4xx it can give
(``service.http.schemas.errors``), so those generated 422s are dropped (a route whose parameters can fail
declares 422 itself); OpenAPI links (service/http/links.py) lead from a created dataset or job to the routes
that take its id. Swagger UI's files come from the ``fastapi-offline`` package, so /docs works on a
host with no internet access.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.http.links import add_links

STATIC_URL = "/docs-static"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def swagger_assets() -> Path:
    """Swagger UI's bundle and stylesheet inside the installed fastapi-offline package (not imported)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package 'fastapi-offline' (Swagger UI's files for /docs) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without the 422s it adds on its own (the schema this API never answers), with links."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        ref = "#/components/schemas/HTTPValidationError"
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                generated = responses.get("422", {}).get("content", {}).get("application/json", {})
                if generated.get("schema", {}).get("$ref") == ref:
                    del responses["422"]
                for status, response in responses.items():
                    # Errors are JSON whatever the route's own media type (the event stream's 404)
                    content = response.get("content", {})
                    if status[0] in "45" and "application/json" not in content:
                        response["content"] = {"application/json": next(iter(content.values()))}
        add_links(doc)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in FASTAPI_VALIDATION_SCHEMAS:
            schemas.pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def install_docs(app: FastAPI) -> None:
    """The truthful /openapi.json, and /docs from packaged Swagger UI files (create the app with docs_url=None)."""
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]
    app.mount(STATIC_URL, StaticFiles(directory=swagger_assets()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
