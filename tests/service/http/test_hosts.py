"""DNS rebinding over real sockets: a request naming a host this service is not (and a page of that host as
its Origin) is refused before any route runs, writes and reads alike; the service's own names work."""

from __future__ import annotations

import io
import socket
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from core.settings import Settings
from service.http.app import create_app
from service.http.origins import HostList, allowed_hosts
from tests.service.live import live_server

EVIL = "evil.example:8202"


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    with live_server(create_app(settings.model_copy(update={"allowed_hosts": ""}))) as base:  # the default
        yield base


def archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("a", "b"):
            for i in range(5):
                img = io.BytesIO()
                Image.new("RGB", (40, 40), (i * 40, 0 if cls == "a" else 200, 0)).save(img, format="PNG")
                zf.writestr(f"{cls}/{i}.png", img.getvalue())
    return buf.getvalue()


def test_a_rebound_host_can_neither_change_nor_read(url: str) -> None:
    rebound = {"Host": EVIL, "Origin": f"http://{EVIL}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        attempts = [
            http.post("/v1/datasets", files={"file": ("d.zip", archive(), "application/zip")}, headers=rebound),
            http.post("/v1/jobs", json={"dataset_id": "x", "model": "m"}, headers=rebound),
            http.post("/v1/jobs/some-job/cancel", headers=rebound),
            http.delete("/v1/datasets/some-dataset", headers=rebound),
            http.post("/v1/models/imagenet/versions/1/activate", headers=rebound),
            http.get("/v1/models", headers=rebound),
            http.get("/v1/datasets", headers=rebound),
            http.get("/v1/jobs", headers={"Host": EVIL}),
            http.get("/v1/models/imagenet/versions/1/files/model.onnx", headers={"Host": EVIL}),
            http.get("/metrics", headers={"Host": EVIL}),
        ]
        for resp in attempts:
            assert resp.status_code == 400, (resp.request.method, resp.request.url, resp.text)
            assert "TUNESERVE_ALLOWED_HOSTS" in resp.json()["detail"] and EVIL in resp.json()["detail"]
        assert http.get("/v1/datasets").json() == []  # nothing was uploaded
        # The probes say nothing and an orchestrator's probe names the pod's address: they stay open.
        assert http.get("/healthz", headers={"Host": EVIL}).status_code == 200
        # The service's own names work, pages served from them included.
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert http.get("/v1/models", headers={"Host": host}).status_code == 200, host
        own = http.post("/v1/models/imagenet/versions/1/activate",
                        headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
        assert own.status_code == 200, own.text


def test_origin_is_compared_to_the_allowed_names_not_to_host(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with httpx.Client(base_url=url, timeout=30) as http:
        # Another local page (a dev server on another port) is another site.
        other = http.post("/v1/models/imagenet/versions/1/activate", headers={"Origin": f"http://localhost:{port + 1}"})
        assert other.status_code == 403 and "TUNESERVE_ALLOWED_ORIGINS" in other.json()["detail"]
        # An Origin that names a foreign host is refused even when Host is ours.
        foreign = http.post("/v1/models/imagenet/versions/1/activate", headers={"Origin": f"http://evil.example:{port}"})
        assert foreign.status_code == 403


def test_the_default_names_and_the_setting(settings: Settings) -> None:
    loopback = allowed_hosts(settings.model_copy(update={"allowed_hosts": "", "host": "127.0.0.1"}))
    assert loopback == ["localhost", "127.0.0.1", "[::1]"]
    bound = allowed_hosts(settings.model_copy(update={"allowed_hosts": "", "host": "10.1.2.3"}))
    assert bound[-1] == "10.1.2.3"
    wildcard = allowed_hosts(settings.model_copy(update={"allowed_hosts": "", "host": "0.0.0.0"}))
    assert socket.gethostname().lower() in wildcard and "localhost" in wildcard and "0.0.0.0" not in wildcard
    named = settings.model_copy(update={"allowed_hosts": "API.example, *.corp.example, ai:9000"})
    hosts = HostList(allowed_hosts(named))
    assert hosts.allows("api.example", 443) and hosts.allows("x.corp.example", None)
    assert hosts.allows("ai", 9000) and not hosts.allows("ai", 9001) and not hosts.allows("localhost", 80)
    assert not hosts.allows("corp.example.evil", None)
