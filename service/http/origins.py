"""Which names this service answers to, and which pages may change it (ASGI middlewares).

* **Host** (DNS rebinding): a page on ``evil.example`` whose name is re-pointed at 127.0.0.1 reaches a
  loopback service with ``Host: evil.example``. Every request must name an allowed host
  (``TUNESERVE_ALLOWED_HOSTS``; default the loopback names and the bind address), checked before any
  route runs, reads included; the probes are exempt (they say nothing, and an orchestrator's probe names
  the pod's address).
* **Origin**: a browser sends ``Origin`` with every POST (and ``Sec-Fetch-Site`` with every request), so a
  form or ``fetch`` on another site that targets this API is recognisable, even a "simple" ``text/plain``
  POST that CORS never preflights. A mutating request passes when its ``Origin`` is in
  ``TUNESERVE_ALLOWED_ORIGINS``, or names an allowed host on the port the request came to (the service's
  own pages, the web console at ``/``). The request's own ``Host`` is never trusted for this: under
  rebinding it is the attacker's name. Clients that are not browsers (curl, the Python client) send
  neither header and pass.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings
from service.asgi_status import json_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
DEFAULT_PORTS = {"http": 80, "https": 443}


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


def _machine_names() -> list[str]:
    """This machine's own names and addresses: what clients use to reach a service bound to 0.0.0.0."""
    names = [socket.gethostname(), socket.getfqdn()]
    with contextlib.suppress(OSError):  # a host name that does not resolve: its name only
        names += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
    return names


def allowed_hosts(settings: Settings) -> list[str]:
    """``TUNESERVE_ALLOWED_HOSTS`` (``name``, ``name:port``, ``*.domain`` or ``*``), lower-cased; unset: the
    loopback names and the bind address (for a wildcard bind, this machine's name and addresses)."""
    text = settings.allowed_hosts.strip()
    if text:
        entries = [item.strip().lower() for item in text.split(",") if item.strip()]
    else:
        bind = settings.host.strip().strip("[]").lower()
        entries = [*LOOPBACK_NAMES, *(_machine_names() if bind in WILDCARD_BINDS else [bind])]
    return list(dict.fromkeys(_bracket(entry) for entry in entries))


def _bracket(entry: str) -> str:
    """IPv6 addresses as a ``Host`` header writes them: ``[::1]``."""
    try:
        if ipaddress.ip_address(entry).version == 6:
            return f"[{entry}]"
    except ValueError:
        pass
    return entry


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` from a Host header (None when it is not one)."""
    try:
        parts = urlsplit(f"//{value.strip().lower()}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name:
        return None
    return (f"[{name}]" if ":" in name else name), port


class HostList:
    """Matches ``name`` and ``name:port`` against the allowed entries."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = entries

    def allows(self, name: str, port: int | None) -> bool:
        for entry in self.entries:
            if entry == "*":
                return True
            if entry.startswith("*."):
                if name.endswith(entry[1:]):
                    return True
                continue
            parsed = split_host(entry)
            if parsed and parsed[0] == name and parsed[1] in (None, port):
                return True
        return False


class HostGuard:
    """400 ``{"detail": ...}`` for a request whose ``Host`` is not an allowed host name."""

    def __init__(self, app: ASGIApp, hosts: HostList) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in PROBE_PATHS:
            host = Headers(scope=scope).get("host", "")
            parsed = split_host(host)
            if parsed is None or not self.hosts.allows(*parsed):
                shown = host[:100].encode("ascii", "backslashreplace").decode()
                await json_error(send, 400, f"Host {shown!r} is not a name of this service: add it to "
                                            "TUNESERVE_ALLOWED_HOSTS (comma-separated) to serve it", [])
                return
        await self.app(scope, receive, send)


class CrossSiteGuard:
    """403 for a mutating request whose ``Origin`` is neither an allowed origin nor this service."""

    def __init__(self, app: ASGIApp, allowed: list[str], hosts: HostList) -> None:
        self.app = app
        self.allowed = frozenset(allowed)
        self.hosts = hosts

    def refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        origin = headers.get("origin", "").strip().lower()
        if origin:
            if origin in self.allowed or self._own_page(origin, headers.get("host", "")):
                return None
            return (f"cross-site request from {origin} refused: add the origin to TUNESERVE_ALLOWED_ORIGINS "
                    "if its pages may change this service")
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return "cross-site request refused (Sec-Fetch-Site: cross-site without an allowed Origin)"
        return None

    def _own_page(self, origin: str, host: str) -> bool:
        """``Origin`` names an allowed host on the port this request came to. The scheme is not compared:
        behind a TLS-terminating proxy the service sees http while the page is https."""
        if origin == "null":  # sandboxed frames, file:// pages, redirects across sites
            return False
        parts = urlsplit(origin)
        theirs = split_host(parts.netloc)
        ours = split_host(host)
        if theirs is None or ours is None:
            return False
        name, port = theirs
        port = port or DEFAULT_PORTS.get(parts.scheme)
        our_port = ours[1] or port  # a Host without a port: the scheme's default, as the page's
        return port == our_port and self.hosts.allows(name, port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and (why := self.refusal(scope)):
            await json_error(send, 403, why, [])
            return
        await self.app(scope, receive, send)


def cors_options(allowed: list[str]) -> dict[str, object]:
    """Starlette's ``CORSMiddleware`` for the allowed origins only: others get no CORS headers at all."""
    return {"allow_origins": allowed, "allow_methods": ["GET", "POST", "DELETE"],
            "allow_headers": ["Authorization", "Content-Type"], "max_age": 600}
