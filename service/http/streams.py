"""A cap on open event streams (ASGI middleware): per client address and in all, 429 past it.

Each ``GET /v1/jobs/{id}/events`` connection holds a coroutine that reads the job store every 0.5 s for
as long as the job runs; without a cap a client could open thousands and keep the store busy.
"""

from __future__ import annotations

import re
from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send

from service.asgi_status import json_error

EVENTS_PATH = re.compile(r"^/v1/jobs/[^/]+/events$")


class EventStreamLimit:
    def __init__(self, app: ASGIApp, per_client: int, total: int) -> None:
        self.app = app
        self.per_client = per_client
        self.total = total
        self.open: Counter[str] = Counter()  # one event loop per process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not EVENTS_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("-", 0))[0]
        if self.open[client] >= self.per_client or self.open.total() >= self.total:
            mine = self.open[client] >= self.per_client
            detail = (f"too many open event streams ({self.per_client} per client)" if mine else
                      f"too many open event streams on this server ({self.total})") + \
                "; close one (or poll GET /v1/jobs/{id}) and retry"
            await json_error(send, 429, detail, [(b"retry-after", b"5")])
            return
        self.open[client] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[client] -= 1
            if not self.open[client]:
                del self.open[client]
