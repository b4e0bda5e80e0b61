"""Many models per process: the loaded-model budget unloads the least recently used version (after its last
in-flight request) and loads it again on demand; readiness stays true for cold models; preloaded models stay;
a version other than the active one loads on demand over /v2. Real tiny ONNX models, a real registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from core.settings import Settings
from models import Registry
from models.manifest import Manifest, Preprocessing
from service.http.app import create_app
from service.inference.manager import ModelManager
from service.inference.predictor import PredictOptions
from tests.service.conftest import wait_ready
from tests.service.inference.test_selective_answers import LABELS, RED, register, tiny_model


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    home = tmp_path / "home"
    home.mkdir()
    for i in range(4):
        register(home, f"m{i}", with_ood=False)
    settings = Settings(home=home, refresh_interval_s=0.2, device="cpu", max_loaded_models=2, preload_models="m0")
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def manager_of(client: TestClient) -> ModelManager:
    manager: ModelManager = client.app.state.manager  # type: ignore[attr-defined]
    return manager


def top(client: TestClient, model: str) -> list[object]:
    resp = client.post(f"/v1/models/{model}/predict", files=[("file", ("red.png", RED, "image/png"))])
    assert resp.status_code == 200, resp.text
    return [(p["label"], p["probability"]) for p in resp.json()["results"][0]["predictions"]]


def ready_state(client: TestClient, path: str) -> tuple[int, str]:
    resp = client.get(f"/v2/models/{path}/ready")
    return resp.status_code, resp.json().get("state") or resp.json()["error"]


def test_least_recently_used_models_are_unloaded_and_come_back(client: TestClient) -> None:
    manager = manager_of(client)
    unloads = REGISTRY.get_sample_value("tuneserve_model_unloads_total") or 0.0
    assert set(manager.loaded()) == {"m0"}  # only the preloaded model at start, and the process is ready
    assert client.get("/readyz").status_code == 200
    assert ready_state(client, "m1") == (200, "unloaded")  # loadable on demand: ready, not "loading"
    first = top(client, "m1")
    assert set(manager.loaded()) == {"m0", "m1"} and ready_state(client, "m1") == (200, "loaded")
    top(client, "m2")  # over the budget: m1 (least recently used, not preloaded) goes
    assert set(manager.loaded()) == {"m0", "m2"}
    assert ready_state(client, "m1") == (200, "unloaded")
    assert client.get("/readyz").status_code == 200 and client.get("/v2/health/ready").status_code == 200
    assert top(client, "m1") == first  # loaded again on demand, same answer
    assert set(manager.loaded()) == {"m0", "m1"} and manager.loaded_count() == 2
    assert REGISTRY.get_sample_value("tuneserve_model_unloads_total") == unloads + 2


def test_a_model_in_use_is_closed_only_after_its_last_request(client: TestClient) -> None:
    manager = manager_of(client)
    top(client, "m1")
    held = manager.get("m1")  # an in-flight request holds m1
    top(client, "m2")  # the budget unloads m1 from the table...
    assert "m1" not in manager.loaded()
    assert not held.closed.wait(0.5)  # ...but does not close it under the request
    answer = asyncio.run(held.predictor.predict([RED], PredictOptions(top_k=1)))
    assert answer.results[0].predictions[0][0] == "red"
    held.release()
    assert held.closed.wait(10)


def test_other_versions_load_on_demand_over_v2(client: TestClient, tmp_path: Path) -> None:
    manager = manager_of(client)
    home = manager.settings.home
    manifest = Manifest(name="m0", labels=LABELS, backbone="tiny", preprocessing=Preprocessing(input_size=8,
                                                                                               resize=8, crop=8))
    Registry(home / "models").register(manifest, tiny_model(tmp_path / "v2.onnx", False))  # not activated
    assert ready_state(client, "m0/versions/2") == (200, "unloaded")
    body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [5.0] * 64 + [0.0] * 128}],
            "outputs": [{"name": "labels", "parameters": {"classification": 1}}]}
    resp = client.post("/v2/models/m0/versions/2/infer", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == "2" and resp.json()["outputs"][0]["data"][0].endswith(":red")
    assert ready_state(client, "m0/versions/2") == (200, "loaded")
    assert manager.loaded()["m0"].version == 1  # the active version still serves /v1
    assert client.post("/v2/models/m0/versions/9/infer", json=body).status_code == 404
    resp = client.post("/v2/models/m0/versions/x/infer", json=body)
    assert resp.status_code == 422 and "^[0-9]+$" in resp.json()["error"]  # the schema's pattern for a version
