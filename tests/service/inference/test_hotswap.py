"""Hot-swap under load: promotions and rollbacks while clients keep predicting, no request fails.

A real ``tuneserve serve --no-worker`` process on real Redis: some swaps are announced the way a
worker announces a promotion (registry + pub/sub), the others go through the activate endpoint.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from models import Registry
from service.http.app import create_app
from tests.integration.procs import Server, base_env, private_broker, wait_for
from tests.service.conftest import wait_ready
from transport.promotions import announce_promotion

TABBY = "n02123045_tabby.JPEG"


def add_versions(home: Path, count: int) -> list[int]:
    """More versions of ``imagenet`` (the same ONNX file, registered again: distinct version numbers)."""
    registry = Registry(home / "models")
    v1 = registry.get("imagenet", 1)
    return [registry.register(v1.manifest, v1.model_path).version for _ in range(count)]


@dataclass
class Call:
    start: float
    end: float
    status: int
    version: int | None


def client_loop(url: str, image: bytes, stop: threading.Event, calls: list[Call]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            start = time.monotonic()
            try:
                resp = http.post("/v1/models/imagenet/predict?top_k=1", content=image,
                                 headers={"content-type": "image/jpeg"})
                status, version = resp.status_code, resp.json().get("version")
            except httpx.HTTPError:
                status, version = -1, None
            calls.append(Call(start, time.monotonic(), status, version))


@pytest.mark.slow
def test_swaps_under_load_fail_no_request(home: Path, tmp_path: Path, imagenet_samples: Path) -> None:
    add_versions(home, 2)  # versions 2 and 3
    broker = private_broker()
    server = Server(base_env(home, **broker), tmp_path / "serve.log").wait_ready()
    registry = Registry(home / "models")
    image = (imagenet_samples / TABBY).read_bytes()
    stop = threading.Event()
    per_thread: list[list[Call]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=client_loop, args=(server.url, image, stop, calls)) for calls in per_thread]
    # (target version, how): promote 2, promote 3, roll back (to 2), activate 1 by hand, promote 3.
    steps = [(2, "announce"), (3, "announce"), (2, "rollback"), (1, "endpoint"), (3, "announce")]
    swaps: list[tuple[int, float, float]] = []  # (version, initiated, serving)
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        for target, how in steps:
            initiated = time.monotonic()
            if how == "announce":
                registry.activate("imagenet", target)
                announce_promotion(broker["TUNESERVE_BROKER_URL"], "imagenet", target)
            elif how == "rollback":
                assert registry.rollback("imagenet").version == target
                announce_promotion(broker["TUNESERVE_BROKER_URL"], "imagenet", target)
            else:
                assert server.http.post(f"/v1/models/imagenet/versions/{target}/activate").status_code == 200
            wait_for(lambda t=target: server.http.get("/v1/models/imagenet").json()["serving_version"] == t,
                     10, f"version {target} to serve", interval=0.02)
            swaps.append((target, initiated, time.monotonic()))
            time.sleep(0.4)  # traffic on the new version before the next swap
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        server.stop()

    calls = [c for thread_calls in per_thread for c in thread_calls]
    assert len(calls) > 40
    failed = [c for c in calls if c.status != 200]
    assert not failed, f"{len(failed)} of {len(calls)} requests failed: {failed[:5]}"
    targets = [1] + [v for v, _, _ in swaps]
    # Between one swap being served and the next being initiated, every answer names that version.
    for k, (version, _, served) in enumerate(swaps):
        next_initiated = swaps[k + 1][1] if k + 1 < len(swaps) else float("inf")
        inside = [c for c in calls if c.start >= served and c.end <= next_initiated]
        assert inside and {c.version for c in inside} == {version}, (k, {c.version for c in inside})
    # Each client sees versions change only at swaps, in swap order (never back and forth).
    for thread_calls in per_thread:
        seen = [c.version for c in thread_calls]
        changes = [seen[0]] + [b for a, b in itertools.pairwise(seen) if a != b]
        assert changes == targets[targets.index(changes[0]):][: len(changes)], changes
    assert "Traceback" not in server.tail(400)


def test_failed_load_keeps_old_version_serving(settings: Settings, imagenet_samples: Path, tmp_path: Path) -> None:
    registry = Registry(settings.models_dir)
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"this is not an onnx file")
    manifest = registry.get("imagenet", 1).manifest
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        bad = registry.register(manifest, broken, activate=True).version
        view = wait_for(lambda: (v := client.get("/v1/models/imagenet").json())["load_error"] and v, 10,
                        "the load error to show")
        assert view["active_version"] == bad and view["serving_version"] == 1
        assert view["load_error"]["version"] == bad and view["load_error"]["error"]
        resp = client.post("/v1/models/imagenet/predict", content=(imagenet_samples / TABBY).read_bytes(),
                           headers={"content-type": "image/jpeg"})
        assert resp.status_code == 200 and resp.json()["version"] == 1
        # Rolling back to the good version clears the error.
        client.post("/v1/models/imagenet/versions/1/activate")
        wait_for(lambda: client.get("/v1/models/imagenet").json()["load_error"] is None, 10, "error cleared")


def test_a_request_racing_a_swap_gets_the_new_model_and_the_old_one_closes(settings: Settings, home: Path) -> None:
    from service.inference.manager import ModelManager

    add_versions(home, 1)
    registry = Registry(settings.models_dir)
    manager = ModelManager(registry, settings)
    manager.refresh()
    old = manager.get("imagenet")  # an in-flight request holds version 1
    registry.activate("imagenet", 2)
    manager.refresh()
    assert manager.loaded()["imagenet"].version == 2
    assert not old.closed.is_set()  # still in use: not closed under the request
    assert not old.try_acquire()  # but retired: a late lookup cannot take it
    new = manager.get("imagenet")
    assert new.version == 2
    old.release()
    assert old.closed.wait(10)  # released once the last user is done
    new.release()
    manager.stop()
    shutil.rmtree(home / "models" / "imagenet" / "2", ignore_errors=True)
