"""The feedback API over HTTP: the policy, captures carried by predictions, review, corrections, the dataset
made from them, roles, and the 4xx answers. A real tiny ONNX model, real PNGs, a real dataset store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr

from core.datasets.schemas import IngestLimits
from core.settings import Settings
from dataset_store import DatasetStore
from service.http.app import create_app
from tests.service.conftest import wait_ready
from tests.service.inference.test_selective_answers import BLACK, GREY, OOD, RED, png, register

ADMIN, USER = "admin-key-123", "predict-key-456"


def noise_png(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def parent_dataset(home: Path) -> str:
    folder = home / "upload"
    for c, label in enumerate(("red", "green")):
        (folder / label).mkdir(parents=True)
        for i in range(8):
            (folder / label / f"{i}.png").write_bytes(noise_png(100 * c + i))
    dataset, _ = DatasetStore(Settings(home=home).datasets_dir).ingest_folder(folder, "colours",
                                                                              IngestLimits(workers=1))
    return dataset.id


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    home = tmp_path / "home"
    home.mkdir()
    dataset_id = parent_dataset(home)
    register(home, "fed", True, ood=OOD, source={"dataset_id": dataset_id})
    register(home, "bare", False)  # no dataset behind it (like the bootstrapped ImageNet model)
    settings = Settings(home=home, refresh_interval_s=0.2, device="cpu",
                        api_keys=SecretStr(f"admin:{ADMIN},predict:{USER}"))
    with TestClient(create_app(settings), headers={"authorization": f"Bearer {ADMIN}"}) as c:
        wait_ready(c)
        yield c


def predict(client: TestClient, model: str, *photos: bytes) -> list[dict[str, Any]]:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(photos)]
    resp = client.post(f"/v1/models/{model}/predict", files=files)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]  # type: ignore[no-any-return]


def put_policy(client: TestClient, model: str, **policy: Any) -> dict[str, Any]:
    resp = client.put(f"/v1/models/{model}/feedback/policy", json=policy)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_off_by_default_then_all_captures_and_review_labels(client: TestClient) -> None:
    assert client.get("/v1/models/fed/feedback/policy").json()["policy"] == "off"
    assert all("capture_id" not in r for r in predict(client, "fed", GREY, RED))
    assert put_policy(client, "fed", policy="all")["max_items"] == 10_000  # the defaults fill the rest
    results = predict(client, "fed", GREY, RED)
    ids = [r["capture_id"] for r in results]
    assert all(ids) and len(set(ids)) == 2

    queue = client.get("/v1/models/fed/feedback", params={"state": "unlabeled"}).json()
    assert queue["total"] == 2 and [c["id"] for c in queue["items"]] == ids and queue["next_offset"] is None
    first = queue["items"][0]
    assert first["version"] == 1 and first["answer"]["predictions"] == results[0]["predictions"]
    assert first["answer"]["ood_score"] == results[0]["ood_score"] and first["answer"]["unknown"] is False
    image = client.get(first["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content == GREY

    assert client.post(f"/v1/models/fed/feedback/{ids[0]}", json={"label": "grey"}).json()["label"] == "grey"
    none = client.post(f"/v1/models/fed/feedback/{ids[1]}", json={"label": None}).json()
    assert none["none_of_these"] is True and none["state"] == "labeled"
    assert client.get("/v1/models/fed/feedback", params={"state": "unlabeled"}).json()["total"] == 0
    page = client.get("/v1/models/fed/feedback", params={"state": "labeled", "limit": 1}).json()
    assert page["total"] == 2 and page["next_offset"] == 1 and len(page["items"]) == 1


def test_unknown_and_unsure_policies_keep_only_their_answers(client: TestClient) -> None:
    put_policy(client, "fed", policy="unknown")
    grey, black = predict(client, "fed", GREY, BLACK)  # black's ood_score is 1 > the threshold 0.5
    assert black["unknown"] and "capture_id" in black and "capture_id" not in grey
    put_policy(client, "fed", policy="unsure", min_confidence=0.999)
    red, grey = predict(client, "fed", png((255, 0, 0)), GREY)  # grey: a near-uniform answer
    assert "capture_id" in grey and "capture_id" not in red


def test_a_correction_is_kept_labelled_and_goes_into_the_feedback_dataset(client: TestClient) -> None:
    put_policy(client, "fed", policy="all")
    captured = [r["capture_id"] for r in predict(client, "fed", noise_png(51), noise_png(52), noise_png(53),
                                                   noise_png(100))]  # noise_png(100) is the parent's green/0.png
    for cid, label in zip(captured, ["red", "red", None, "green"], strict=True):
        assert client.post(f"/v1/models/fed/feedback/{cid}", json={"label": label}).status_code == 200
    user = {"authorization": f"Bearer {USER}"}
    for seed in range(54, 59):
        if seed == 56:  # two photos of a new class: too few to be one (the ingest's rule), and said so
            refused = client.post("/v1/models/fed/feedback/dataset")
            assert refused.status_code == 422 and "'purple' has 2" in refused.json()["detail"]
            assert "label more captures" in refused.json()["detail"]
        resp = client.post("/v1/models/fed/feedback", headers=user, data={"label": "purple"},
                           files={"file": ("p.png", noise_png(seed), "image/png")})
        assert resp.status_code == 201, resp.text
        assert resp.json()["source"] == "correction" and resp.json()["label"] == "purple"

    resp = client.post("/v1/models/fed/feedback/dataset")
    assert resp.status_code == 201, resp.text
    report = resp.json()
    parent = next(d for d in client.get("/v1/datasets").json() if d["id"] != report["id"])  # the only other one
    lineage = report["lineage"]
    assert lineage["parent"] == parent["id"] and lineage["model"] == "fed" and lineage["model_version"] == 1
    assert lineage["added"] == {"purple": 5, "red": 2} and lineage["already_in_parent"] == 1
    assert [n["capture_id"] for n in lineage["negatives"]] == [captured[2]]
    assert report["classes"] == ["green", "purple", "red"]  # a new class from the corrections
    files = client.get(f"/v1/datasets/{report['id']}", params={"files": "true"}).json()["files"]
    added = [f for f in files if f["original"].startswith("feedback/")]
    assert len(added) == 7 and {f["split"] for f in added} <= {"train", "val"}  # never test
    assert {f["split"] for f in added if f["label"] == "purple"} == {"train", "val"}
    parent_files = client.get(f"/v1/datasets/{parent['id']}", params={"files": "true"}).json()["files"]
    assert {(f["sha256"], f["split"]) for f in parent_files} <= {(f["sha256"], f["split"]) for f in files}
    again = client.post("/v1/models/fed/feedback/dataset")
    assert again.status_code == 200 and again.json()["id"] == report["id"]  # same content, same dataset


def test_roles(client: TestClient) -> None:
    user = {"authorization": f"Bearer {USER}"}
    assert client.get("/v1/models/fed/feedback", headers=user).status_code == 403  # users' photos: admin only
    assert client.put("/v1/models/fed/feedback/policy", headers=user, json={"policy": "all"}).status_code == 403
    assert client.post("/v1/models/fed/feedback/dataset", headers=user).status_code == 403
    assert client.get("/v1/models/fed/feedback/policy", headers=user).status_code == 403
    assert client.get("/v1/models/fed/feedback/policy").status_code == 200


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "words"), [
    ("put", "/v1/models/fed/feedback/policy", {"json": {"policy": "sometimes"}}, 422, "all"),
    ("put", "/v1/models/fed/feedback/policy", {"json": {"policy": "all", "sample_rate": 2}}, 422, "sample_rate"),
    ("put", "/v1/models/nope/feedback/policy", {"json": {"policy": "all"}}, 404, "nope"),
    ("get", "/v1/models/fed/feedback?state=maybe", {}, 422, "state"),
    ("get", "/v1/models/fed/feedback?limit=0", {}, 422, "limit"),
    ("post", f"/v1/models/fed/feedback/{'0' * 32}", {"json": {"label": "x"}}, 404, "GET /v1/models/fed/feedback"),
    ("get", "/v1/models/fed/feedback/0123456789abcdef0123456789abcdef/image", {}, 404, "no capture"),
    ("post", "/v1/models/fed/feedback", {"content": b"x", "headers": {"content-type": "image/png"}}, 415,
     "multipart"),
    ("post", "/v1/models/fed/feedback", {"files": {"file": ("a.png", GREY, "image/png")}}, 422, "label"),
    ("post", "/v1/models/fed/feedback", {"data": {"label": "a"}, "files": {"other": ("a", b"x")}}, 422, "file"),
    ("post", "/v1/models/fed/feedback", {"data": {"label": "a/b"}, "files": {"file": ("a.png", GREY)}}, 422,
     "slashes"),
    ("post", "/v1/models/fed/feedback", {"data": {"label": "a"}, "files": {"file": ("a.txt", b"text")}}, 415,
     "not an image"),
    ("post", "/v1/models/bare/feedback/dataset", {}, 409, "not trained on a stored dataset"),
    ("post", "/v1/models/fed/feedback/dataset", {}, 422, "label some"),
])
def test_bad_requests_get_a_4xx_naming_the_fix(client: TestClient, method: str, path: str, kwargs: dict[str, Any],
                                               status: int, words: str) -> None:
    resp = client.request(method.upper(), path, **kwargs)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["detail"]


def test_a_label_names_a_real_capture(client: TestClient) -> None:
    put_policy(client, "fed", policy="all")
    cid = predict(client, "fed", GREY)[0]["capture_id"]
    resp = client.post(f"/v1/models/fed/feedback/{cid}", json={"label": ""})
    assert resp.status_code == 422 and "null for 'none of these'" in resp.json()["detail"]
    resp = client.post(f"/v1/models/fed/feedback/{cid}", json={"lable": "x"})
    assert resp.status_code == 422


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the /metrics text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_drift_metrics_count_classes_confidence_unknown_and_reviews(client: TestClient) -> None:
    before = client.get("/metrics").text
    put_policy(client, "fed", policy="all")
    grey, red, black = predict(client, "fed", GREY, RED, BLACK)
    assert red["predictions"][0]["label"] == "red" and black["unknown_reason"] == "ood"
    client.post(f"/v1/models/fed/feedback/{red['capture_id']}", json={"label": "red"})  # agrees
    client.post(f"/v1/models/fed/feedback/{grey['capture_id']}", json={"label": "purple"})  # disagrees
    client.post(f"/v1/models/fed/feedback/{black['capture_id']}", json={"label": None})
    client.post(f"/v1/models/fed/feedback/{red['capture_id']}", json={"label": "red"})  # a second review: not counted
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    v = {"model": "fed", "version": "1"}
    assert delta("tuneserve_predictions_by_class_total", label="red", **v) >= 1
    assert sum(delta("tuneserve_predictions_by_class_total", label=c, **v) for c in ("red", "green", "blue")) == 3
    assert delta("tuneserve_prediction_confidence_count", **v) == 3
    assert delta("tuneserve_prediction_confidence_bucket", le="1.0", **v) == 3
    assert delta("tuneserve_predictions_unknown_total", reason="ood", **v) == 1
    assert [delta("tuneserve_feedback_reviews_total", outcome=o, **v)
            for o in ("agree", "disagree", "none_of_these")] == [1, 1, 1]
