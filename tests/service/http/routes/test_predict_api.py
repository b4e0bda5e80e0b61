"""Predict over HTTP with the real pretrained model in onnxruntime, and every bad-input case."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from service.http.app import create_app
from tests.photos import imagenet_rows
from tests.service.conftest import wait_ready

TABBY = "n02123045_tabby.JPEG"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["imagenet"]


def test_accuracy_on_real_photos_through_http(client: TestClient, imagenet_samples: Path) -> None:
    rows = imagenet_rows(imagenet_samples)
    top1 = top5 = 0
    for start in range(0, len(rows), 8):  # several images per request, answers in request order
        chunk = rows[start : start + 8]
        files = [
            ("file", (r["filename"], (imagenet_samples / r["filename"]).read_bytes(), "image/jpeg")) for r in chunk
        ]
        resp = client.post("/v1/models/imagenet/predict", files=files)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == "imagenet" and body["version"] == 1 and len(body["results"]) == len(chunk)
        for row, result in zip(chunk, body["results"], strict=True):
            assert result["file"] == row["filename"]  # each answer names the multipart file it is about
            indices = [p["index"] for p in result["predictions"]]
            top1 += indices[0] == int(row["imagenet_index"])
            top5 += int(row["imagenet_index"]) in indices
    assert top1 >= 37 and top5 >= 42, (top1, top5)


def test_tabby_is_a_cat_raw_body_and_probabilities(client: TestClient, imagenet_samples: Path) -> None:
    data = (imagenet_samples / TABBY).read_bytes()
    resp = client.post("/v1/models/imagenet/predict?top_k=3", content=data, headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200
    assert resp.json()["top_k"] == 3 and resp.json()["top_k_clamped"] is False
    assert resp.json()["results"][0]["file"] is None  # a raw body has no file name
    preds = resp.json()["results"][0]["predictions"]
    assert len(preds) == 3
    assert preds[0]["label"] in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    full = client.post("/v1/models/imagenet/predict?top_k=1000", content=data, headers={"content-type": "image/jpeg"})
    assert sum(p["probability"] for p in full.json()["results"][0]["predictions"]) == pytest.approx(1.0, abs=1e-4)
    assert full.json()["top_k_clamped"] is False


def test_top_k_above_the_label_count_is_clamped_and_said(client: TestClient, imagenet_samples: Path) -> None:
    data = (imagenet_samples / TABBY).read_bytes()
    files = [("file", ("tabby.jpg", data, "image/jpeg")), ("file", ("again.jpg", data, "image/jpeg"))]
    resp = client.post("/v1/models/imagenet/predict?top_k=5000", files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["top_k"] == 1000 and body["top_k_clamped"] is True
    assert [r["file"] for r in body["results"]] == ["tabby.jpg", "again.jpg"]
    assert all(len(r["predictions"]) == 1000 for r in body["results"])
    assert len({p["index"] for p in body["results"][0]["predictions"]}) == 1000


def test_model_listing_and_details(client: TestClient) -> None:
    listing = client.get("/v1/models").json()
    assert listing == [{"name": "imagenet", "active_version": 1, "versions": [1]}]
    detail = client.get("/v1/models/imagenet").json()
    assert detail["provider"] == "CPUExecutionProvider" and len(detail["labels"]) == 1000
    assert detail["versions"][0]["status"] == "active" and detail["versions"][0]["source"]["kind"] == "pretrained"


def jpeg_bytes(imagenet_samples: Path) -> bytes:
    return (imagenet_samples / TABBY).read_bytes()


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("text_as_image", 415, "not an image"),
        ("wrong_content_type", 415, "unsupported content type"),
        ("truncated", 400, "corrupt"),
        ("empty_body", 422, "no image"),
        ("multipart_without_file", 422, "no image"),
        ("unknown_model", 404, "not found"),
        ("top_k_zero", 422, "top_k"),
    ],
)
def test_bad_input(client: TestClient, imagenet_samples: Path, case: str, status: int, needle: str) -> None:
    data = jpeg_bytes(imagenet_samples)
    url = "/v1/models/imagenet/predict"
    jpeg = {"content-type": "image/jpeg"}
    requests = {
        "text_as_image": lambda: client.post(url, files={"file": ("a.jpg", b"hello there", "image/jpeg")}),
        "wrong_content_type": lambda: client.post(
            url, content=b'{"a": 1}', headers={"content-type": "application/json"}
        ),
        "truncated": lambda: client.post(url, files={"file": ("a.jpg", data[: len(data) // 3], "image/jpeg")}),
        "empty_body": lambda: client.post(url, content=b"", headers=jpeg),
        "multipart_without_file": lambda: client.post(url, data={"other": "x"}, files={"nofile": ("a", b"x")}),
        "unknown_model": lambda: client.post("/v1/models/nope/predict", content=data, headers=jpeg),
        "top_k_zero": lambda: client.post(url + "?top_k=0", content=data, headers=jpeg),
    }
    resp = requests[case]()
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["detail"]
    ok = client.post(url, content=data, headers={"content-type": "image/jpeg"})  # still serving
    assert ok.status_code == 200


def test_one_bad_image_in_a_multi_image_request_is_named(client: TestClient, imagenet_samples: Path) -> None:
    data = jpeg_bytes(imagenet_samples)
    files = [("file", ("a.jpg", data, "image/jpeg")), ("file", ("b.jpg", b"junk", "image/jpeg"))]
    resp = client.post("/v1/models/imagenet/predict", files=files)
    assert resp.status_code == 415 and "image 2 of 2 (b.jpg)" in resp.json()["detail"]


def test_pixel_and_byte_limits(home: Path, imagenet_samples: Path) -> None:
    settings = Settings(home=home, max_image_pixels=200_000, max_request_bytes=300_000)
    big = io.BytesIO()
    Image.new("RGB", (500, 500), (10, 200, 30)).save(big, "PNG")  # 250,000 px, tiny file
    noise = io.BytesIO()
    Image.effect_noise((800, 800), 100).convert("RGB").save(noise, "BMP")  # ~1.9 MB body
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        url = "/v1/models/imagenet/predict"
        bomb = client.post(url, content=big.getvalue(), headers={"content-type": "image/png"})
        assert bomb.status_code == 413 and "over the limit" in bomb.json()["detail"]
        huge = client.post(url, content=noise.getvalue(), headers={"content-type": "image/bmp"})
        assert huge.status_code == 413 and "bytes" in huge.json()["detail"]
        chunked = client.post(url, content=iter([noise.getvalue()[:200_000], noise.getvalue()[200_000:]]),
                              headers={"content-type": "image/bmp"})
        assert chunked.status_code == 413
        small = client.post(url, content=jpeg_bytes(imagenet_samples), headers={"content-type": "image/jpeg"})
        assert small.status_code == 200


def test_activate_switches_version_and_unknown_version_is_404(client: TestClient, settings: Settings) -> None:
    from models import Registry

    registry = Registry(settings.models_dir)
    v1 = registry.get("imagenet", 1)
    second = registry.register(v1.manifest.model_copy(update={"metrics": {"note": "copy"}}), v1.model_path)
    assert second.version == 2
    resp = client.post("/v1/models/imagenet/versions/2/activate")
    assert resp.status_code == 200 and resp.json()["active_version"] == 2
    # The answer comes once this process serves the new version, and says so.
    assert resp.json()["serving_version"] == 2, resp.json()
    assert resp.json()["swap"] == {"version": 2, "state": "serving",
                                   "detail": "version 2 is active and this API process now serves it"}
    assert client.get("/v1/models/imagenet").json()["serving_version"] == 2
    assert client.post("/v1/models/imagenet/versions/9/activate").status_code == 404
    assert client.post("/v1/models/nope/versions/1/activate").status_code == 404


def test_activate_says_when_the_swap_is_pending_or_failed(home: Path, tmp_path: Path) -> None:
    from models import Registry

    registry = Registry(home / "models")
    v1 = registry.get("imagenet", 1)
    registry.register(v1.manifest, v1.model_path)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    registry.register(v1.manifest, broken)
    with TestClient(create_app(Settings(home=home, refresh_interval_s=0.2, activate_wait_s=0.0))) as client:
        wait_ready(client)
        pending = client.post("/v1/models/imagenet/versions/2/activate").json()
        assert pending["swap"]["state"] == "pending" and pending["serving_version"] == 1, pending
        assert "still serves version 1" in pending["swap"]["detail"]
        deadline = time.monotonic() + 30
        while client.get("/v1/models/imagenet").json()["serving_version"] != 2:
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.05)
        client.app.state.settings.activate_wait_s = 20.0  # type: ignore[attr-defined]
        failed = client.post("/v1/models/imagenet/versions/3/activate").json()
        assert failed["swap"]["state"] == "failed" and failed["serving_version"] == 2, failed
        detail = failed["swap"]["detail"]
        assert "could not be loaded" in detail and "still serving version 2" in detail, detail


def test_readyz_is_503_until_models_load(settings: Settings) -> None:
    from service.inference.manager import ModelManager

    app = create_app(settings)
    original = ModelManager.refresh
    gate = __import__("threading").Event()

    def slow_refresh(self: ModelManager) -> None:
        gate.wait(10)
        original(self)

    ModelManager.refresh = slow_refresh  # type: ignore[method-assign]
    try:
        with TestClient(app) as client:
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            gate.set()
            wait_ready(client)
    finally:
        ModelManager.refresh = original  # type: ignore[method-assign]
