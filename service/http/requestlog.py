"""One log line per request (DEBUG), and a client that hangs up mid-request as one INFO line.

A client that disconnects before its body is read makes Starlette raise ``ClientDisconnect`` from the
route; left alone, uvicorn logs that as an ERROR with a full traceback, though nothing is wrong with
the service. Here it becomes one INFO line and the request simply ends (no one is left to answer).
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.asgi_status import StatusRecorder, client_address

log = logging.getLogger("tuneserve.requests")


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        except ClientDisconnect:
            log.info("client %s disconnected before sending all of %s %s", client_address(scope), scope["method"],
                     scope["path"], extra=_fields(scope))
            return
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %s %.1fms %s", scope["method"], scope["path"], recorder.status or "-",
                          (time.perf_counter() - started) * 1000, client_address(scope), extra=_fields(scope))



def _fields(scope: Scope) -> dict[str, str]:
    """The model a request is about, for the log's ``model`` field (from the route's path)."""
    params = scope.get("path_params") or {}
    name = params.get("name")
    fields = {"model": name} if name else {}
    if "version" in params:
        fields["version"] = params["version"]
    return fields
