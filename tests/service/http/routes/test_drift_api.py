"""``GET /v1/models/{name}/drift``: the persisted drift history per version and hour, over HTTP. A real tiny ONNX
model (tests/service/inference/test_selective_answers.py), real PNGs, the app's own SQLite history under its home."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.settings import Settings
from feedback.drift_log import DRIFT_FILE, bucket
from service.http.app import create_app
from tests.service.conftest import wait_ready
from tests.service.http.routes.test_feedback_api import noise_png, predict, put_policy
from tests.service.inference.test_selective_answers import BLACK, GREY, OOD, RED, png, register

ADMIN, READ, USER = "admin-key-drift", "read-key-drift", "predict-key-drift"


def settings_for(home: Path) -> Settings:
    return Settings(home=home, refresh_interval_s=0.2, device="cpu",
                    api_keys=SecretStr(f"admin:{ADMIN},read:{READ},predict:{USER}"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    register(home, "fed", True, ood=OOD)
    return home


@pytest.fixture
def client(home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(home)), headers={"authorization": f"Bearer {ADMIN}"}) as c:
        wait_ready(c)
        yield c


def drift(client: TestClient, **params: Any) -> dict[str, Any]:
    resp = client.get("/v1/models/fed/drift", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def expected(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the drift totals must say about these answers, worked out from the answers themselves."""
    tops = [r["predictions"][0] for r in results]
    bins = [0] * 10
    for t in tops:
        bins[min(int(t["probability"] * 10), 9)] += 1
    unknown = Counter(r["unknown_reason"] for r in results if r["unknown"])
    return {"predictions": len(results), "by_class": dict(sorted(Counter(t["label"] for t in tops).items())),
            "confidence": bins, "unknown": sum(unknown.values()), "unknown_by_reason": dict(unknown)}


def test_counts_match_the_answers_given(client: TestClient) -> None:
    assert drift(client)["versions"] == []  # nothing predicted yet: no series, not zeros
    photos = [GREY, RED, BLACK, png((0, 0, 255)), png((250, 10, 10)), noise_png(3)]
    results = predict(client, "fed", *photos[:4]) + predict(client, "fed", *photos[4:])
    body = drift(client)
    assert body["model"] == "fed" and body["bucket_seconds"] == 3600 and len(body["confidence_bins"]) == 11
    (v1,) = body["versions"]
    want = expected(results)
    assert v1["version"] == 1 and want["unknown"] >= 1  # BLACK is out of distribution
    assert {k: v1["totals"][k] for k in want} == want
    assert v1["totals"]["unknown_share"] == pytest.approx(want["unknown"] / 6)
    assert v1["totals"]["reviewed"] == 0 and v1["totals"]["live_accuracy"] is None
    (hour,) = v1["buckets"]  # all within this hour (or, at an hour's turn, two buckets summing to the totals)
    assert hour["start"] == bucket(time.time()) and hour["predictions"] == 6


def test_reviews_give_the_live_accuracy_and_count_once(client: TestClient) -> None:
    put_policy(client, "fed", policy="all")
    grey, red, black, blue = predict(client, "fed", GREY, RED, BLACK, png((0, 0, 255)))
    assert red["predictions"][0]["label"] == "red" and blue["predictions"][0]["label"] == "blue"
    for result, label in ((red, "red"), (blue, "blue"), (grey, "purple"), (black, None), (red, "red")):
        assert client.post(f"/v1/models/fed/feedback/{result['capture_id']}", json={"label": label}).status_code == 200
    totals = drift(client)["versions"][0]["totals"]
    # red and blue agree, grey disagrees, black is "none of these"; red's second review is not a new one
    assert (totals["reviewed"], totals["reviewed_correct"], totals["none_of_these"]) == (4, 2, 1)
    assert totals["live_accuracy"] == pytest.approx(2 / 3)


def test_version_filter_since_and_persistence(home: Path) -> None:
    with TestClient(create_app(settings_for(home)), headers={"authorization": f"Bearer {ADMIN}"}) as client:
        wait_ready(client)
        first = predict(client, "fed", GREY, RED)
        assert register(home, "fed", True, ood=OOD) == 2
        deadline = time.monotonic() + 30
        while client.get("/v1/models/fed").json()["serving_version"] != 2:
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.05)
        second = predict(client, "fed", BLACK, BLACK, RED)
        both = drift(client)
        assert [v["version"] for v in both["versions"]] == [1, 2]
        assert [v["totals"]["predictions"] for v in both["versions"]] == [2, 3]
        (only,) = drift(client, version=2)["versions"]
        assert only["version"] == 2 and only["totals"]["by_class"] == expected(second)["by_class"]
        assert drift(client, version=7)["versions"] == []  # a version without counts: an empty series
        assert drift(client, since=int(time.time()) + 7200)["versions"] == []  # after every bucket
        assert drift(client, since=0)["since"] == 0
        predict(client, "fed", RED)  # counted just before the app stops: still on disk after it
    assert (home / "feedback" / "fed" / DRIFT_FILE).is_file()
    with TestClient(create_app(settings_for(home)), headers={"authorization": f"Bearer {ADMIN}"}) as again:
        wait_ready(again)
        v1, v2 = drift(again)["versions"]
        assert v1["totals"]["by_class"] == expected(first)["by_class"] and v2["totals"]["predictions"] == 4


def test_roles_and_bad_requests(client: TestClient) -> None:
    predict(client, "fed", GREY)
    assert client.get("/v1/models/fed/drift", headers={"authorization": f"Bearer {READ}"}).status_code == 200
    user = client.get("/v1/models/fed/drift", headers={"authorization": f"Bearer {USER}"})
    assert user.status_code == 403 and "read" in user.json()["detail"]
    assert client.get("/v1/models/fed/drift", headers={"authorization": ""}).status_code == 401
    missing = client.get("/v1/models/nope/drift")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    for params, words in (({"version": 0}, "version"), ({"since": -1}, "since"), ({"version": "two"}, "version"),
                          ({"since": 10**13}, "since")):
        resp = client.get("/v1/models/fed/drift", params=params)
        assert resp.status_code == 422 and words in resp.json()["detail"], (params, resp.text)


def test_the_route_is_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/models/{name}/drift"]["get"]
    assert set(op["responses"]) == {"200", "404", "422"}
    schema = doc["components"]["schemas"]
    assert {"predictions", "by_class", "confidence", "unknown_share", "reviewed", "reviewed_correct",
            "live_accuracy"} <= set(schema["DriftCounts"]["properties"])
    assert {"version", "totals", "buckets"} <= set(schema["VersionDrift"]["properties"])
