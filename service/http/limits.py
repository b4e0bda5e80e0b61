"""ASGI middleware that refuses request bodies over a byte limit with 413, also for chunked uploads."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.asgi_status import StatusRecorder, json_error


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """``limit_for(path)`` gives the byte limit for a request path (dataset uploads get a larger one)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            await _reject(send, limit)
            return
        received = 0
        recorder = StatusRecorder(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, recorder)
        except BodyTooLarge:
            if not recorder.status:  # nothing answered yet
                await _reject(send, limit)


async def _reject(send: Send, limit: int) -> None:
    await json_error(send, 413, f"request body is over the limit of {limit:,} bytes", [(b"connection", b"close")])
