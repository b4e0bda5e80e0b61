"""API keys with two roles, checked by an ASGI middleware before any route runs.

``admin`` may do everything; ``predict`` may read (GET/HEAD) and predict. Keys come from
``TUNESERVE_API_KEYS`` (``role:key,role:key``) and/or ``TUNESERVE_API_KEYS_FILE`` (one ``role:key`` a
line). A request sends ``Authorization: Bearer <key>``; 401 without a valid key, 403 when the key's
role may not do this. With no keys configured every request passes: ``tuneserve serve`` then binds
only loopback addresses (:func:`bind_refusal`). Keys are never logged, and never part of a message.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings

Role = Literal["admin", "predict"]
ROLES: tuple[Role, ...] = ("admin", "predict")

# Open to anyone: probes, the scrape endpoint, the API description (it holds no data, and Swagger UI
# needs it before the user can press "Authorize"), and the web console's page and static assets (a
# browser cannot send a key when it loads a page; the console's API calls carry the key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                          "/redoc", "/"})
PUBLIC_PREFIXES = ("/console/",)
READ_METHODS = frozenset({"GET", "HEAD"})
PREDICT_PATH = re.compile(r"^/v1/models/[^/]+/predict$")
# Sending a correction is a user's act, like predicting; reading the captured photos (users' data) is not.
CORRECTION_PATH = re.compile(r"^/v1/models/[^/]+/feedback$")
FEEDBACK_PATHS = re.compile(r"^/v1/models/[^/]+/feedback(/.*)?$")


class KeyConfigError(ValueError):
    """The key settings cannot be used; the message names the setting and the fix."""


def _parse(text: str, source: str, sep: str) -> list[tuple[Role, str]]:
    pairs: list[tuple[Role, str]] = []
    for n, raw in enumerate(text.split(sep), start=1):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        role, colon, key = item.partition(":")
        role, key = role.strip(), key.strip()
        where = f"{source} entry {n}" if sep == "," else f"{source} line {n}"
        if not colon or role not in ROLES:
            # Never quote the entry: it may be a key pasted without its role.
            raise KeyConfigError(f"{where} is not 'role:key' with role admin or predict")
        if not key:
            raise KeyConfigError(f"{where} has an empty key")
        pairs.append((role, key))  # role checked against ROLES above
    return pairs


def load_keys(settings: Settings) -> list[tuple[Role, str]]:
    """Every configured (role, key); raises :class:`KeyConfigError` naming what is wrong."""
    pairs = _parse(settings.api_keys.get_secret_value(), "TUNESERVE_API_KEYS", ",")
    if settings.api_keys_file is not None:
        try:
            text = settings.api_keys_file.read_text()
        except OSError as exc:
            raise KeyConfigError(f"TUNESERVE_API_KEYS_FILE {settings.api_keys_file} cannot be read: "
                                 f"{exc.strerror}") from exc
        pairs += _parse(text, "TUNESERVE_API_KEYS_FILE", "\n")
    return pairs


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (a name is resolved)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def bind_refusal(settings: Settings, host: str) -> str | None:
    """Why ``serve`` must not start on ``host`` (None: it may): unusable key settings, or no keys and
    an address other hosts can reach."""
    try:
        keys = load_keys(settings)
    except KeyConfigError as exc:
        return str(exc)
    if keys or settings.allow_anonymous or is_loopback(host):
        return None
    return (f"refusing to serve on {host} without API keys: anyone who reaches the port could upload, train "
            "and activate models. Set TUNESERVE_API_KEYS (or TUNESERVE_API_KEYS_FILE) to 'admin:<key>' pairs, "
            "bind 127.0.0.1, or set TUNESERVE_ALLOW_ANONYMOUS=1 if the network is trusted")


def required_role(method: str, path: str) -> Role | None:
    """The least role a request needs (None: public). predict covers reads and predictions."""
    if path in PUBLIC_PATHS or (method in READ_METHODS and path.startswith(PUBLIC_PREFIXES)):
        return None
    if method == "POST" and CORRECTION_PATH.match(path):
        return "predict"
    if FEEDBACK_PATHS.match(path):
        return "admin"
    if method in READ_METHODS or (method == "POST" and PREDICT_PATH.match(path)):
        return "predict"
    return "admin"


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class ApiKeyMiddleware:
    """401/403 in JSON ``{"detail": ...}``; a passed request carries its role in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, keys: list[tuple[Role, str]]) -> None:
        self.app = app
        # Digests of equal length, compared with every key each time: the answer's timing says nothing
        # about how much of a guess was right, nor which key it was close to.
        self._keys = [(role, _digest(key)) for role, key in keys]

    def role_of(self, token: bytes) -> Role | None:
        digest = _digest(token)
        found: Role | None = None
        for role, key in self._keys:
            if hmac.compare_digest(digest, key) and found != "admin":
                found = role
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # OPTIONS: CORS preflights never carry credentials
            return
        needed = required_role(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        role = self.role_of(token) if token else None
        if role is None:
            detail = ("invalid API key" if token else "missing API key") + \
                ": send the header 'Authorization: Bearer <key>' with a key from TUNESERVE_API_KEYS"
            await _deny(send, 401, detail, [(b"www-authenticate", b'Bearer realm="tuneserve"')])
            return
        if needed == "admin" and role != "admin":
            await _deny(send, 403, f"a {role} key may read and predict only; {scope['method']} {scope['path']} "
                                   "needs an admin key")
            return
        scope.setdefault("state", {})["role"] = role
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return bytes(token.strip())
            return None
    return None


async def _deny(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
