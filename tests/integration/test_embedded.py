"""`tuneserve serve` with no broker configured: its own Redis, its own worker, the whole flow, clean exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from core.procs import alive
from jobs import FINISHED
from tests.integration.procs import Server, base_env, children_of, upload, wait_for, wait_job
from transport.embedded_redis import discover

pytestmark = pytest.mark.slow


def test_serve_runs_redis_and_worker_itself(tmp_path: Path, bootstrapped_home: Path, hymenoptera_zip: Path,
                                            hymenoptera: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bootstrapped_home, home)
    server = Server(base_env(home), tmp_path / "serve.log", no_worker=False)  # no TUNESERVE_BROKER_URL
    try:
        server.wait_ready()
        url = wait_for(lambda: discover(home), 10, "the embedded Redis")
        assert "127.0.0.1" in url and url != "redis://127.0.0.1:6379"
        assert (home / "run" / "redis.url").stat().st_mode & 0o077 == 0  # holds the password
        children = children_of(server.pid)
        assert len(children) == 2, children  # redis-server and the worker

        http = server.http
        dataset_id = upload(http, hymenoptera_zip)
        resp = http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "insects", "mode": "linear"})
        assert resp.status_code == 202, resp.text
        job = wait_job(http, resp.json()["id"], FINISHED, 300,
                       lambda: server.tail(80))
        assert job["state"] == "succeeded", job
        assert job["result"]["promoted"] and job["result"]["evaluation"]["candidate"]["accuracy"] >= 0.93
        wait_for(lambda: http.get("/v1/models/insects").json()["serving_version"] == 1, 5, "the swap")
        image = (hymenoptera / "val" / "bees" / "10870992_eebeeb3a12.jpg").read_bytes()
        body = http.post("/v1/models/insects/predict?top_k=1", content=image, headers={"content-type": "image/jpeg"})
        assert body.status_code == 200, body.text
        assert body.json()["version"] == 1 and body.json()["results"][0]["predictions"][0]["label"] == "bees"
        assert (home / "redis" / "appendonly.aof").exists() or (home / "redis" / "appendonlydir").exists()
    finally:
        code = server.stop(timeout=60)
    assert code == 0, server.tail(40)
    assert not any(alive(pid) for pid in children), "worker or redis outlived serve"
    assert discover(home) is None and not (home / "run" / "redis.url").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2)
