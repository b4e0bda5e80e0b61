"""API keys with three roles, checked by an ASGI middleware before any route runs.

``admin`` may do everything; ``read`` (dashboards) may read everything (GET/HEAD): models, their files,
datasets and their images, jobs; ``predict`` may predict and read the models' public descriptions
(``GET /v1/models``, ``GET /v1/models/{name}``), nothing else: a key handed to an application cannot
download the training photos or the weights. ``/metrics`` is open unless ``TUNESERVE_METRICS_REQUIRE_KEY``
is set (then read or admin). Keys come from
``TUNESERVE_API_KEYS`` (``role:key,role:key``) and/or ``TUNESERVE_API_KEYS_FILE`` (one ``role:key`` a
line). A request sends ``Authorization: Bearer <key>``; 401 without a valid key, 403 when the key's
role may not do this. With no keys configured every request passes: ``tuneserve serve`` then binds
only loopback addresses (:func:`bind_refusal`). Keys are never logged, and never part of a message.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings
from service.asgi_status import json_error

Role = Literal["admin", "read", "predict"]
ROLES: tuple[Role, ...] = ("admin", "read", "predict")
ADMIN: frozenset[Role] = frozenset({"admin"})
READERS: frozenset[Role] = frozenset({"admin", "read"})
PREDICTORS: frozenset[Role] = frozenset({"admin", "predict"})
ANY_ROLE: frozenset[Role] = frozenset(ROLES)

# Open to anyone: probes, the scrape endpoint, the API description (it holds no data, and Swagger UI
# needs it before the user can press "Authorize"), and the web console's page and static assets (a
# browser cannot send a key when it loads a page; the console's API calls carry the key).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                          "/redoc", "/", "/v2/health/live", "/v2/health/ready"})
PUBLIC_PREFIXES = ("/console/",)
READ_METHODS = frozenset({"GET", "HEAD"})
PREDICT_PATH = re.compile(r"^/v1/models/[^/]+/predict$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
# A model's public description, not its files; over /v2 (Open Inference Protocol) its metadata and readiness.
DESCRIPTION_PATH = re.compile(r"^/v1/models(/[^/]+)?$|^/v2(/models/[^/]+(/versions/[^/]+)?(/ready)?)?$")
METRICS_PATH = "/metrics"
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
            raise KeyConfigError(f"{where} is not 'role:key' with role {', '.join(ROLES)}")
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


def allowed_roles(method: str, path: str, metrics_key: bool = False) -> frozenset[Role] | None:
    """The roles that may make this request (None: public, no key needed)."""
    if path == METRICS_PATH and metrics_key:
        return READERS
    if path in PUBLIC_PATHS or (method in READ_METHODS and path.startswith(PUBLIC_PREFIXES)):
        return None
    if method == "POST" and (PREDICT_PATH.match(path) or CORRECTION_PATH.match(path)):
        return PREDICTORS
    if FEEDBACK_PATHS.match(path):
        return ADMIN
    if method in READ_METHODS:
        return ANY_ROLE if DESCRIPTION_PATH.match(path) else READERS
    return ADMIN


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


class ApiKeyMiddleware:
    """401/403 in JSON ``{"detail": ...}``; a passed request carries its role in ``scope["state"]``."""

    def __init__(self, app: ASGIApp, keys: list[tuple[Role, str]], metrics_key: bool = False) -> None:
        self.app = app
        self.metrics_key = metrics_key
        # Digests of equal length, compared with every key each time: the answer's timing says nothing
        # about how much of a guess was right, nor which key it was close to.
        self._keys = [(role, _digest(key)) for role, key in keys]

    def roles_of(self, token: bytes) -> set[Role]:
        """Every role this key was given (one key may be listed under several roles)."""
        digest = _digest(token)
        return {role for role, key in self._keys if hmac.compare_digest(digest, key)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # OPTIONS: CORS preflights never carry credentials
            return
        allowed = allowed_roles(scope["method"], scope["path"], self.metrics_key)
        if allowed is None:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        roles = self.roles_of(token) if token else set()
        if not roles:
            detail = ("invalid API key" if token else "missing API key") + \
                ": send the header 'Authorization: Bearer <key>' with a key from TUNESERVE_API_KEYS"
            await json_error(send, 401, detail, [(b"www-authenticate", b'Bearer realm="tuneserve"')])
            return
        granted = roles & allowed
        if not granted:
            needs = " or ".join(sorted(allowed))
            await json_error(send, 403, f"a {'/'.join(sorted(roles))} key may not {scope['method']} "
                                        f"{scope['path']}: it needs an {needs} key ({ROLE_MEANING})", [])
            return
        scope.setdefault("state", {})["role"] = "admin" if "admin" in granted else sorted(granted)[0]
        await self.app(scope, receive, send)


ROLE_MEANING = "predict: predictions and model descriptions; read: every GET; admin: everything"


def _bearer(scope: Scope) -> bytes | None:
    value = Headers(scope=scope).get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip().encode("latin-1")
    return None
