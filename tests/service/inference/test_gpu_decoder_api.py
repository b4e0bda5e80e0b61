"""The whole service with TUNESERVE_DECODER=gpu on the CPU: routes -> GpuBatcher -> GpuPipeline (nvImageCodec's
CPU backend, the preprocessing graph and the model on onnxruntime's CPU provider). Same answers as the
Pillow decoder, same errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from service.http.app import create_app
from service.inference.gpu_batcher import GpuBatcher
from tests.service.conftest import wait_ready

URL = "/v1/models/imagenet/predict"


@pytest.fixture
def gpu_client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(home=home, device="cpu", decoder="gpu", max_batch_size=8,
                                        max_delay_ms=5.0))) as client:
        wait_ready(client)
        yield client


def files_of(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_gpu_decoder_answers_like_the_pillow_decoder(gpu_client: TestClient, home: Path,
                                                     imagenet_samples: Path) -> None:
    detail = gpu_client.get("/v1/models/imagenet").json()
    assert detail["decoder"] == "gpu" and detail["variant"] == "fp32"
    loaded = gpu_client.app.state.manager.loaded()["imagenet"]  # type: ignore[attr-defined]
    assert isinstance(loaded.batcher, GpuBatcher)
    decoded_before = loaded.batcher.pipeline.nv_decoded
    paths = sorted(imagenet_samples.glob("*.JPEG"))[:12]
    ours = gpu_client.post(URL + "?top_k=3", files=files_of(paths)).json()["results"]
    single = gpu_client.post(URL + "?top_k=3", content=paths[0].read_bytes(),
                             headers={"content-type": "image/jpeg"}).json()["results"][0]
    assert loaded.batcher.pipeline.nv_decoded - decoded_before == len(paths) + 1
    with TestClient(create_app(Settings(home=home, device="cpu", decoder="pil"))) as pil_client:
        wait_ready(pil_client)
        assert pil_client.get("/v1/models/imagenet").json()["decoder"] == "pil"
        theirs = pil_client.post(URL + "?top_k=3", files=files_of(paths)).json()["results"]
    assert single["predictions"] == ours[0]["predictions"]
    assert single["file"] is None and ours[0]["file"] == paths[0].name  # a raw body has no file name
    for a, b in zip(ours, theirs, strict=True):
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"]
        assert a["predictions"][0]["probability"] == pytest.approx(b["predictions"][0]["probability"], abs=0.01)


def test_gpu_decoder_errors_are_the_pillow_paths(gpu_client: TestClient, imagenet_samples: Path) -> None:
    good = (imagenet_samples / "n02123045_tabby.JPEG").read_bytes()
    cases = [
        (b"junk", 415, "image 2 of 2: not an image"),
        (good[: len(good) // 3], 400, "image 2 of 2: corrupt"),
    ]
    for bad, status, needle in cases:
        resp = gpu_client.post(URL, files=[("file", ("a.jpg", good, "image/jpeg")), ("file", ("b.jpg", bad, "x"))])
        assert resp.status_code == status and needle in resp.json()["detail"], resp.text
    resp = gpu_client.post(URL, content=good[:100], headers={"content-type": "image/jpeg"})
    assert resp.status_code == 400 and resp.json()["detail"].startswith("corrupt")
    assert gpu_client.post(URL, content=good, headers={"content-type": "image/jpeg"}).status_code == 200


def test_a_swap_frees_the_old_versions_pipeline(gpu_client: TestClient, home: Path, imagenet_samples: Path) -> None:
    from tests.service.inference.test_hotswap import add_versions

    manager = gpu_client.app.state.manager  # type: ignore[attr-defined]
    old = manager.loaded()["imagenet"]
    (version,) = add_versions(home, 1)
    assert gpu_client.post(f"/v1/models/imagenet/versions/{version}/activate").status_code == 200
    assert old.closed.wait(30)
    assert old.batcher.pipeline.session is None and old.batcher.pipeline.decoder is None
    new = manager.loaded()["imagenet"]
    assert new.version == version and new.decoder == "gpu"
    resp = gpu_client.post(URL, content=(imagenet_samples / "n02123045_tabby.JPEG").read_bytes(),
                           headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200 and resp.json()["version"] == version
