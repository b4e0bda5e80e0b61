"""``predict?explain=true``: class activation heatmaps from the real ImageNet model on the committed photos.

The peak must fall inside objects whose boxes were marked by hand (tests/data/imagenet/boxes.json),
a mirrored photo must give a mirrored map, the map must be exact CAM (its mean plus the bias is the
logit), and a version exported without the feature-map output answers 409.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from core.settings import Settings
from models import Registry
from service.http.app import create_app
from service.inference.explain import crop_box
from tests.service.conftest import wait_ready

BOXES = json.loads((Path(__file__).parents[2] / "data" / "imagenet" / "boxes.json").read_text())["boxes"]


def explain(client: TestClient, data: bytes, model: str = "imagenet") -> dict[str, Any]:
    resp = client.post(f"/v1/models/{model}/predict?explain=true", content=data,
                       headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    return resp.json()["results"][0]  # type: ignore[no-any-return]


def alpha(explanation: dict[str, Any]) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert explanation["heatmap"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"][len(prefix):]))) as img:
        assert img.format == "PNG" and img.mode == "RGBA"
        return np.asarray(img)[:, :, 3].astype(np.float32)


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    return out.getvalue()


def test_peak_falls_inside_the_hand_marked_object(client: TestClient, imagenet_samples: Path) -> None:
    inside = {}
    for name, (left, top, right, bottom) in BOXES.items():
        result = explain(client, (imagenet_samples / name).read_bytes())
        why = result["explanation"]
        assert why["label"] == result["predictions"][0]["label"] and why["size"] == [224, 224]
        assert alpha(why).shape == (224, 224)
        x, y = why["peak"]
        inside[name] = left <= x <= right and top <= y <= bottom
    assert sum(inside.values()) >= len(BOXES) - 1, inside  # most, allowing one miss


def test_crop_box_maps_the_crop_back_to_the_photo(client: TestClient, imagenet_samples: Path) -> None:
    why = explain(client, (imagenet_samples / "n03063599_coffee_mug.JPEG").read_bytes())["explanation"]
    # 900x687 -> shorter side 256 (335x256), centre 224 crop at (56, 16): x 56/335*900 = 150.4 ...
    assert why["crop_box"] == pytest.approx([150.45, 42.93, 752.24, 643.95], abs=0.6)
    assert why["grid"] == [7, 7]
    tall = crop_box(300, 500, client.app.state.manager.get("imagenet").preprocessing)  # type: ignore[attr-defined]
    assert tall[0] == pytest.approx(300 * 16 / 256, abs=0.6) and tall[2] - tall[0] == pytest.approx(262.5, abs=0.6)


def test_mirrored_photo_gives_a_mirrored_heatmap(client: TestClient, imagenet_samples: Path) -> None:
    checked = 0
    for name in ("n01443537_goldfish.JPEG", "n02056570_king_penguin.JPEG", "n03063599_coffee_mug.JPEG"):
        with Image.open(imagenet_samples / name) as img:
            photo = img.convert("RGB")
        plain = explain(client, jpeg(photo))
        flipped = explain(client, jpeg(ImageOps.mirror(photo)))
        if plain["explanation"]["index"] != flipped["explanation"]["index"]:
            continue  # a different top class draws a different map
        a, b = alpha(plain["explanation"]), alpha(flipped["explanation"])
        mirrored = np.corrcoef(a[:, ::-1].ravel(), b.ravel())[0, 1]
        unmirrored = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert mirrored > 0.8 and mirrored > unmirrored, (name, mirrored, unmirrored)
        # The heat's centre of mass moves to the mirrored column (a peak can jump between two near-equal maxima).
        columns = np.arange(224) + 0.5
        centre_a, centre_b = (a.sum(0) @ columns) / a.sum(), (b.sum(0) @ columns) / b.sum()
        assert abs(centre_b - (224 - centre_a)) < 12, (name, centre_a, centre_b)
        checked += 1
    assert checked >= 2


def test_several_images_each_get_their_own_map(client: TestClient, imagenet_samples: Path) -> None:
    names = ["n01443537_goldfish.JPEG", "n04398044_teapot.JPEG"]
    files = [("file", (n, (imagenet_samples / n).read_bytes(), "image/jpeg")) for n in names]
    body = client.post("/v1/models/imagenet/predict?explain=true&top_k=2", files=files).json()
    assert [r["file"] for r in body["results"]] == names
    assert [r["explanation"]["label"] for r in body["results"]] == ["goldfish", "teapot"]
    plain = client.post("/v1/models/imagenet/predict?top_k=2", files=files).json()
    assert all("explanation" not in r for r in plain["results"])  # off by default
    for with_map, without in zip(body["results"], plain["results"], strict=True):
        assert with_map["predictions"][0]["label"] == without["predictions"][0]["label"]
        assert with_map["predictions"][0]["probability"] == pytest.approx(without["predictions"][0]["probability"],
                                                                          abs=1e-4)


def test_version_without_the_output_answers_409(settings: Settings, imagenet_samples: Path) -> None:
    registry = Registry(settings.models_dir)
    info = registry.get("imagenet", 1)
    old = info.manifest.model_copy(update={"cam": None, "files": [], "version": 0})
    registry.register(old, info.model_path, activate=True)  # as versions exported before heatmaps were
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        data = (imagenet_samples / "n01443537_goldfish.JPEG").read_bytes()
        resp = client.post("/v1/models/imagenet/predict?explain=true", content=data,
                           headers={"content-type": "image/jpeg"})
        assert resp.status_code == 409 and "without the feature-map output" in resp.json()["detail"]
        assert "version 2" in resp.json()["detail"]
        plain = client.post("/v1/models/imagenet/predict", content=data, headers={"content-type": "image/jpeg"})
        assert plain.status_code == 200 and plain.json()["version"] == 2


def test_int8_variant_explains_too(settings: Settings, imagenet_samples: Path, hymenoptera: Path,
                                   tmp_path: Path) -> None:
    """The quantised file keeps the feature-map output, so a CPU serving int8 can explain."""
    from service.inference.preprocess import preprocess
    from trainer.publish.variants import build_variants

    registry = Registry(settings.models_dir)
    info = registry.get("imagenet", 1)
    pre = info.manifest.preprocessing
    calib = np.stack([preprocess(f.read_bytes(), pre, 10**8) for f in sorted(hymenoptera.rglob("*.jpg"))[:16]])
    photos = sorted(imagenet_samples.glob("*.JPEG"))[:16]
    val = np.stack([preprocess(f.read_bytes(), pre, 10**8) for f in photos])
    out = tmp_path / "variants"
    out.mkdir()
    built = build_variants(info.model_path, out, calib, val, None, kinds=("int8", "fp16"))
    assert set(built) == {"int8", "fp16"}
    extra = {v.file: out / v.file for v in built.values()}
    extra["cam.npz"] = info.path / "cam.npz"
    registry.register(info.manifest.model_copy(update={"variants": built, "version": 0}), info.model_path,
                      extra_files=extra, activate=True)
    with TestClient(create_app(Settings(home=settings.home, device="cpu", variant="int8"))) as client:
        wait_ready(client)
        view = client.get("/v1/models/imagenet").json()
        assert view.get("variant") == "int8", view
        why = explain(client, (imagenet_samples / "n01443537_goldfish.JPEG").read_bytes())["explanation"]
        left, top, right, bottom = BOXES["n01443537_goldfish.JPEG"]
        assert why["label"] == "goldfish" and left <= why["peak"][0] <= right and top <= why["peak"][1] <= bottom


def test_explain_takes_a_bounded_number_of_images(client: TestClient) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    files = [("file", (f"{i}.png", out.getvalue(), "image/png")) for i in range(17)]
    resp = client.post("/v1/models/imagenet/predict?explain=true", files=files)
    assert resp.status_code == 413 and "at most 16 images" in resp.json()["detail"]
    assert client.post("/v1/models/imagenet/predict", files=files).status_code == 200  # without explain: fine
    assert len(client.post("/v1/models/imagenet/predict?explain=true", files=files[:16]).json()["results"]) == 16
