"""The API on object storage (moto's S3 server on loopback): two apps with separate homes share datasets
and the registry through the bucket only; deletes reach the bucket and the other app's copies; a store
that does not answer is 503 with Retry-After, never 500."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from core.storage import Storage
from service.http.app import create_app


@pytest.fixture
def archive(tmp_path: Path, hymenoptera: Path) -> bytes:
    path = tmp_path / "small.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for label in ("ants", "bees"):
            for file in sorted((hymenoptera / "train" / label).glob("*.jpg"))[:6]:
                zf.write(file, f"small/{label}/{file.name}")
    return path.read_bytes()


def app(home: Path, s3_url: str) -> TestClient:
    return TestClient(create_app(Settings(home=home, storage_url=s3_url, refresh_interval_s=60)))


@pytest.fixture
def pair(tmp_path: Path, s3_url: str) -> Iterator[tuple[TestClient, TestClient]]:
    with app(tmp_path / "a", s3_url) as first, app(tmp_path / "b", s3_url) as second:
        yield first, second


def test_a_dataset_uploaded_through_one_app_is_served_by_another_and_deleted_everywhere(
    pair: tuple[TestClient, TestClient], archive: bytes, s3_url: str, tmp_path: Path
) -> None:
    first, second = pair
    resp = first.post("/v1/datasets", files={"file": ("small.zip", archive, "application/zip")})
    assert resp.status_code == 201, resp.text
    dataset_id = resp.json()["id"]
    storage = Storage(s3_url)
    assert storage.exists(f"datasets/{dataset_id}/index.json")
    assert not (tmp_path / "b" / "datasets").exists()  # nothing on the second app's disk but its cache

    assert second.get(f"/v1/datasets/{dataset_id}").json()["id"] == dataset_id
    assert [d["id"] for d in second.get("/v1/datasets").json()] == [dataset_id]
    files = second.get(f"/v1/datasets/{dataset_id}?files=true").json()["files"]
    image = second.get(f"/v1/datasets/{dataset_id}/images/{files[0]['path']}")
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"  # fetched from the bucket, checked
    assert second.get(f"/v1/datasets/{dataset_id}/images/{files[0]['path']}?size=32").status_code == 200

    assert second.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert storage.keys(f"datasets/{dataset_id}/") == []
    assert first.get(f"/v1/datasets/{dataset_id}").status_code == 404  # and its copy is dropped on the way
    assert not (tmp_path / "a" / "work" / "storage" / "datasets" / dataset_id).exists()
    assert first.get("/v1/datasets").json() == []


def test_storage_that_does_not_answer_is_503_with_retry_after(tmp_path: Path, s3_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with app(tmp_path / "down", s3_url) as client:
        for path in ("/v1/models", "/v1/datasets", "/v1/models/imagenet"):
            resp = client.get(path)
            assert resp.status_code == 503, (path, resp.text)
            assert resp.headers["retry-after"] == "5" and "object storage" in resp.json()["detail"]
        assert client.get("/readyz").status_code == 503
