"""Jobs end to end on the real Redis: a real API process, a real worker process, real training.

upload -> job -> worker trains (real engine) -> gate -> registry -> every API process swaps.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from jobs import FINISHED
from models import Registry
from service.inference.onnx_session import gpu_present
from tests.integration.conftest import Stack
from tests.integration.procs import sse_events, upload, wait_for, wait_job
from trainer.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

ANT = "train/ants/0013035.jpg"


def predict(stack: Stack, image: Path, model: str) -> dict:
    resp = stack.server.http.post(f"/v1/models/{model}/predict?top_k=1", content=image.read_bytes(),
                                  headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def test_linear_job_is_trained_promoted_and_served(stack: Stack, dataset_id: str, hymenoptera: Path) -> None:
    http = stack.server.http
    resp = http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "hymenoptera", "mode": "linear"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert resp.json() == {"id": job_id, "state": "queued"}

    events = sse_events(http, f"/v1/jobs/{job_id}/events", timeout=240)  # streams until the job ends
    names = [name for name, _ in events]
    assert names[0] == "snapshot" and names[-1] == "end" and set(names[1:-1]) <= {"delta"}, names
    job = events[-1][1]
    assert job["state"] == "succeeded", f"{job}\n{stack.diagnostics()}"
    assert any(data["state"] == "running" for _, data in events)

    result = job["result"]
    assert result["model"] == "hymenoptera" and result["version"] == 1 and result["promoted"] is True
    assert "first version" in result["reason"] and "clearly above chance" in result["reason"]
    lo, hi = result["evaluation"]["accuracy_ci95"]  # how sure: a 95 % Wilson interval on the accuracy
    assert 0.5 < lo <= result["evaluation"]["candidate"]["accuracy"] <= hi <= 1.0
    assert "95% interval" in result["reason"] and isinstance(result["warnings"], list)
    assert result["evaluation"]["split"] == "val" and result["evaluation"]["active"] is None
    assert result["evaluation"]["candidate"]["accuracy"] >= 0.93
    assert job["progress"]["fraction"] == 1.0 and job["metrics"], job
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr"} <= set(job["metrics"][-1])
    assert job["started_at"] and job["finished_at"] and job["attempts"] == 1

    assert [j["id"] for j in http.get("/v1/jobs", params={"state": "succeeded"}).json()] == [job_id]
    assert http.get("/v1/jobs", params={"model": "nothing"}).json() == []

    # The API process learns of the promotion (pub/sub, else its 1 s poll here) and serves it.
    wait_for(lambda: http.get("/v1/models/hymenoptera").json()["serving_version"] == 1, 5, "swap")
    body = predict(stack, hymenoptera / ANT, "hymenoptera")
    assert body["version"] == 1 and body["results"][0]["predictions"][0]["label"] == "ants"
    assert predict(stack, hymenoptera / ANT, "imagenet")["version"] == 1  # the other model is untouched
    check_artefacts(http, job, dataset_id)


def check_artefacts(http: httpx.Client, job: dict, dataset_id: str) -> None:
    """What the job produced is reachable from its JSON: report, plots, misclassified photos."""
    assert job["links"]["report"] == f"/v1/jobs/{job['id']}/report"
    report = http.get(job["links"]["report"]).json()
    assert report["model"] == "hymenoptera" and report["version"] == 1 and report["dataset_id"] == dataset_id
    val = report["splits"]["val"]
    assert set(val["per_class"]) == {"ants", "bees"} and len(val["confusion_matrix"]) == 2
    assert {"f1", "precision", "recall"} <= set(val["per_class"]["ants"])
    assert "ece" in report["val_uncalibrated"] and "ece" in val
    assert report["promotion"]["promoted"] is True
    files = {f["name"]: f for f in http.get(job["links"]["files"]).json()["files"]}
    assert {"model.onnx", "report.json", "curves.png", "confusion_matrix.png", "reliability.png"} <= set(files)
    curves = http.get(files["curves.png"]["url"])
    assert curves.status_code == 200 and curves.headers["content-type"] == "image/png"
    assert curves.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert http.get(files["curves.png"]["url"], headers={"If-None-Match": curves.headers["etag"]}).status_code == 304
    missed = [m for split in report["splits"].values() for m in split["misclassified"]]
    for item in missed[:3]:  # each misclassified photo has a thumbnail URL that serves it
        thumb = http.get(item["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", item


def test_job_requests_are_validated_before_queueing(stack: Stack, dataset_id: str) -> None:
    http = stack.server.http
    bad = [
        ({"dataset_id": "0" * 16, "model": "x"}, 404, "dataset"),
        ({"dataset_id": dataset_id, "model": "Bad Name"}, 422, "model"),
        ({"dataset_id": dataset_id, "model": "x", "hyperparameters": {"lr": -1}}, 422, "hyperparameters.lr"),
        ({"dataset_id": dataset_id, "model": "x", "base": "vgg99"}, 422, "unknown base"),
        ({"dataset_id": dataset_id, "model": "x", "base": "registry:imagenet:9"}, 404, "no version 9"),
    ]
    for body, status, words in bad:
        resp = http.post("/v1/jobs", json=body)
        assert resp.status_code == status and words in resp.json()["detail"], (body, resp.text)
    assert http.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert http.get("/v1/jobs/nope").status_code == 404
    assert http.post("/v1/jobs/nope/cancel").status_code == 404
    assert http.get("/v1/jobs", params={"model": "x"}).json() == []  # nothing was queued


def test_worse_candidate_is_kept_as_candidate(stack: Stack, shuffled_hymenoptera_zip: Path) -> None:
    http = stack.server.http
    wait_for(lambda: Registry(stack.home / "models").active_version("hymenoptera") == 1, 1, "first test's model")
    shuffled = upload(http, shuffled_hymenoptera_zip)
    body = {"dataset_id": shuffled, "model": "hymenoptera", "mode": "linear",
            "hyperparameters": {"max_epochs": 1, "probe_epochs": 1, "lr": 0.01}}
    job_id = http.post("/v1/jobs", json=body).json()["id"]
    job = wait_job(http, job_id, ("succeeded", "failed"), 240, stack.diagnostics)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["promoted"] is False and "kept as candidate" in result["reason"], result
    active = result["evaluation"]["active"]
    assert active["version"] == 1 and active["accuracy"] > result["evaluation"]["candidate"]["accuracy"] + 0.1
    registry = Registry(stack.home / "models")
    assert registry.active_version("hymenoptera") == 1
    assert registry.get("hymenoptera", result["version"]).status == "candidate"
    time.sleep(1.5)  # longer than the API's refresh interval: it must still serve version 1
    assert http.get("/v1/models/hymenoptera").json()["serving_version"] == 1
    # The dataset of a finished job may be deleted; it is not in use any more.
    assert http.delete(f"/v1/datasets/{shuffled}").status_code == 204


def test_cancel_queued_and_running_jobs(stack: Stack, small_hymenoptera_zip: Path) -> None:
    http = stack.server.http
    small = upload(http, small_hymenoptera_zip)
    long_spec = {"dataset_id": small, "model": "cancelled", "mode": "finetune",
                 "hyperparameters": {"max_epochs": 50, "probe_epochs": 1, "batch_size": 8, "augment": "none"}}
    running = http.post("/v1/jobs", json=long_spec).json()["id"]
    queued = http.post("/v1/jobs", json=long_spec).json()["id"]  # waits behind it (one worker)
    wait_job(http, running, ("running",), 60, stack.diagnostics)
    assert http.delete(f"/v1/datasets/{small}").status_code == 409  # in use by a job

    resp = http.post(f"/v1/jobs/{queued}/cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"  # at once

    wait_for(lambda: (http.get(f"/v1/jobs/{running}").json()["progress"]["stage"] or "") not in ("", "starting"),
             60, "training to start")
    asked = time.monotonic()
    assert http.post(f"/v1/jobs/{running}/cancel").json()["cancel_requested"] is True
    job = wait_job(http, running, FINISHED, 60, stack.diagnostics)
    took = time.monotonic() - asked
    assert job["state"] == "cancelled" and job["error"] == "cancelled on request", job
    assert took < 20, took  # within a batch (plus the heartbeat's half second)
    assert not Registry(stack.home / "models").exists("cancelled")  # nothing registered
    assert not (stack.home / "work" / "jobs" / running).exists()  # checkpoint cleaned up
    assert http.post(f"/v1/jobs/{running}/cancel").status_code == 409
    assert http.get(f"/v1/jobs/{queued}").json()["state"] == "cancelled"  # its message was a no-op


def test_killed_worker_job_resumes_from_checkpoint(stack: Stack, small_hymenoptera_zip: Path) -> None:
    """SIGKILL mid-job: the job says it is stalled while no worker runs it, resumes from its checkpoint,
    and its progress never moves back (sampled through the whole job, kill and resume included)."""
    http = stack.server.http
    small = upload(http, small_hymenoptera_zip)
    body = {"dataset_id": small, "model": "resumed", "mode": "finetune",
            "hyperparameters": {"max_epochs": 2, "probe_epochs": 1, "batch_size": 8, "augment": "none"}}
    job_id = http.post("/v1/jobs", json=body).json()["id"]
    samples: list[dict] = []
    stop = threading.Event()

    def sample() -> None:  # its own client: httpx clients are not shared across threads here
        with httpx.Client(base_url=str(http.base_url), headers=http.headers) as client:
            while not stop.is_set():
                job = client.get(f"/v1/jobs/{job_id}").json()
                samples.append({"state": job["state"], **job["progress"]})
                if job["state"] in FINISHED:
                    return
                time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    folder = stack.home / "work" / "jobs" / job_id

    def finetune_epoch_checkpointed() -> tuple[int, dict] | None:
        """(fine-tuning epochs in the checkpoint, the job then): progress is reported before the save."""
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        state = load_checkpoint(folder) if (folder / "checkpoint.pt").is_file() else None
        done = state is not None and state["stage_index"] == 1 and state["epoch"] >= 1
        return (state["epoch"], job) if done else None  # type: ignore[index]

    saved, before = wait_for(finetune_epoch_checkpointed, 180, "a checkpointed fine-tuning epoch", interval=0.2)
    stack.worker.kill()  # SIGKILL mid-job: no cleanup, the lease simply stops being renewed
    assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    # No live worker: the job says so within the lease (4 s here), and the stall grows; no frozen ETA.
    stalled = wait_for(lambda: (p := http.get(f"/v1/jobs/{job_id}").json()["progress"])["stalled_s"] and p,
                       30, "the job to say it is stalled", interval=0.2)
    time.sleep(1.5)
    later = http.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert later["stalled_s"] >= stalled["stalled_s"] + 1.0, (stalled, later)
    assert later["eta_s"] is None and "no live worker" in later["eta_note"] and later["lease_expires_at"]
    assert later["fraction"] >= before["progress"]["fraction"] > 0
    stack.new_worker()
    job = wait_job(http, job_id, ("succeeded", "failed"), 240, stack.diagnostics)
    sampler.join(timeout=30)  # it ends on the finished job (its fraction 1.0)
    stop.set()
    fractions = [s["fraction"] for s in samples]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    resumed = [s for s in samples[samples.index(next(s for s in samples if s.get("stalled_s"))):]
               if s["state"] == "running" and not s.get("stalled_s")]
    assert resumed and min(s["fraction"] for s in resumed) >= before["progress"]["fraction"], resumed[:3]
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2 and job["result"]["promoted"] is True
    # Resumed, not restarted: the epochs in the checkpoint were not run again (their records,
    # wall-clock fields included, are exactly those written before the kill).
    kept = [m for m in before["metrics"] if m["stage"] == "linear"]
    kept += [m for m in before["metrics"] if m["stage"] == "finetune"][:saved]
    assert kept and all(m in job["metrics"] for m in kept), (kept, job["metrics"])
    epochs = [(m.get("stage"), m["epoch"]) for m in job["metrics"]]
    assert len(epochs) == len(set(epochs)), epochs
    assert "resum" in stack.worker.tail(400).lower()


@pytest.mark.skipif(gpu_present(), reason="needs a machine without a CUDA GPU to fail on device=cuda")
def test_a_failing_job_ends_failed_with_its_reason(stack: Stack, dataset_id: str) -> None:
    http = stack.server.http
    body = {"dataset_id": dataset_id, "model": "nogpu", "mode": "linear", "hyperparameters": {"device": "cuda"}}
    job = wait_job(http, http.post("/v1/jobs", json=body).json()["id"], ("failed", "succeeded"), 60,
                   stack.diagnostics)
    assert job["state"] == "failed" and "no CUDA GPU" in job["error"] and job["result"] is None, job
    assert not Registry(stack.home / "models").exists("nogpu")
