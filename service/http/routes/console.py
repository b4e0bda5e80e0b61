"""The web console: static files shipped in the package (service/console/), served at ``/``.

No build step and nothing fetched from elsewhere: plain HTML, CSS and a script per page
(docs/architecture.md). Every console response carries a strict Content-Security-Policy (scripts, styles
and requests from this origin only, no inline scripts), which the page is written to satisfy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parents[2] / "console"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


class ConsoleFiles(StaticFiles):
    """The console's scripts and styles, with the same policy headers as the page."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      *((k.lower().encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def console_files() -> ConsoleFiles:
    return ConsoleFiles(directory=STATIC)
