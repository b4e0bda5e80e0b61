"""``GET /v1/models/{name}/feedback/{id}/explain``: a captured photo's heatmap without uploading it again, from
the version that answered it (the serving one once that version is deleted). The real ImageNet model on a
committed photo; a real tiny model without a heatmap output for the 409 and the roles."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from models import Registry
from service.http.app import create_app
from tests.service.conftest import wait_ready
from tests.service.http.routes.test_drift_api import ADMIN, READ, USER, settings_for
from tests.service.http.routes.test_feedback_api import predict, put_policy
from tests.service.inference.test_selective_answers import GREY, OOD, register

GOLDFISH = "n01443537_goldfish.JPEG"


def test_the_capture_is_explained_as_the_prediction_was(client: TestClient, imagenet_samples: Path) -> None:
    put_policy(client, "imagenet", policy="all")
    photo = (imagenet_samples / GOLDFISH).read_bytes()
    resp = client.post("/v1/models/imagenet/predict?explain=true", files={"file": (GOLDFISH, photo, "image/jpeg")})
    answer = resp.json()["results"][0]
    cid = answer["capture_id"]
    resp = client.get(f"/v1/models/imagenet/feedback/{cid}/explain")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["model"], body["version"], body["captured_version"], body["capture_id"]) == ("imagenet", 1, 1, cid)
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in answer["predictions"]]
    assert body["predictions"][0]["probability"] == pytest.approx(answer["predictions"][0]["probability"], abs=1e-4)
    why, then = body["explanation"], answer["explanation"]
    assert why["label"] == "goldfish" and why["crop_box"] == then["crop_box"] and why["peak"] == then["peak"]
    assert why["heatmap"].startswith("data:image/png;base64,") and len(why["heatmap"]) > 1000

    missing = client.get(f"/v1/models/imagenet/feedback/{'0' * 32}/explain")
    assert missing.status_code == 404 and "no capture" in missing.json()["detail"]
    assert client.get(f"/v1/models/nope/feedback/{cid}/explain").status_code == 404
    assert client.get("/v1/models/imagenet/feedback/not-an-id/explain").status_code == 404


def test_a_deleted_version_is_explained_by_the_serving_one(settings: Settings, imagenet_samples: Path) -> None:
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        put_policy(client, "imagenet", policy="all")
        photo = (imagenet_samples / GOLDFISH).read_bytes()
        cid = predict(client, "imagenet", photo)[0]["capture_id"]
        registry = Registry(settings.models_dir)
        info = registry.get("imagenet", 1)
        registry.register(info.manifest.model_copy(update={"version": 0}), info.model_path,
                          extra_files={"cam.npz": info.path / "cam.npz"}, activate=True)
        assert client.post("/v1/models/imagenet/versions/2/activate").status_code == 200
        assert client.delete("/v1/models/imagenet/versions/1").status_code == 204
        body = client.get(f"/v1/models/imagenet/feedback/{cid}/explain").json()
        assert (body["version"], body["captured_version"]) == (2, 1) and body["explanation"]["label"] == "goldfish"
        fixed = client.post("/v1/models/imagenet/feedback", data={"label": "goldfish"},
                            files={"file": (GOLDFISH, photo, "image/jpeg")}).json()  # a correction: no version
        body = client.get(f"/v1/models/imagenet/feedback/{fixed['id']}/explain").json()
        assert (body["version"], body["captured_version"]) == (2, None)


def test_no_heatmap_output_is_409_and_only_admins_read_captures(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    register(home, "fed", True, ood=OOD)  # a tiny model exported without the feature-map output
    with TestClient(create_app(settings_for(home)), headers={"authorization": f"Bearer {ADMIN}"}) as client:
        wait_ready(client)
        put_policy(client, "fed", policy="all")
        cid = predict(client, "fed", GREY)[0]["capture_id"]
        path = f"/v1/models/fed/feedback/{cid}/explain"
        resp = client.get(path)
        assert resp.status_code == 409 and "feature-map output" in resp.json()["detail"]
        for key in (READ, USER):
            assert client.get(path, headers={"authorization": f"Bearer {key}"}).status_code == 403
        doc = client.get("/openapi.json").json()
        assert {"200", "404", "409"} <= set(doc["paths"]["/v1/models/{name}/feedback/{capture_id}/explain"]["get"]
                                            ["responses"])
