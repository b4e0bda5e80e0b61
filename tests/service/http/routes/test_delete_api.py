"""Deleting versions, models, datasets and jobs over HTTP: every refusal (409) and what a delete removes.

A real registry (the bootstrapped ImageNet model, registered again as ``pets``), the real app with its
model manager and onnxruntime sessions, and the real SQL job store; jobs are put into the states a
worker would put them in through the store's own calls.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.settings import Settings
from jobs import JobStore
from models import Registry
from service.http.app import create_app
from tests.dataset_store.datasets_kit import class_files
from tests.service.conftest import wait_ready

TABBY = "n02123045_tabby.JPEG"


def register_pets(registry: Registry, count: int) -> list[int]:
    """``count`` versions of a model ``pets``: the ImageNet ONNX file and its extras under another name."""
    v1 = registry.get("imagenet", 1)
    manifest = v1.manifest.model_copy(update={"name": "pets", "source": {"kind": "trained"}})
    extras = {f: v1.path / f for f in [*v1.manifest.files, *(v.file for v in v1.manifest.variants.values())]}
    return [registry.register(manifest, v1.model_path, extras).version for _ in range(count)]


@pytest.fixture
def registry(settings: Settings) -> Registry:
    registry = Registry(settings.models_dir)
    register_pets(registry, 2)
    registry.activate("pets", 2)
    return registry


@pytest.fixture
def client(settings: Settings, registry: Registry) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def jobs_of(client: TestClient) -> JobStore:
    return client.app.state.job_store  # type: ignore[attr-defined,no-any-return]


def running_job(store: JobStore, model: str, base: str, dataset_id: str = "ds") -> str:
    job = store.create(model, dataset_id, {"base": base, "max_epochs": 1})
    assert store.claim(job.id, "worker-1", lease_s=60, max_attempts=3) is not None
    return job.id


def predict(client: TestClient, name: str, photo: bytes) -> int:
    return client.post(f"/v1/models/{name}/predict", content=photo,
                       headers={"content-type": "image/jpeg"}).status_code


def test_version_delete_refused_while_active_or_a_base(client: TestClient, registry: Registry) -> None:
    store = jobs_of(client)
    folder = registry.get("pets", 1).path

    active = client.delete("/v1/models/pets/versions/2")
    assert active.status_code == 409 and "active" in active.json()["detail"]
    assert registry.get("pets", 2).model_path.is_file()

    queued = store.create("other", "ds", {"base": "registry:pets:1"})
    resp = client.delete("/v1/models/pets/versions/1")
    assert resp.status_code == 409 and queued.id in resp.json()["detail"] and "cancel" in resp.json()["detail"]
    store.cancel(queued.id)

    running = running_job(store, "other", "registry:pets:1")
    resp = client.delete("/v1/models/pets/versions/1")
    assert resp.status_code == 409 and running in resp.json()["detail"]
    assert folder.is_dir()
    store.finish(running, "worker-1", "succeeded")

    assert client.delete("/v1/models/pets/versions/1").status_code == 204
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith((".trash", ".tmp"))] == []
    assert [v["version"] for v in client.get("/v1/models/pets").json()["versions"]] == [2]
    assert client.delete("/v1/models/pets/versions/1").status_code == 404
    assert client.get("/v1/models/pets/versions/1/files/model.onnx").status_code == 404


def test_deleted_version_numbers_are_not_given_out_again(client: TestClient, registry: Registry) -> None:
    (v3,) = register_pets(registry, 1)
    assert client.delete(f"/v1/models/pets/versions/{v3}").status_code == 204
    assert register_pets(registry, 1) == [v3 + 1]  # a job result naming v3 never meets another model


def test_model_delete_waits_for_jobs_and_unloads(client: TestClient, registry: Registry, imagenet_samples: Path,
                                                 settings: Settings) -> None:
    store = jobs_of(client)
    photo = (imagenet_samples / TABBY).read_bytes()
    assert predict(client, "pets", photo) == 200
    loaded = client.app.state.manager.loaded()["pets"]  # type: ignore[attr-defined]

    targeting = store.create("pets", "ds", {"base": "efficientnet_lite0"})  # will publish into pets
    resp = client.delete("/v1/models/pets")
    assert resp.status_code == 409 and targeting.id in resp.json()["detail"]
    store.cancel(targeting.id)
    based = running_job(store, "other", "registry:pets:2")  # builds on pets
    assert client.delete("/v1/models/pets").status_code == 409
    store.finish(based, "worker-1", "failed", error="boom")
    assert predict(client, "pets", photo) == 200  # refusals changed nothing

    resp = client.delete("/v1/models/pets")
    assert resp.status_code == 200 and resp.json() == {"model": "pets", "deleted_versions": [1, 2]}
    assert not (settings.models_dir / "pets").exists()
    assert [p.name for p in settings.models_dir.iterdir() if p.name.startswith(".trash")] == []
    assert predict(client, "pets", photo) == 404  # gone from the serving process at once
    assert client.get("/v1/models/pets").status_code == 404
    assert "pets" not in [m["name"] for m in client.get("/v1/models").json()]
    assert loaded.closed.wait(10)  # its session was released
    assert client.delete("/v1/models/pets").status_code == 404


def test_bootstrapped_model_needs_the_flag(client: TestClient, settings: Settings, imagenet_samples: Path) -> None:
    photo = (imagenet_samples / TABBY).read_bytes()
    resp = client.delete("/v1/models/imagenet")
    assert resp.status_code == 409 and "force_bootstrapped=true" in resp.json()["detail"]
    assert predict(client, "imagenet", photo) == 200
    assert client.delete("/v1/models/imagenet?force_bootstrapped=true").status_code == 200
    assert not (settings.models_dir / "imagenet").exists()
    assert predict(client, "imagenet", photo) == 404
    assert predict(client, "pets", photo) == 200  # other models untouched


def test_a_replica_that_missed_the_notice_drops_the_model_on_its_refresh(
    client: TestClient, settings: Settings, imagenet_samples: Path
) -> None:
    """No Redis here: the other replica (same registry, its own process state) learns by polling."""
    photo = (imagenet_samples / TABBY).read_bytes()
    with TestClient(create_app(settings)) as replica:
        wait_ready(replica)
        assert predict(replica, "pets", photo) == 200
        assert client.delete("/v1/models/pets").status_code == 200
        replica.app.state.manager.refresh()  # type: ignore[attr-defined]  # what its poll runs
        assert predict(replica, "pets", photo) == 404
        assert "pets" not in replica.app.state.manager.loaded()  # type: ignore[attr-defined]


def test_dataset_delete_refused_while_a_job_uses_it(client: TestClient) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in class_files({"a": 5, "b": 5}, seed=7).items():
            zf.writestr(name, data)
    created = client.post("/v1/datasets", files={"file": ("d.zip", buf.getvalue(), "application/zip")})
    assert created.status_code == 201
    ds_id = created.json()["id"]
    store = jobs_of(client)

    job = store.create("pets", ds_id, {"base": "efficientnet_lite0"})
    resp = client.delete(f"/v1/datasets/{ds_id}")
    assert resp.status_code == 409 and "used by a job" in resp.json()["detail"]
    assert store.claim(job.id, "worker-1", lease_s=60, max_attempts=3) is not None
    assert client.delete(f"/v1/datasets/{ds_id}").status_code == 409
    assert client.get(f"/v1/datasets/{ds_id}").status_code == 200
    store.finish(job.id, "worker-1", "succeeded")
    assert client.delete(f"/v1/datasets/{ds_id}").status_code == 204
    assert client.get(f"/v1/datasets/{ds_id}").status_code == 404


def test_job_delete_only_when_finished(client: TestClient, settings: Settings) -> None:
    store = jobs_of(client)
    queued = store.create("pets", "ds", {"base": "efficientnet_lite0"})
    resp = client.delete(f"/v1/jobs/{queued.id}")
    assert resp.status_code == 409 and "cancel" in resp.json()["detail"]
    running = running_job(store, "pets", "efficientnet_lite0")
    checkpoints = settings.job_checkpoint_dir(running)
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"x")
    assert client.delete(f"/v1/jobs/{running}").status_code == 409
    assert client.get(f"/v1/jobs/{running}").status_code == 200

    store.finish(running, "worker-1", "succeeded", result={"model": "pets", "version": 2})
    assert client.delete(f"/v1/jobs/{running}").status_code == 204
    assert client.get(f"/v1/jobs/{running}").status_code == 404
    assert not checkpoints.exists()
    assert client.delete(f"/v1/jobs/{running}").status_code == 404
    assert client.get("/v1/models/pets").json()["active_version"] == 2  # its version stays


def test_deletes_need_an_admin_key(settings: Settings, registry: Registry) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("admin:adm-key,predict:pred-key,read:read-key")})
    with TestClient(create_app(keyed)) as c:
        wait_ready(c)
        for path in ("/v1/models/pets/versions/1", "/v1/models/pets", "/v1/jobs/x", "/v1/datasets/x"):
            for key in ("pred-key", "read-key"):
                resp = c.delete(path, headers={"authorization": f"Bearer {key}"})
                assert resp.status_code == 403 and "admin" in resp.json()["detail"]
        ok = c.delete("/v1/models/pets/versions/1", headers={"authorization": "Bearer adm-key"})
        assert ok.status_code == 204
