"""HEAD on every GET route (ASGI middleware): answered as the GET would be, headers only.

FastAPI's routes serve the methods they name, so HEAD got 405 while ``Allow`` listed it. Here a HEAD is
run as its GET, and the body is dropped on the way out (``Content-Length`` stays the GET's, as HTTP asks).
A streamed GET (an event stream) is stopped after its headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _Answered(Exception):
    """The head is sent; the streamed body that follows is not wanted."""


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = False

        async def head_send(message: Message) -> None:
            nonlocal done
            if done:
                raise _Answered
            if message["type"] == "http.response.body":
                done = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _Answered
                return
            await send(message)

        try:
            await self.app({**scope, "method": "GET"}, receive, head_send)
        except _Answered:
            pass
        except BaseExceptionGroup as group:  # a streaming response raises from its task group
            rest = group.subgroup(lambda exc: not isinstance(exc, _Answered))
            if rest is not None:
                raise rest from None
