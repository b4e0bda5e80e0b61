from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.http.app import create_app


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service never became ready")


@pytest.fixture(scope="session", autouse=True)
def test_client_host() -> Iterator[None]:
    """Starlette's TestClient sends ``Host: testserver``: allowed here beside the default names (the
    Host tests set ``allowed_hosts`` themselves). Session-wide, so module-scoped apps see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNESERVE_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
        yield


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c
