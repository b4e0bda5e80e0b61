"""``tuneserve serve`` with several HTTP worker processes (TUNESERVE_API_WORKERS): both answer on one port,
and a promotion reaches every one of them while clients keep predicting, with no failed request.

Real processes on real Redis: one swap goes through the activate endpoint (it lands on one worker; the
other learns it from pub/sub or its pointer polling), one the way a training worker promotes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from models import Registry
from tests.integration.procs import Server, base_env, private_broker, wait_for
from tests.service.inference.test_hotswap import TABBY, add_versions
from transport.promotions import announce_promotion

WORKERS = 2


def fresh_client(url: str) -> httpx.Client:
    """No keep-alive: every request is a new connection, which any worker may accept."""
    return httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def versions_by_worker(http: httpx.Client, tries: int = 40) -> dict[int, int]:
    """{pid: serving version} over ``tries`` fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        view = http.get("/v1/models/imagenet").json()
        seen[view["pid"]] = view["serving_version"]
    return seen


def serving_everywhere(http: httpx.Client, version: int) -> dict[int, int] | None:
    """{pid: version} when every worker answered and serves ``version``, else None."""
    seen = versions_by_worker(http, 10)
    return seen if len(seen) == WORKERS and set(seen.values()) == {version} else None


def all_on(http: httpx.Client, version: int) -> bool:
    return serving_everywhere(http, version) is not None


def predict_loop(url: str, image: bytes, stop: threading.Event, out: list[tuple[float, int, int | None]]) -> None:
    with fresh_client(url) as http:
        while not stop.is_set():
            # Stamped when sent: a request in flight across a swap may rightly finish on the old version.
            sent = time.monotonic()
            try:
                resp = http.post("/v1/models/imagenet/predict?top_k=1", content=image,
                                 headers={"content-type": "image/jpeg"})
                out.append((sent, resp.status_code, resp.json().get("version")))
            except httpx.HTTPError:
                out.append((sent, -1, None))


@pytest.mark.slow
def test_two_api_workers_share_the_port_and_swap_together(home: Path, tmp_path: Path, imagenet_samples: Path) -> None:
    add_versions(home, 2)  # versions 2 and 3
    broker = private_broker()
    env = base_env(home, **broker, TUNESERVE_API_WORKERS=str(WORKERS), TUNESERVE_REFRESH_INTERVAL_S="30")
    server = Server(env, tmp_path / "serve.log").wait_ready(timeout=120)
    registry = Registry(home / "models")
    calls: list[tuple[float, int, int | None]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=predict_loop, args=(server.url, (imagenet_samples / TABBY).read_bytes(),
                                                             stop, calls)) for _ in range(3)]
    http = fresh_client(server.url)
    try:
        # A worker answers GET as soon as it accepts; its model may still be loading (serving_version null).
        pids = wait_for(lambda: serving_everywhere(http, 1), 60,
                        f"{WORKERS} workers serving version 1\n{server.tail()}")
        for t in threads:
            t.start()
        time.sleep(0.5)
        # 1: through the endpoint (one worker takes the call); 2: registry + announcement, as a job promotes.
        # Pointer polling is slowed to 30 s, so the swaps travel by pub/sub.
        assert http.post("/v1/models/imagenet/versions/2/activate").status_code == 200
        wait_for(lambda: all_on(http, 2), 15, "both workers on version 2")
        registry.activate("imagenet", 3)
        announce_promotion(broker["TUNESERVE_BROKER_URL"], "imagenet", 3)
        wait_for(lambda: all_on(http, 3), 15, "both workers on version 3")
        settled = time.monotonic()
        assert set(versions_by_worker(http, 20)) <= set(pids)  # the same two processes, none restarted
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(30)
        http.close()
        server.stop()
    assert len(calls) > 20
    failed = [c for c in calls if c[1] != 200]
    assert not failed, f"{len(failed)} of {len(calls)} requests failed: {failed[:5]}"
    assert {c[2] for c in calls} >= {1, 3}
    assert {c[2] for c in calls if c[0] > settled} == {3}
    log = server.tail(400)
    assert "Traceback" not in log and log.count("serving imagenet version 3") == WORKERS
