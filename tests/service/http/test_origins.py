"""Cross-site requests over real sockets: a foreign page's POST is refused, the service's own and allowed pages work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from service.http.app import create_app
from service.http.origins import parse_origins
from tests.service.live import live_server

ALLOWED = "https://console.example"
EVIL = "http://evil.example"
ACTIVATE = "/v1/models/imagenet/versions/1/activate"
PHOTO = Path(__file__).parents[2] / "data" / "imagenet" / "n02123045_tabby.JPEG"


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    app = create_app(settings.model_copy(update={"allowed_origins": f"{ALLOWED}/, http://localhost:9"}))
    with live_server(app) as base:
        yield base


def test_foreign_page_cannot_change_the_service(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        # The probe: a "simple" POST (no preflight) from another site that swapped the model.
        simple = http.post(ACTIVATE, content=b"x", headers={"Origin": EVIL, "Content-Type": "text/plain"})
        assert simple.status_code == 403 and "TUNESERVE_ALLOWED_ORIGINS" in simple.json()["detail"]
        assert "access-control-allow-origin" not in simple.headers
        fetch_meta = http.post(ACTIVATE, headers={"Sec-Fetch-Site": "cross-site"})
        assert fetch_meta.status_code == 403
        for origin in ("null", f"{url}.evil.example", url.replace("127.0.0.1", "127.0.0.2")):
            assert http.post(ACTIVATE, headers={"Origin": origin}).status_code == 403, origin
        assert http.delete("/v1/datasets/x", headers={"Origin": EVIL}).status_code == 403
        # Reads stay possible, but without CORS headers the foreign page cannot see the answer.
        read = http.get("/v1/models", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers
        preflight = http.options(ACTIVATE, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers


def test_same_origin_and_allowed_origins_work(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        # The web console: its page was served by this host, so the browser's Origin is this URL.
        same = http.post(ACTIVATE, headers={"Origin": url, "Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 200 and same.json()["swap"]["state"] == "serving"
        predicted = http.post("/v1/models/imagenet/predict", content=PHOTO.read_bytes(),
                              headers={"Origin": url, "Content-Type": "image/jpeg"})
        assert predicted.status_code == 200
        # A page of an allowed origin: preflight answered, the POST goes through with CORS headers.
        preflight = http.options(ACTIVATE, headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        allowed = http.post(ACTIVATE, headers={"Origin": ALLOWED, "Sec-Fetch-Site": "cross-site"})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
        # Clients that are not browsers send no Origin at all.
        assert http.post(ACTIVATE).status_code == 200


def test_refusals_reach_an_allowed_page(settings: Settings) -> None:
    """With keys on, an allowed page's 401 carries CORS headers, so the page can tell its user why."""
    keyed = settings.model_copy(update={"allowed_origins": ALLOWED, "api_keys": SecretStr("admin:k-123456789")})
    with live_server(create_app(keyed)) as base, httpx.Client(base_url=base, timeout=30) as http:
        denied = http.post(ACTIVATE, headers={"Origin": ALLOWED})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ALLOWED
        assert http.post(ACTIVATE, headers={"Origin": EVIL, "Authorization": "Bearer k-123456789"}).status_code == 403


def test_origin_setting_is_checked() -> None:
    assert parse_origins(" https://A.example/ ,http://b:8080") == ["https://a.example", "http://b:8080"]
    with pytest.raises(ValueError, match="TUNESERVE_ALLOWED_ORIGINS"):
        parse_origins("console.example")
