"""The Open Inference Protocol v2 driven by ``tritonclient.http``, unchanged, against a real server.

Each answer is compared with ``/v1`` on the same photo: the same predictor must give the same top label
and the same probabilities, whether the photo travels encoded (BYTES) or preprocessed (FP32), in binary
form or in JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from core.settings import Settings
from service.http.app import create_app
from service.inference.preprocess import preprocess
from tests.service.live import live_server

KEY = "prd-v2-0123456789abcdef"


def auth() -> dict[str, str]:
    # A fresh dict per call: tritonclient adds its Inference-Header-Content-Length (an int) to the one it gets.
    return {"Authorization": f"Bearer {KEY}"}

PHOTOS = ("n02123045_tabby.JPEG", "n01440764_tench.JPEG")


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    keyed = settings.model_copy(update={"api_keys": SecretStr(f"predict:{KEY}")})
    with live_server(create_app(keyed)) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.removeprefix("http://"), network_timeout=120)
    yield c
    c.close()


def photo(imagenet_samples: Path, name: str) -> bytes:
    return (imagenet_samples / name).read_bytes()


def v1_answer(server: str, image: bytes) -> dict[str, Any]:
    resp = httpx.post(f"{server}/v1/models/imagenet/predict", params={"top_k": 5}, content=image,
                      headers={**auth(), "Content-Type": "image/jpeg"}, timeout=60)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()["results"][0]
    return result


def image_input(images: list[bytes], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    if binary:
        tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:  # JSON has no raw bytes: an encoded photo travels base64-encoded
        tensor.set_data_from_numpy(np.array([base64.b64encode(i) for i in images], dtype=np.object_),
                                   binary_data=False)
    return tensor


def assert_agrees(result: triton.InferResult, row: int, v1: dict[str, Any]) -> None:
    probs = result.as_numpy("probabilities")
    assert probs.dtype == np.float32 and probs.shape[0] > row
    assert int(probs[row].argmax()) == v1["predictions"][0]["index"]
    for p in v1["predictions"]:
        assert abs(float(probs[row, p["index"]]) - p["probability"]) < 1e-5, p
    labels = result.as_numpy("labels")
    top = labels[row, 0].decode() if isinstance(labels[row, 0], bytes) else str(labels[row, 0])
    score, index, label = top.split(":", 2)
    assert (int(index), label) == (v1["predictions"][0]["index"], v1["predictions"][0]["label"])
    assert abs(float(score) - v1["predictions"][0]["probability"]) < 1e-5
    assert bool(result.as_numpy("unknown")[row]) == v1["unknown"]
    if v1["ood_score"] is None:
        assert result.as_numpy("ood_score") is None
    else:
        assert abs(float(result.as_numpy("ood_score")[row]) - v1["ood_score"]) < 1e-4


def test_health_metadata_and_readiness(client: triton.InferenceServerClient, server: str) -> None:
    assert client.is_server_live() and client.is_server_ready()  # public, as /healthz and /readyz
    assert client.is_model_ready("imagenet", headers=auth())
    assert client.is_model_ready("imagenet", "1", headers=auth())
    assert not client.is_model_ready("no-such-model", headers=auth())
    server_meta = client.get_server_metadata(headers=auth())
    assert {"binary_tensor_data", "classification"} <= set(server_meta["extensions"])
    meta = client.get_model_metadata("imagenet", headers=auth())
    assert meta["name"] == "imagenet" and meta["versions"] == ["1"]
    assert {i["datatype"] for i in meta["inputs"]} == {"BYTES", "FP32"}
    pixels = next(i for i in meta["inputs"] if i["datatype"] == "FP32")
    assert pixels["shape"] == [-1, 3, 224, 224]
    assert next(o for o in meta["outputs"] if o["name"] == "probabilities")["shape"] == [-1, 1000]
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("imagenet", "7", headers=auth())
    assert missing.value.status() == "404" and "no version 7" in missing.value.message()
    # The protocol's error shape, and the key check on infer (predict role).
    resp = httpx.post(f"{server}/v2/models/imagenet/infer", json={"inputs": []}, timeout=30)
    assert resp.status_code == 401
    resp = httpx.post(f"{server}/v2/models/imagenet/infer", json={"inputs": []}, headers=auth(), timeout=30)
    assert resp.status_code == 400 and "'inputs' must be a non-empty list" in resp.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_images_agree_with_v1(client: triton.InferenceServerClient, server: str, imagenet_samples: Path,
                                    binary: bool) -> None:
    images = [photo(imagenet_samples, n) for n in PHOTOS]
    outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in
               ("probabilities", "labels", "unknown", "ood_score")]
    meta = client.get_model_metadata("imagenet", headers=auth())
    if "ood_score" not in {o["name"] for o in meta["outputs"]}:
        outputs.pop()
    result = client.infer("imagenet", [image_input(images, binary)], outputs=outputs, headers=auth())
    assert result.get_response()["model_version"] == "1"
    for row, image in enumerate(images):
        assert_agrees(result, row, v1_answer(server, image))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_preprocessed_pixels_agree_with_v1(client: triton.InferenceServerClient, server: str,
                                           imagenet_samples: Path, settings: Settings, binary: bool) -> None:
    from models import Registry

    pre = Registry(settings.models_dir).get("imagenet").manifest.preprocessing
    image = photo(imagenet_samples, PHOTOS[0])
    pixels = preprocess(image, pre, settings.max_image_pixels)[None]
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    # No 'outputs': tritonclient asks for every output in binary form (binary_data_output).
    result = client.infer("imagenet", [tensor], model_version="1", headers=auth())
    assert_agrees(result, 0, v1_answer(server, image))


def test_classification_extension_and_errors(client: triton.InferenceServerClient, server: str,
                                             imagenet_samples: Path) -> None:
    image = photo(imagenet_samples, PHOTOS[0])
    v1 = v1_answer(server, image)
    out = triton.InferRequestedOutput("probabilities", binary_data=False, class_count=3)
    result = client.infer("imagenet", [image_input([image], True)], outputs=[out], headers=auth())
    top3 = [s.decode() if isinstance(s, bytes) else str(s) for s in result.as_numpy("probabilities")[0]]
    assert [t.split(":", 2)[2] for t in top3] == [p["label"] for p in v1["predictions"][:3]]
    bad = triton.InferInput("pixels", [1, 3, 32, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InferenceServerException) as shape:
        client.infer("imagenet", [bad], headers=auth())
    assert shape.value.status() == "400" and "[N, 3, 224, 224]" in shape.value.message()
    with pytest.raises(InferenceServerException) as broken:
        client.infer("imagenet", [image_input([b"not an image"], True)], headers=auth())
    assert broken.value.status().startswith("4") and broken.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [image_input([image], True)], headers=auth())
    assert unknown.value.status() == "404" and "no-such-model" in unknown.value.message()
    with pytest.raises(InferenceServerException) as no_output:
        client.infer("imagenet", [image_input([image], True)], outputs=[triton.InferRequestedOutput("x")],
                     headers=auth())
    assert no_output.value.status() == "400" and "probabilities" in no_output.value.message()
