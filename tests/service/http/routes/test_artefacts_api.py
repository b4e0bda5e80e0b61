"""Artefacts over HTTP: a version's files (listing-checked, typed, ETag + 304), dataset thumbnails, the
job report's refusals, and job events as a snapshot followed by deltas. The real app over TestClient, the
real ImageNet model in the registry, the committed ants/bees photos as an uploaded dataset."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from models.registry import Registry
from service.http.reports import apply_delta, job_delta
from tests.dataset_store.datasets_kit import make_zip


@pytest.fixture
def dataset(client: TestClient, hymenoptera: Path, tmp_path: Path) -> dict[str, Any]:
    files = {p.relative_to(hymenoptera).as_posix(): p.read_bytes()
             for p in sorted(hymenoptera.rglob("*.jpg"))}
    archive = make_zip(tmp_path / "ab.zip", files)
    resp = client.post("/v1/datasets", files={"file": ("ab.zip", archive.read_bytes(), "application/zip")})
    assert resp.status_code == 201, resp.text
    full = client.get(f"/v1/datasets/{resp.json()['id']}", params={"files": "true"})
    return full.json()  # type: ignore[no-any-return]


def test_version_files_are_listed_typed_and_cached(client: TestClient, settings: Settings) -> None:
    listing = client.get("/v1/models/imagenet/versions/1/files").json()
    names = {f["name"]: f for f in listing["files"]}
    assert {"model.onnx", "manifest.json"} <= set(names)
    model = client.get(names["model.onnx"]["url"])
    stored = Registry(settings.models_dir).get("imagenet", 1)
    assert model.status_code == 200 and model.content == stored.model_path.read_bytes()
    assert model.headers["content-type"] == "application/octet-stream"
    assert model.headers["content-disposition"].startswith("attachment")
    assert "immutable" in model.headers["cache-control"] and model.headers["etag"]
    again = client.get(names["model.onnx"]["url"], headers={"If-None-Match": model.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    other = client.get(names["model.onnx"]["url"], headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and len(other.content) == names["model.onnx"]["size"]

    manifest = client.get("/v1/models/imagenet/versions/1/files/manifest.json")
    assert manifest.headers["content-type"] == "application/json" and manifest.json()["name"] == "imagenet"
    assert manifest.headers["cache-control"] == "no-cache"  # rewritten when the stage changes
    assert client.get("/v1/models/imagenet").json()["versions"][0]["files_url"] == \
        "/v1/models/imagenet/versions/1/files"


@pytest.mark.parametrize("path", ["../ACTIVE", "..%2FACTIVE", "%2e%2e/%2e%2e/ACTIVE", "ACTIVE", "report.json",
                                  "/etc/passwd", "model.onnx%2F..%2Fmanifest.json"])
def test_files_outside_the_listing_are_refused(client: TestClient, path: str) -> None:
    resp = client.get(f"/v1/models/imagenet/versions/1/files/{path}")
    assert resp.status_code == 404, (path, resp.status_code)
    assert "model.onnx" in resp.json().get("detail", "") or "Not Found" in resp.text


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert "not found" in client.get("/v1/models/ghost/versions/1/files/model.onnx").json()["detail"]
    assert "no version 7" in client.get("/v1/models/imagenet/versions/7/files").json()["detail"]


def test_dataset_images_and_thumbnails(client: TestClient, dataset: dict[str, Any]) -> None:
    entry = dataset["files"][0]
    base = f"/v1/datasets/{dataset['id']}/images"
    original = client.get(f"{base}/{entry['path']}")
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert len(original.content) == entry["size"]
    for name in (entry["path"], entry["original"]):  # stored path or the path inside the archive
        thumb = client.get(f"{base}/{name}", params={"size": 64})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as img:
            assert max(img.size) == 64 and img.format == "JPEG"
            ratio = entry["width"] / entry["height"]
            assert abs(img.width / img.height - ratio) < 0.1
    cached = client.get(f"{base}/{entry['path']}", params={"size": 64},
                        headers={"If-None-Match": thumb.headers["etag"]})
    assert cached.status_code == 304
    assert client.get(f"{base}/{entry['path']}", params={"size": 128}).headers["etag"] != thumb.headers["etag"]
    for bad in ("../index.json", "index.json", "images/../index.json", "nothing.jpg"):
        resp = client.get(f"{base}/{bad}")
        assert resp.status_code == 404, bad
    resp = client.get(f"{base}/{entry['path']}", params={"size": 5})
    assert resp.status_code == 422 and "size" in resp.json()["detail"]


def test_job_report_before_the_job_has_a_version(client: TestClient, dataset: dict[str, Any]) -> None:
    store = client.app.state.job_store  # type: ignore[attr-defined]
    job = store.create("ants", dataset["id"], {"mode": "linear"})
    resp = client.get(f"/v1/jobs/{job.id}/report")
    assert resp.status_code == 409 and "has registered no model version" in resp.json()["detail"]
    view = client.get(f"/v1/jobs/{job.id}").json()
    assert view["links"]["events"] == f"/v1/jobs/{job.id}/events" and "report" not in view["links"]
    assert client.get("/v1/jobs/nope/report").status_code == 404


def test_report_of_a_version_without_one_is_404(client: TestClient, dataset: dict[str, Any]) -> None:
    store = client.app.state.job_store  # type: ignore[attr-defined]
    job = store.create("imagenet", dataset["id"], {"mode": "linear"})
    assert store.claim(job.id, "me", 60, 3) is not None
    assert store.finish(job.id, "me", "succeeded", result={"model": "imagenet", "version": 1, "promoted": True})
    view = client.get(f"/v1/jobs/{job.id}").json()
    assert view["links"]["report"] == f"/v1/jobs/{job.id}/report"
    assert view["links"]["files"] == "/v1/models/imagenet/versions/1/files"
    resp = client.get(view["links"]["report"])
    assert resp.status_code == 404 and "no evaluation report" in resp.json()["detail"]


def read_events(client: TestClient, path: str) -> list[tuple[str, dict[str, Any], int]]:
    events, name = [], "message"
    with client.stream("GET", path) as resp:
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                raw = line.split(":", 1)[1]
                events.append((name, json.loads(raw), len(raw)))
    return events


def test_events_are_a_snapshot_then_deltas(client: TestClient, dataset: dict[str, Any]) -> None:
    store = client.app.state.job_store  # type: ignore[attr-defined]
    job = store.create("ants", dataset["id"], {"mode": "linear", "max_epochs": 8})
    assert store.claim(job.id, "w", 60, 3) is not None

    def work() -> None:  # a worker's writes, spaced wider than the route's 0.5 s poll
        for epoch in range(1, 9):
            time.sleep(0.6)
            metric = {"stage": "probe", "epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1.1 / epoch,
                      "val_accuracy": 0.5 + epoch / 20, "lr": 0.01, "seconds": 1.0}
            store.record_progress(job.id, "w", {"epoch": epoch, "epochs": 8, "fraction": epoch / 8,
                                                "eta_s": 8.0 - epoch}, metric)
        time.sleep(0.6)
        store.finish(job.id, "w", "succeeded", result={"model": "ants", "version": 3})

    writer = threading.Thread(target=work)
    writer.start()
    events = read_events(client, f"/v1/jobs/{job.id}/events")
    writer.join()
    names = [n for n, _, _ in events]
    assert names[0] == "snapshot" and names[-1] == "end" and set(names[1:-1]) == {"delta"}, names
    state = events[0][1]
    for _, data, _ in events[1:-1]:
        assert "spec" not in data and "metrics" not in data  # only what changed; epochs appended
        state = apply_delta(state, data)
    final = events[-1][1]
    assert len(final["metrics"]) == 8
    # The deltas rebuild the job as it was just before the end (everything but the finish itself).
    assert state["metrics"] == final["metrics"] and state["progress"]["epoch"] == 8
    deltas = [size for name, _, size in events if name == "delta"]
    assert max(deltas) < events[0][2] + 400 and max(deltas) < 1000, deltas  # no event re-sends the history


def test_job_delta_sends_only_the_change() -> None:
    before = {"state": "running", "metrics": [{"epoch": 1}], "progress": {"epoch": 1}, "spec": {"lr": 0.1}}
    after = {"state": "running", "metrics": [{"epoch": 1}, {"epoch": 2}], "progress": {"epoch": 2},
             "spec": {"lr": 0.1}}
    delta = job_delta(before, after)
    assert delta == {"metrics_append": [{"epoch": 2}], "progress": {"epoch": 2}}
    assert apply_delta(before, delta) == after
    replaced = {**after, "metrics": [{"epoch": 1, "again": True}]}  # a re-run epoch replaces history
    assert job_delta(after, replaced) == {"metrics": [{"epoch": 1, "again": True}]}
