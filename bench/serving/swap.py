"""Hot-swap benchmark: promotion -> every API process serving the new version, and RSS over swaps.

Runs a real deployment in a temp home: ``tuneserve serve`` (API 1 + worker + embedded Redis) and
``tuneserve serve --no-worker`` (API 2, same home and Redis). It trains a ``linear`` job on
hymenoptera, measures from the job's success (and from its promotion) to both APIs answering with
the new version, then flips the active version 20 times (as a worker does: registry pointer +
pub/sub announcement) with predictions in between, recording swap latency and API RSS.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.swap [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.data import shared_data  # noqa: E402
from bench.docs import write_section  # noqa: E402
from bench.procs import rss_mib  # noqa: E402
from models import Registry  # noqa: E402
from tests.integration.procs import Server, base_env, upload, wait_for, zip_folder  # noqa: E402
from transport.embedded_redis import discover  # noqa: E402
from transport.promotions import announce_promotion  # noqa: E402

SECTION = "## Jobs and hot-swap"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.swap --write"
SWAPS = 20


def serving(api: Server, model: str) -> int | None:
    try:
        resp = api.http.get(f"/v1/models/{model}")
    except httpx.TransportError:
        return None
    return resp.json().get("serving_version") if resp.status_code == 200 else None


def watch_serving(apis: list[Server], model: str, version: int, timeout: float = 30.0) -> list[float]:
    """Wall time at which each API first reports ``version`` as serving (polled every 5 ms)."""
    seen: list[float] = [0.0] * len(apis)

    def poll(i: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if serving(apis[i], model) == version:
                seen[i] = time.time()
                return
            time.sleep(0.005)

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(len(apis))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not all(seen):
        raise RuntimeError(f"version {version} of {model} not served everywhere within {timeout}s")
    return seen


def predict_some(apis: list[Server], model: str, image: bytes, n: int = 10) -> set[int]:
    versions = set()
    for api in apis:
        for _ in range(n):
            resp = api.http.post(f"/v1/models/{model}/predict?top_k=1", content=image,
                                 headers={"content-type": "image/jpeg"})
            resp.raise_for_status()
            versions.add(resp.json()["version"])
    return versions


def bootstrap_home(home: Path) -> None:
    from core.settings import Settings
    from trainer.publish.bootstrap import bootstrap

    bootstrap(Registry(home / "models"), Settings(home=home), check_images=shared_data("imagenet_samples"))


def run(tmp: Path) -> dict[str, Any]:
    home = tmp / "home"
    bootstrap_home(home)
    env = base_env(home)
    env.pop("TUNESERVE_INTRA_OP_THREADS", None)
    api1 = Server(env, tmp / "api1.log", no_worker=False).wait_ready(120)
    broker = wait_for(lambda: discover(home), 10, "embedded redis url")
    api2 = Server(base_env(home, TUNESERVE_BROKER_URL=broker), tmp / "api2.log").wait_ready(120)
    apis = [api1, api2]
    try:
        return measure(home, apis, broker, tmp)
    finally:
        api2.stop()
        api1.stop()


def measure(home: Path, apis: list[Server], broker: str, tmp: Path) -> dict[str, Any]:
    archive = zip_folder(shared_data("hymenoptera"), tmp / "hymenoptera.zip", "hymenoptera")
    dataset_id = upload(apis[0].http, archive)
    job_id = apis[0].http.post("/v1/jobs", json={"dataset_id": dataset_id, "model": "bees", "mode": "linear"}
                               ).json()["id"]
    seen = watch_serving(apis, "bees", 1, timeout=600)
    job = wait_for(lambda: (j := apis[0].http.get(f"/v1/jobs/{job_id}").json())["state"] == "succeeded" and j,
                   60, "job success")
    from datetime import datetime

    finished = datetime.fromisoformat(job["finished_at"]).timestamp()
    promoted = (home / "models" / "bees" / "ACTIVE").stat().st_mtime
    out: dict[str, Any] = {
        "job_wall_s": round(finished - datetime.fromisoformat(job["created_at"]).timestamp(), 1),
        "val_accuracy": job["result"]["evaluation"]["candidate"]["accuracy"],
        "promotion_to_all_serving_ms": round((max(seen) - promoted) * 1000, 1),
        "success_to_all_serving_ms": round((max(seen) - finished) * 1000, 1),
    }
    # A second version of the same model (same file registered again) to swap back and forth.
    registry = Registry(home / "models")
    v1 = registry.get("bees", 1)
    v2 = registry.register(v1.manifest, v1.model_path).version
    bees = shared_data("hymenoptera") / "val" / "bees"
    image = (bees / sorted(os.listdir(bees))[0]).read_bytes()
    predict_some(apis, "bees", image)
    latencies, rss = [], {}
    for i in range(1, SWAPS + 1):
        target = v2 if i % 2 else 1
        started = time.time()
        registry.activate("bees", target)
        announce_promotion(broker, "bees", target)
        seen = watch_serving(apis, "bees", target)
        latencies.append((max(seen) - started) * 1000)
        assert predict_some(apis, "bees", image) == {target}
        time.sleep(0.3)  # let the retired session close (it closes on a background thread)
        if i in (1, SWAPS):
            rss[i] = [rss_mib(api.process.pid) for api in apis]
    out.update({
        "swaps": SWAPS,
        "swap_ms_median": round(statistics.median(latencies), 1),
        "swap_ms_max": round(max(latencies), 1),
        "rss_mib_after_1": [round(r, 1) for r in rss[1]],
        "rss_mib_after_20": [round(r, 1) for r in rss[SWAPS]],
        "rss_growth_pct": [round((b / a - 1) * 100, 1) for a, b in zip(rss[1], rss[SWAPS], strict=True)],
    })
    return out


def markdown(r: dict[str, Any]) -> str:
    growth = ", ".join(f"{g:+.1f}%" for g in r["rss_growth_pct"])
    rows = [
        ("`linear` job on hymenoptera, queued -> succeeded",
         f"{r['job_wall_s']} s (val accuracy {r['val_accuracy']:.4f}, promoted)"),
        ("promotion (ACTIVE pointer written) -> both APIs serving it", f"{r['promotion_to_all_serving_ms']} ms"),
        ("job marked succeeded -> both APIs serving it",
         f"{r['success_to_all_serving_ms']} ms (negative = already serving: the worker promotes, then "
         "records success)"),
        (f"{r['swaps']} promotions/rollbacks (pointer + pub/sub) -> both APIs serving",
         f"median {r['swap_ms_median']} ms, max {r['swap_ms_max']} ms (target < 2000 ms)"),
        (f"API RSS after swap 1 -> after swap {r['swaps']}",
         f"{r['rss_mib_after_1']} MiB -> {r['rss_mib_after_20']} MiB ({growth}; target < 10%)"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return f"""{SECTION}

Command: `{COMMAND}` (2-core CPU machine, onnxruntime CPU provider; 2 API processes on one home:
`tuneserve serve` = API 1 + worker + embedded Redis, and `tuneserve serve --no-worker` = API 2).

| measure | result |
|---|---|
{table}

Each swap loads and warms the new onnxruntime session on the refresher thread, replaces one
reference, and closes the old session (then `malloc_trim(0)`) once its last in-flight request is done.
"""




def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tuneserve-swap-"))
    try:
        result = run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if opts.write:
        write_section(SECTION, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
