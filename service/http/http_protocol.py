"""uvicorn's HTTP/1.1 protocol with a header deadline: a connection that has not finished sending a
request's headers ``header_timeout_s`` after it opened (or after that request's first byte, on a
kept-alive connection) gets 408 and is closed.

uvicorn has no such timer: its keep-alive timeout only runs between requests, so a client that sends
half a request line holds its connection (and a file descriptor) for as long as it likes. Body
deadlines are an ASGI middleware (service/http/guards.py), where the route's reads are visible.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.settings import get_settings

log = logging.getLogger(__name__)

_BODY = json.dumps({"detail": "request headers did not arrive in time; send the whole request at once"}).encode()
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.run(..., http=GuardedHttpToolsProtocol)``. ``header_timeout_s`` None reads
    ``TUNESERVE_HEADER_TIMEOUT_S``; a subclass may fix it (tests)."""

    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: TimerHandle | None = None
        self._timeout = self.header_timeout_s if self.header_timeout_s is not None else get_settings().header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None and self._timeout > 0:
            self._header_timer = self.loop.call_later(self._timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug("closing %s: headers not complete within %.0fs", self.client, self._timeout)
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()
