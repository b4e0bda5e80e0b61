"""Cross-site requests: mutating requests from a foreign page are refused; CORS only for allowed origins.

A browser sends ``Origin`` with every POST (and ``Sec-Fetch-Site`` with every request), so a form or
``fetch`` on another site that targets this API is recognisable, even a "simple" ``text/plain`` POST
that CORS never preflights. Clients that are not browsers (curl, the Python client) send neither
header and pass. The service's own pages (the web console at ``/``) are same-origin: their ``Origin``
names the host they were served from, which is the request's ``Host``.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def parse_origins(text: str) -> list[str]:
    """``TUNESERVE_ALLOWED_ORIGINS`` as normalised ``scheme://host[:port]`` strings."""
    out = []
    for raw in text.split(","):
        item = raw.strip().rstrip("/").lower()
        if item:
            parts = urlsplit(item)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"TUNESERVE_ALLOWED_ORIGINS entry {raw.strip()!r} is not scheme://host[:port]")
            out.append(item)
    return out


class CrossSiteGuard:
    """403 for a mutating request whose ``Origin`` is neither this service nor an allowed origin."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    def refusal(self, scope: Scope) -> str | None:
        headers = {name.decode(): value.decode("latin-1") for name, value in scope.get("headers", [])
                   if name in (b"origin", b"sec-fetch-site", b"host")}
        origin = headers.get("origin", "").strip().lower()
        if origin:
            if origin in self.allowed or _same_host(origin, headers.get("host", "")):
                return None
            return (f"cross-site request from {origin} refused: add the origin to TUNESERVE_ALLOWED_ORIGINS "
                    "if its pages may change this service")
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return "cross-site request refused (Sec-Fetch-Site: cross-site without an allowed Origin)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and (why := self.refusal(scope)):
            body = json.dumps({"detail": why}).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _same_host(origin: str, host: str) -> bool:
    """``Origin`` names the host:port the request was sent to. The scheme is not compared: behind a
    TLS-terminating proxy the service sees http while the page is https, and a page of another site
    cannot make the browser send this service's name as its Origin."""
    if origin == "null" or not host:  # "null": sandboxed frames, file:// pages, redirects across sites
        return False
    parts = urlsplit(origin)
    netloc = parts.netloc
    default = {"http": ":80", "https": ":443"}.get(parts.scheme, "")
    host = host.strip().lower()
    return netloc == host or netloc + default == host or netloc == host.removesuffix(default)


def cors_options(allowed: list[str]) -> dict[str, object]:
    """Starlette's ``CORSMiddleware`` for the allowed origins only: others get no CORS headers at all."""
    return {"allow_origins": allowed, "allow_methods": ["GET", "POST", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type"], "max_age": 600}
