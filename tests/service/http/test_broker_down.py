"""With the broker unreachable: /readyz names it, and a job is refused with 503 leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from core.settings import Settings
from service.http.app import create_app
from tests.integration.procs import free_port, zip_folder
from tests.service.conftest import wait_ready


def test_job_refused_while_broker_down_leaves_no_job(settings: Settings, hymenoptera: Path,
                                                     tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    archive = zip_folder(hymenoptera / "val", tmp_path / "val.zip", "insects")  # class folders on top
    with TestClient(create_app(settings.model_copy(update={"broker_url": dead}))) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert ready.json()["checks"] == {"models": ready.json()["checks"]["models"], "broker": "down"}
        assert "broker (Redis at 127.0.0.1:" in ready.json()["detail"]

        with archive.open("rb") as fh:
            dataset = client.post("/v1/datasets", files={"file": ("val.zip", fh, "application/zip")})
        assert dataset.status_code == 201, dataset.text
        resp = client.post("/v1/jobs", json={"dataset_id": dataset.json()["id"], "model": "bees", "mode": "linear"})
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
        assert "job queue unavailable (nothing was created; retry)" in resp.json()["detail"]
        assert client.get("/v1/jobs").json() == []  # no failed job left behind
        # ... so the dataset is not held by a phantom job either
        assert client.delete(f"/v1/datasets/{dataset.json()['id']}").status_code == 204


def test_readiness_names_each_part_when_up(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:  # no broker configured: predictions only
        wait_ready(client)
        body = client.get("/readyz").json()
        assert body["checks"] == {"models": "ready", "broker": "none"} and body["models"] == ["imagenet"]
