"""The status an ASGI app answered, for middlewares that report on requests (metrics, request log)."""

from __future__ import annotations

from starlette.types import Message, Send


class StatusRecorder:
    """Passes messages on to ``send`` and remembers the response status (0 until the response starts)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
