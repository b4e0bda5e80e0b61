"""Small ASGI pieces the middlewares share: the status an app answered, the client, an error answer."""

from __future__ import annotations

import json

from starlette.types import Message, Scope, Send


class StatusRecorder:
    """Passes messages on to ``send`` and remembers the response status (0 until the response starts)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


async def json_error(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]]) -> None:
    """Answer ``{"detail": ...}`` from a middleware, before the app has started a response."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
