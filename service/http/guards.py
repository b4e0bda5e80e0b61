"""Slow and greedy uploaders: body read deadlines and a bound on large bodies in flight (ASGI middleware).

* A body that stalls for ``body_idle_timeout_s``, or whose average rate after ``body_grace_s`` is under
  ``min_body_rate`` bytes/s, ends with 408 and a closed connection (a client sending one byte every
  few seconds, or less than its Content-Length, no longer holds a connection and a buffer for ever).
* A request with a large body (over ``LARGE_BODY`` bytes, or chunked) needs one of
  ``max_inflight_uploads`` slots; it waits up to ``upload_wait_s`` for one, then gets 503 with
  Retry-After, its body never read. Unfinished bodies then hold at most that many request-size
  buffers, whatever the number of clients.

The clock only runs while the route waits for the client (inside ``receive``) plus the time between
reads; a route that reads the whole body promptly (all of ours do) is never cut for its own pace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings
from service.asgi_status import StatusRecorder, client_address, json_error

log = logging.getLogger(__name__)

LARGE_BODY = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyTooSlow(Exception):
    pass


@dataclass(frozen=True)
class BodyLimits:
    idle_timeout_s: float
    grace_s: float
    min_rate: float  # bytes/s
    max_inflight: int
    wait_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(settings.body_idle_timeout_s, settings.body_grace_s, settings.min_body_rate,
                   settings.max_inflight_uploads, settings.upload_wait_s)


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the serving loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length == 0:
            await self.app(scope, receive, send)
            return
        if length is not None and length <= LARGE_BODY:
            await self._guarded(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_inflight)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.wait_s)
        except TimeoutError:
            detail = f"too many large uploads in progress ({self.limits.max_inflight}); retry shortly"
            await json_error(send, 503, detail, [(b"retry-after", b"5"), (b"connection", b"close")])
            return
        try:
            await self._guarded(scope, receive, send)
        finally:
            self._slots.release()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        lim = self.limits
        started = time.monotonic()
        received = 0
        done = False
        recorder = StatusRecorder(send)

        async def timed_receive() -> Message:
            nonlocal received, done
            if done:  # the body is in; later reads wait for a disconnect, which may take any time
                return await receive()
            now = time.monotonic()
            # Wait no longer than the idle limit, nor past the moment the average rate falls below the minimum.
            rate_deadline = started + max(lim.grace_s, received / lim.min_rate) if lim.min_rate > 0 else float("inf")
            timeout = min(lim.idle_timeout_s, rate_deadline - now)
            if timeout <= 0:
                raise BodyTooSlow(f"the body arrived at under {lim.min_rate:,.0f} bytes/s")
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                # Which limit bound the wait, not the clock after it: a timer may fire a hair early.
                stalled = timeout >= lim.idle_timeout_s
                raise BodyTooSlow(f"no body data for {lim.idle_timeout_s:g}s" if stalled else
                                  f"the body arrived at under {lim.min_rate:,.0f} bytes/s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, timed_receive, recorder)
        except BodyTooSlow as exc:
            log.info("cut %s %s from %s: %s (%d bytes in %.1fs)", scope["method"], scope["path"],
                     client_address(scope), exc, received, time.monotonic() - started)
            if not recorder.status:  # nothing answered yet
                await json_error(send, 408, f"request body too slow: {exc}; send it faster or in one go",
                              [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None for a chunked body (unknown size, treated as large)."""
    headers = Headers(scope=scope)
    value = headers.get("content-length")
    if value is not None:
        return int(value) if value.isascii() and value.isdigit() else None
    return None if "transfer-encoding" in headers else 0

