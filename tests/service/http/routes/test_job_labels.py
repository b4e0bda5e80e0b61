"""A model keeps its meaning: ``POST /v1/jobs`` against models that already serve labels.

The real app over TestClient on a copy of the bootstrapped home (the real ``imagenet`` model), real
datasets uploaded through the API, real Redis (a private queue no worker reads).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from models import Manifest, Registry
from service.http.app import create_app
from tests.dataset_store.datasets_kit import class_files, make_zip
from tests.integration.procs import private_broker
from tests.models.test_registry import tiny_onnx


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, bootstrapped_home: Path) -> Iterator[TestClient]:
    env = private_broker()
    home = tmp_path_factory.mktemp("labels") / "home"
    shutil.copytree(bootstrapped_home, home)
    # "shop" serves three labels in a non-alphabetical order (the order its callers rely on).
    Registry(home / "models").register(Manifest(name="shop", labels=["shoes", "hat", "pants"], backbone="tiny"),
                                       tiny_onnx(home / "tiny.onnx", 1.0), activate=True)
    app = create_app(Settings(home=home, broker_url=env["TUNESERVE_BROKER_URL"],
                              task_queue=env["TUNESERVE_TASK_QUEUE"]))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    conn = redis.Redis.from_url(env["TUNESERVE_BROKER_URL"])
    queue = env["TUNESERVE_TASK_QUEUE"]
    conn.delete(queue, *conn.keys(f"*{queue}*"))


def upload(client: TestClient, tmp_path: Path, counts: dict[str, int], seed: int) -> str:
    archive = make_zip(tmp_path / f"d{seed}.zip", class_files(counts, seed=seed))
    resp = client.post("/v1/datasets", files={"file": ("d.zip", archive.read_bytes(), "application/zip")})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def test_another_label_set_on_an_existing_model_is_409_naming_the_fix(client: TestClient, tmp_path: Path) -> None:
    other = upload(client, tmp_path, {"ants": 5, "bees": 5}, seed=11)
    resp = client.post("/v1/jobs", json={"dataset_id": other, "model": "shop"})
    assert resp.status_code == 409, resp.text
    detail = resp.json()["detail"]
    assert "new model name" in detail and '"replace_labels": true' in detail and "shoes" in detail
    replaced = client.post("/v1/jobs", json={"dataset_id": other, "model": "shop", "replace_labels": True})
    assert replaced.status_code == 202, replaced.text
    assert client.get(f"/v1/jobs/{replaced.json()['id']}").json()["spec"]["replace_labels"] is True
    assert client.post("/v1/jobs", json={"dataset_id": other, "model": "insects"}).status_code == 202


def test_same_labels_in_another_order_are_accepted(client: TestClient, tmp_path: Path) -> None:
    same = upload(client, tmp_path, {"hat": 5, "pants": 5, "shoes": 5}, seed=12)  # the store sorts classes
    resp = client.post("/v1/jobs", json={"dataset_id": same, "model": "shop"})
    assert resp.status_code == 202, resp.text


def test_imagenet_cannot_be_replaced_by_a_job_but_is_still_activated_by_hand(client: TestClient,
                                                                            tmp_path: Path) -> None:
    data = upload(client, tmp_path, {"hat": 5, "pants": 5, "shoes": 5}, seed=13)
    for body in ({}, {"replace_labels": True}):
        resp = client.post("/v1/jobs", json={"dataset_id": data, "model": "imagenet", **body})
        assert resp.status_code == 409, resp.text
        assert "cannot replace" in resp.json()["detail"] and "new model name" in resp.json()["detail"]
    activated = client.post("/v1/models/imagenet/versions/1/activate")
    assert activated.status_code == 200, activated.text
    assert client.get("/v1/models/imagenet").json()["active_version"] == 1
