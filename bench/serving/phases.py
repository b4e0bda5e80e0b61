"""Where a lone request's time goes inside the service: decode, batcher + inference, the rest.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.phases --home /tmp/perf-home

Runs the real app under uvicorn in this process with timing wrappers around decoding (in the batcher's
lane for a single image), the model's predict (queue + decode + inference) and the batcher's
inference, sends closed-loop c=1 traffic from a separate process (bench/loadgen.py) and prints the
p50/mean of each phase in milliseconds; the client's p50 minus the predict phase is HTTP, routing
and the thread hand-offs.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("bench.serving.phases")
TIMES: dict[str, list[float]] = {"decode": [], "predict (queue + decode + inference)": [], "inference": []}


def _timed_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TIMES[name].append(time.perf_counter() - started)
    return wrapper


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name].append(time.perf_counter() - started)
    return wrapper


def instrument() -> None:
    from service.inference import batching, predictor

    # A single image is decoded by the batcher's lane, several by the fair pool (Predictor._preprocess);
    # both call predictor.preprocess, bound when a Predictor is built (after this patch).
    predictor.Predictor._preprocess = _timed_async(  # type: ignore[method-assign]
        "decode (pool)", predictor.Predictor._preprocess)
    predictor.preprocess = _timed("decode", predictor.preprocess)  # type: ignore[attr-defined]
    batching.Batcher.submit_encoded = _timed_async(  # type: ignore[method-assign]
        "predict (queue + decode + inference)", batching.Batcher.submit_encoded)
    batching.Batcher._infer = _timed("inference", batching.Batcher._infer)  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="bootstrapped TUNESERVE_HOME")
    parser.add_argument("--duration", type=float, default=6.0)
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.update({"TUNESERVE_HOME": str(opts.home), "TUNESERVE_DEVICE": "cpu"})
    import httpx
    import uvicorn

    instrument()
    from bench.serving.serve import free_port
    from service.http.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    client = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from bench.serving.serve import load_jpegs\nfrom bench.loadgen import load_test, raw_request\n"
              "reqs = [raw_request('/v1/models/imagenet/predict?top_k=5', j, 'image/jpeg') for j in load_jpegs()]\n"
              f"print(load_test({port}, reqs, 1, duration_s={opts.duration}).summary())")
    out = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True, check=True)
    log.info("client: %s", out.stdout.strip())
    for name, values in TIMES.items():
        ms = np.asarray(values[20:]) * 1000.0  # the first requests warm caches
        log.info("%-28s n=%d p50 %.2f ms, mean %.2f ms", name, len(ms), np.percentile(ms, 50), ms.mean())
    server.should_exit = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
