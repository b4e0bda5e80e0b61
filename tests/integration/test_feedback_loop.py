"""The feedback loop end to end (issue 22): a real API process, a real worker, real photos.

v1 is trained on a small ants/bees dataset; with the capture policy ``all`` every prediction carries a
``capture_id``; the captures are labelled (one as "none of these"); the feedback dataset names its parent;
an ordinary job on it succeeds and the gate decides against v1 on held-out photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.integration.procs import upload, wait_job

pytestmark = pytest.mark.slow

LINEAR = {"mode": "linear", "hyperparameters": {"batch_size": 8, "augment": "none"}}


def train(http: httpx.Client, stack: Stack, dataset_id: str) -> dict[str, Any]:
    resp = http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "loop", **LINEAR})
    assert resp.status_code == 202, resp.text
    job = wait_job(http, resp.json()["id"], ("succeeded", "failed", "cancelled"), 300, stack.diagnostics)
    assert job["state"] == "succeeded", f"{job}\n{stack.diagnostics()}"
    return job


def fresh_photos(hymenoptera: Path) -> list[tuple[Path, str]]:
    """Training photos the small dataset (its first 16 per class) does not hold: new to the model."""
    return [(p, label) for label in ("ants", "bees")
            for p in sorted((hymenoptera / "train" / label).glob("*.jpg"))[20:26]]


def test_captures_come_back_as_a_dataset_and_a_gated_job(stack: Stack, small_hymenoptera_zip: Path,
                                                         hymenoptera: Path) -> None:
    http = stack.server.http
    parent = upload(http, small_hymenoptera_zip)
    first = train(http, stack, parent)["result"]
    assert first["version"] == 1 and first["promoted"] is True, first

    resp = http.put("/v1/models/loop/feedback/policy", json={"policy": "all"})
    assert resp.status_code == 200 and resp.json()["policy"] == "all", resp.text
    photos = fresh_photos(hymenoptera)
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p, _ in photos]
    resp = http.post("/v1/models/loop/predict", files=files)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert resp.json()["version"] == 1 and all(r.get("capture_id") for r in results), results

    queue = http.get("/v1/models/loop/feedback", params={"state": "unlabeled", "limit": 100}).json()
    assert queue["total"] == len(photos)
    by_id = {c["id"]: c for c in queue["items"]}
    for (path, _), r in zip(photos, results, strict=True):
        kept = by_id[r["capture_id"]]
        assert kept["answer"]["predictions"] == r["predictions"] and kept["version"] == 1
        assert http.get(kept["image_url"]).content == path.read_bytes()  # the photo itself was kept
    negative = results[-1]["capture_id"]  # reviewed as "none of these": kept aside, not a class
    for (_, label), r in zip(photos, results, strict=True):
        body = {"label": None if r["capture_id"] == negative else label}
        assert http.post(f"/v1/models/loop/feedback/{r['capture_id']}", json=body).status_code == 200
    assert http.get("/v1/models/loop/feedback", params={"state": "labeled"}).json()["total"] == len(photos)

    resp = http.post("/v1/models/loop/feedback/dataset")
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["lineage"]["parent"] == parent and made["lineage"]["model_version"] == 1
    assert made["lineage"]["added"] == {"ants": 6, "bees": 5}
    assert [n["capture_id"] for n in made["lineage"]["negatives"]] == [negative]
    parent_counts = http.get(f"/v1/datasets/{parent}").json()["counts"]
    total = sum(sum(c.values()) for c in made["counts"].values())
    assert total == sum(sum(c.values()) for c in parent_counts.values()) + 11
    assert made["counts"].get("test", {}) == parent_counts.get("test", {})  # no captured photo is tested on

    second = train(http, stack, made["id"])
    result = second["result"]
    assert result["version"] == 2 and isinstance(result["promoted"], bool) and result["reason"], result
    assert result["evaluation"]["active"]["version"] == 1  # the gate compared it with the serving version
    active = http.get("/v1/models/loop").json()["active_version"]
    assert active == (2 if result["promoted"] else 1)
    report = http.get(second["links"]["report"]).json()
    assert report["dataset_id"] == made["id"]
