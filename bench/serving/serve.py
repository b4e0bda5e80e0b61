"""Serving benchmark: raw engine vs this service over HTTP vs a naive torch endpoint vs BentoML.

One run, one machine, the same real JPEGs (../shared/data/hymenoptera/val, mostly 500x375), the same
model (the bootstrapped ``imagenet`` EfficientNet-Lite0 ONNX file) and the same preprocessing:

(a) raw engine in-process: decode + preprocess + onnxruntime + softmax/top-k, measured the best way
    we know (decode pool pipelined with inference; several pool/batch shapes, the best reported),
    plus sequential single-image latency;
(b) this service: a real uvicorn process (``service.http.app:create_app``), concurrency 1, 8 and 32;
(c) bench/serving/naive_torch_app.py: FastAPI running the torch model per request;
(d) bench/serving/bentoml_service.py: BentoML with adaptive batching on the same ONNX file.

Run it under the bench lock (it needs the 2 cores to itself):

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.serve --home /tmp/perf-home --write-docs

``--home`` must hold a bootstrapped registry (``TUNESERVE_HOME=... tuneserve bootstrap``); without
it a temporary one is bootstrapped first (~40 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.data import shared_data
from bench.docs import write_section
from bench.loadgen import load_test, multipart_request, raw_request

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Serving"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.serve --home /tmp/perf-home --write-docs"
log = logging.getLogger("bench.serving.serve")
NOTES = """Defaults chosen from back-to-back comparisons of service configurations (`--compare`, each
configuration run twice, interleaved; c=1 images/s and p50 ms, then c=8 images/s, run 1/run 2).
First comparison (4 s per level): CPU lanes on, batch 1 (the default) 58.6/57.7, 15.9/16.2 ms,
103.1/99.3; lanes off (TUNESERVE_CPU_LANES=1, the previous default) 54.1/61.5, 16.6/15.1 ms,
88.9/90.5; lanes on + max batch 4: 56.2/56.2, 16.5/16.6 ms, 97.4/107.8; lanes off + max batch 8:
58.3/65.5, 15.9/14.5 ms, 91.1/95.1. Second comparison (5 s per level, a quieter moment): the
all-cores session's workers spinning (it only runs lone batches when lanes are on) 71.9/75.7,
12.4/11.3 ms, 123.0/119.4; sleeping 70.2/73.1, 13.6/12.6 ms, 119.7/123.3: spinning is the default
with lanes; since 2026-11-27 the spinning stops when a run returns (`session.force_spinning_stop`;
c=1, interleaved 15 s runs: p50 11.56/10.88 ms and p99 26.9/23.4 ms with the stop, 13.7/11.4 and
31.1/32.4 spinning on, 14.7/12.3 and 24.1/21.3 no spinning). A single-image request is decoded by
the lane that runs it (`--compare` against the decode pool, 8 s per level: c=1 p50 10.37/10.91 vs
10.83/11.16 ms, c=8 131.9/127.0 vs 130.8/124.7 images/s), and at low load the lane that went
idle last takes the next request (paired c=1 p99 17.1/19.3 ms against 22.2/30.7 ms with lanes
taking turns, same app otherwise). The int8 variant (static QDQ, per-channel, calibrated on training photos; this CPU
has AVX512-VNNI) ran 1.5-2.7x faster than fp32 in the raw engine with top-1 agreement 1.0 on the check
photos; serve it with TUNESERVE_VARIANT=int8 (`--int8-home` adds its rows here). JPEG draft decoding
only engages for photos at least 4x the resize target on the shorter side (DRAFT_MARGIN=4), so these
500x375 photos decode at full scale; see service/inference/preprocess.py for the parity measurements."""


# ------------------------------------------------------------------ inputs
def load_jpegs(limit: int = 200) -> list[bytes]:
    files = sorted((shared_data("hymenoptera") / "val").rglob("*.jpg"))[:limit]
    return [f.read_bytes() for f in files]


def ensure_home(home: Path | None) -> Path:
    if home is not None and (home / "models" / "imagenet").is_dir():
        return home
    home = home or Path(tempfile.mkdtemp(prefix="tuneserve-bench-"))
    env = {**os.environ, "TUNESERVE_HOME": str(home)}
    cmd = [sys.executable, "-m", "tuneserve.cli", "bootstrap", "--check-images", str(shared_data("imagenet_samples"))]
    subprocess.run(cmd, env=env, cwd=REPO, check=True)
    return home


def active_model(home: Path) -> Path:
    pointer = json.loads((home / "models" / "imagenet" / "ACTIVE").read_text())
    return home / "models" / "imagenet" / str(pointer["version"]) / "model.onnx"


# ------------------------------------------------------------------ (a) raw engine
def load_engine(model_file: Path):  # type: ignore[no-untyped-def]
    """The service's engine class on the CPU, warmed, and the model's preprocessing."""
    from core.settings import Settings
    from models.manifest import Manifest
    from service.inference.onnx_session import OnnxEngine

    pre = Manifest.model_validate_json((model_file.parent / "manifest.json").read_text()).preprocessing
    engine = OnnxEngine(model_file, Settings(device="cpu"))
    engine.warm_up(pre.crop, (1, 4, 8))
    return engine, pre


def single_latencies(engine, pre, jpegs: list[bytes], duration_s: float, min_count: int = 50,  # type: ignore[no-untyped-def]
                     start: int = 0) -> list[float]:
    """One image at a time, from photo ``start`` on: decode + infer + softmax/top-k, in ms each."""
    from service.inference.onnx_session import softmax, top_k
    from service.inference.preprocess import preprocess

    latencies = []
    stop = time.perf_counter() + duration_s
    for i in range(100_000):
        if time.perf_counter() > stop and i >= min_count:
            break
        started = time.perf_counter()
        x = preprocess(jpegs[(start + i) % len(jpegs)], pre, 40_000_000)
        top_k(softmax(engine.run(x[None])), 5)
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def raw_shapes(engine, pre, jpegs: list[bytes]) -> dict[str, Callable[[float], float]]:  # type: ignore[no-untyped-def]
    """Ways to run the raw engine at full throughput: name -> run for so many seconds, giving images/s."""
    from service.inference.onnx_session import cpu_cores

    cores = cpu_cores()
    shapes: dict[str, Callable[[float], float]] = {}
    for threads, batch in [(1, 1), (cores, 1), (cores, 4), (cores, 8)]:
        shapes[f"decode_threads={threads},batch={batch}"] = partial(_pipelined, engine, pre, jpegs, threads, batch)
    if engine.lanes > 1:  # what the service does under load: batches side by side, one thread each
        for batch in (1, 4):
            shapes[f"lanes={engine.lanes},decode_threads={cores},batch={batch}"] = partial(
                _pipelined_lanes, engine, pre, jpegs, cores, batch)
        # ... and, for single-image requests, each lane decodes its own image before running it
        shapes[f"lanes={engine.lanes},decode in the lane,batch=1"] = partial(_lanes_decoding, engine, pre, jpegs)
    return shapes


def raw_engine(model_file: Path, jpegs: list[bytes], duration_s: float) -> dict[str, object]:
    """Sequential single-image latency and the best pipelined throughput over a few shapes."""
    engine, pre = load_engine(model_file)
    lat = np.asarray(single_latencies(engine, pre, jpegs, duration_s)[5:])
    shapes = {name: run(duration_s / 2) for name, run in raw_shapes(engine, pre, jpegs).items()}
    best = max(shapes, key=lambda k: shapes[k])
    return {
        "single_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "single_p99_ms": round(float(np.percentile(lat, 99)), 2),
        "single_images_per_s": round(1000.0 / float(lat.mean()), 1),
        "pipelined": {k: round(v, 1) for k, v in shapes.items()},
        "best_shape": best,
        "images_per_s": round(shapes[best], 1),
    }


def _pipelined(engine, pre, jpegs: list[bytes], threads: int, batch: int, duration_s: float) -> float:  # type: ignore[no-untyped-def]
    """Decode pool runs ahead of inference by a bounded window; the main thread runs batches."""
    from service.inference.onnx_session import softmax, top_k
    from service.inference.preprocess import preprocess

    done = 0
    window = max(2 * batch, 2 * threads)
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(preprocess, jpegs[i % len(jpegs)], pre, 40_000_000) for i in range(window)]
        nxt = window
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            ready = [futures.pop(0).result() for _ in range(batch)]
            for _ in range(batch):
                futures.append(pool.submit(preprocess, jpegs[nxt % len(jpegs)], pre, 40_000_000))
                nxt += 1
            x = ready[0][None] if batch == 1 else np.stack(ready)
            top_k(softmax(engine.run(x)), 5)
            done += batch
        wall = time.perf_counter() - started
        for f in futures:
            f.cancel()
    return done / wall


def _pipelined_lanes(engine, pre, jpegs: list[bytes], threads: int, batch: int, duration_s: float) -> float:  # type: ignore[no-untyped-def]
    """``engine.lanes`` inference threads, each taking up to ``batch`` decoded images at a time and
    running them on the one-thread lane session; ``threads`` decode threads keep a bounded queue full."""
    import queue

    from service.inference.onnx_session import softmax, top_k

    ready: queue.Queue[np.ndarray] = queue.Queue(maxsize=2 * batch * engine.lanes + threads)
    stop = threading.Event()
    done = [0] * engine.lanes

    def decode(offset: int) -> None:
        for x in _decoded(jpegs, pre, offset, threads, stop):
            while not stop.is_set():
                try:
                    ready.put(x, timeout=0.05)
                    break
                except queue.Full:
                    continue

    def infer(lane: int) -> None:
        while not stop.is_set():
            try:
                xs = [ready.get(timeout=0.05)]
            except queue.Empty:
                continue
            while len(xs) < batch:
                try:
                    xs.append(ready.get_nowait())
                except queue.Empty:
                    break
            top_k(softmax(engine.run(np.stack(xs), lane=True)), 5)
            done[lane] += len(xs)

    workers = [threading.Thread(target=decode, args=(i,)) for i in range(threads)]
    workers += [threading.Thread(target=infer, args=(lane,)) for lane in range(engine.lanes)]
    return _images_per_s(workers, done, stop, duration_s)


def _lanes_decoding(engine, pre, jpegs: list[bytes], duration_s: float) -> float:  # type: ignore[no-untyped-def]
    """``engine.lanes`` threads, each decoding one image and running it on the one-thread lane session."""
    from service.inference.onnx_session import softmax, top_k

    stop = threading.Event()
    done = [0] * engine.lanes

    def lane(index: int) -> None:
        for x in _decoded(jpegs, pre, index, engine.lanes, stop):
            top_k(softmax(engine.run(x[None], lane=True)), 5)
            done[index] += 1

    workers = [threading.Thread(target=lane, args=(k,)) for k in range(engine.lanes)]
    return _images_per_s(workers, done, stop, duration_s)


def _decoded(jpegs: list[bytes], pre, start: int, step: int, stop: threading.Event) -> Iterator[np.ndarray]:  # type: ignore[no-untyped-def]
    """Preprocessed photos ``start``, ``start + step``, ... (round the list) until ``stop`` is set: one
    worker's share when ``step`` workers walk the photos together."""
    from service.inference.preprocess import preprocess

    i = start
    while not stop.is_set():
        yield preprocess(jpegs[i % len(jpegs)], pre, 40_000_000)
        i += step


def _images_per_s(workers: list[threading.Thread], done: list[int], stop: threading.Event,
                  duration_s: float) -> float:
    """Start ``workers``, let them warm up (queues full, every lane running), then count the images
    they finish (``done``, one counter per lane) over ``duration_s``; stop and join them."""
    for w in workers:
        w.start()
    time.sleep(min(1.0, duration_s / 4))
    start_count, started = sum(done), time.perf_counter()
    time.sleep(duration_s)
    count, wall = sum(done) - start_count, time.perf_counter() - started
    stop.set()
    for w in workers:
        w.join()
    return count / wall


def paired_c1(engine, pre, jpegs: list[bytes], port: int, requests: list[bytes], duration_s: float,  # type: ignore[no-untyped-def]
              slices: int = 6) -> dict[str, float]:
    """The raw engine's single-image latency and the service's c=1 latency, in alternating slices.

    On a shared VM the background load comes and goes in bursts of a fraction of a second; measured
    one after the other, whichever ran in a noisy moment loses its p99. Alternating short slices
    (raw, service, raw, service, ...) exposes both to the same moments. Each side's slice goes on
    from the photo where its previous slice stopped, so both see the mix of a continuous run."""
    slice_s = 2 * duration_s / slices
    raw: list[float] = []
    service: list[float] = []
    for _ in range(slices):
        raw += single_latencies(engine, pre, jpegs, slice_s, start=len(raw))
        at = len(service) % len(requests)
        service += load_test(port, requests[at:] + requests[:at], 1, duration_s=slice_s, max_requests=20_000,
                             warmup_requests=2).latencies_ms
    r, s = np.asarray(raw), np.asarray(service)
    out = {"slices": slices, "slice_s": round(slice_s, 2), "raw_n": len(r), "service_n": len(s)}
    for name, lat in (("raw", r), ("service", s)):
        out[f"{name}_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
        out[f"{name}_p99_ms"] = round(float(np.percentile(lat, 99)), 2)
    return out


def paired_c8(engine, pre, jpegs: list[bytes], port: int, requests: list[bytes], shape: str,  # type: ignore[no-untyped-def]
              duration_s: float, slices: int = 4) -> dict[str, object]:
    """The raw engine's throughput in ``shape`` and the service's at c=8, in alternating slices (see
    ``paired_c1``): the before/after means cannot cancel a noisy stretch in the middle."""
    run_shape = raw_shapes(engine, pre, jpegs)[shape]
    slice_s = 2 * duration_s / slices
    raw: list[float] = []
    service: list[float] = []
    for _ in range(slices):
        raw.append(run_shape(slice_s))
        service.append(load_test(port, requests, 8, duration_s=slice_s, max_requests=100_000).images_per_s)
    return {"slices": slices, "slice_s": round(slice_s, 2), "shape": shape,
            "raw_images_per_s": round(float(np.mean(raw)), 1),
            "service_images_per_s": round(float(np.mean(service)), 1),
            "raw_per_slice": [round(x, 1) for x in raw], "service_per_slice": [round(x, 1) for x in service]}


# ------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess in its own process group, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.name, self.port = name, port
        # Open for the server's whole life (closed in stop()), kept afterwards for post-mortems.
        self.log_file = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env={**os.environ, **env}, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_file.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_file.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


def uvicorn_cmd(target: str, port: int, factory: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning"]
    return cmd + (["--factory"] if factory else [])


def measure(server: Server, requests: list[bytes], levels: list[int], duration_s: float) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for c in levels:
        res = load_test(server.port, requests, c, duration_s=duration_s, max_requests=20_000)
        out[c] = res.summary()
        log.info("%s c=%d: %s", server.name, c, out[c])
    return out


def run_service(
    home: Path, jpegs: list[bytes], levels: list[int], duration_s: float, extra_env: dict[str, str] | None = None,
    paired_with: tuple[Path, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The service at each concurrency level; with ``paired_with`` (the raw engine's model file and
    its best shape) also its c=1 latency and c=8 throughput in slices alternating with the raw
    engine's (keys ``"paired_c1"``, ``"paired_c8"``)."""
    port = free_port()
    env = {"TUNESERVE_HOME": str(home), "TUNESERVE_DEVICE": "cpu", **(extra_env or {})}
    server = Server("service", uvicorn_cmd("service.http.app:create_app", port, factory=True), env, port, "/readyz")
    try:
        reqs = [raw_request("/v1/models/imagenet/predict?top_k=5", j, "image/jpeg") for j in jpegs]
        out: dict[int | str, dict[str, Any]] = {c: res for c, res in measure(server, reqs, levels, duration_s).items()}
        if paired_with is not None:
            engine, pre = load_engine(paired_with[0])
            out["paired_c1"] = paired_c1(engine, pre, jpegs, port, reqs, duration_s)
            log.info("paired c=1: %s", out["paired_c1"])
            out["paired_c8"] = paired_c8(engine, pre, jpegs, port, reqs, paired_with[1], duration_s)
            log.info("paired c=8: %s", out["paired_c8"])
        return out
    finally:
        server.stop()


def compare_configs(home: Path, jpegs: list[bytes], configs: str, levels: list[int], duration_s: float) -> str:
    """Service configurations back to back, interleaved twice (A B C, A B C) to spread drift."""
    envs = []
    for config in configs.split(";"):
        pairs = [] if config.strip() == "default" else config.split()
        envs.append((config.strip(), dict(pair.split("=", 1) for pair in pairs)))
    rows: dict[str, list[dict[int | str, dict[str, Any]]]] = {name: [] for name, _ in envs}
    for _ in range(2):
        for name, env in envs:
            rows[name].append(run_service(home, jpegs, levels, duration_s, env))
    head = " | ".join(f"c={c} images/s (run 1/2), p50 ms" for c in levels)
    lines = [f"| configuration | {head} |", "| --- |" + " --- |" * len(levels)]
    for name, runs in rows.items():
        cells = [f"{runs[0][c]['images_per_s']}/{runs[1][c]['images_per_s']}, "
                 f"{runs[0][c]['p50_ms']}/{runs[1][c]['p50_ms']}" for c in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_naive(jpegs: list[bytes], levels: list[int], duration_s: float) -> dict[int, dict[str, Any]]:
    port = free_port()
    server = Server("naive-torch", uvicorn_cmd("bench.serving.naive_torch_app:app", port), {}, port, "/healthz")
    try:
        reqs = [raw_request("/predict?top_k=5", j, "image/jpeg") for j in jpegs]
        return measure(server, reqs, levels, duration_s)
    finally:
        server.stop()


def run_bentoml(model_file: Path, jpegs: list[bytes], levels: list[int],
                duration_s: float) -> dict[int, dict[str, Any]]:
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent))
    if bentoml is None:
        raise RuntimeError("bentoml is not installed (pip install 'tuneserve[bench]')")
    port = free_port()
    bento_home = tempfile.mkdtemp(prefix="bentoml-home-")
    env = {"TUNESERVE_BENCH_MODEL": str(model_file), "BENTOML_HOME": bento_home, "BENTOML_DO_NOT_TRACK": "True"}
    cmd = [bentoml, "serve", "bench.serving.bentoml_service:Classifier", "--host", "127.0.0.1", "--port", str(port)]
    server = Server("bentoml", cmd, env, port, "/readyz")
    try:
        reqs = [multipart_request("/predict", "image", f"{i}.jpg", j) for i, j in enumerate(jpegs)]
        return measure(server, reqs, levels, duration_s)
    finally:
        server.stop()
        shutil.rmtree(bento_home, ignore_errors=True)


def mean_raw(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    keys = ("single_p50_ms", "single_p99_ms", "single_images_per_s", "images_per_s")
    out = {k: round((a[k] + b[k]) / 2, 2) for k in keys}
    out["best_shape"] = f"before: {a['best_shape']} {a['images_per_s']}; after: {b['best_shape']} {b['images_per_s']}"
    out["pipelined"] = {f"{k} (before/after)": f"{a['pipelined'][k]}/{b['pipelined'][k]}" for k in a["pipelined"]}
    return out


# ------------------------------------------------------------------ report
def ratios(res: dict[str, Any]) -> dict[str, float | None]:
    svc = res["service"]
    raw = res["raw"]
    out: dict[str, float | None] = {
        "service_c8 / raw_engine": svc[8]["images_per_s"] / raw["images_per_s"],
        "service_c1_p99 / raw_single_p50": svc[1]["p99_ms"] / raw["single_p50_ms"],
        "service_c1_p99 / raw_single_p99": svc[1]["p99_ms"] / raw["single_p99_ms"],
    }
    paired8 = res.get("paired_c8")
    if isinstance(paired8, dict):
        out["service_c8 / raw_engine, alternating slices"] = (
            paired8["service_images_per_s"] / paired8["raw_images_per_s"])
    paired = res.get("paired_c1")
    if isinstance(paired, dict):
        out["service_c1_p99 / raw_single_p99, alternating slices"] = paired["service_p99_ms"] / paired["raw_p99_ms"]
        out["service_c1_p50 / raw_single_p50, alternating slices"] = paired["service_p50_ms"] / paired["raw_p50_ms"]
    for peer in ("naive", "bentoml"):
        peer_res = res.get(peer)
        if isinstance(peer_res, dict) and 8 in peer_res and peer_res[8]["images_per_s"] > 0:
            out[f"service_c8 / {peer}_c8"] = svc[8]["images_per_s"] / peer_res[8]["images_per_s"]
        else:
            out[f"service_c8 / {peer}_c8"] = None
    return {k: (round(v, 3) if v is not None else None) for k, v in out.items()}


def markdown(res: dict[str, Any], rat: dict[str, float | None], meta: dict[str, Any]) -> str:
    raw = res["raw"]
    when = ", mean of before/after the HTTP runs" if "raw_after" in res else ", measured before the HTTP runs"
    lines = [
        SECTION, "",
        f"Command: `{meta.get('command', COMMAND)}`", "",
        f"Machine: {meta['machine']}; load average before/after: {meta['load_before']} / {meta['load_after']} "
        f"(other work on the machine makes numbers noisy). {meta['images']} real JPEGs "
        "(hymenoptera val, mostly 500x375), EfficientNet-Lite0 224 px, onnxruntime CPU; each HTTP level "
        f"runs {meta['duration_s']} s after a warm-up, closed-loop clients (bench/loadgen.py) on 127.0.0.1.", "",
        "| what | concurrency | images/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |",
        f"| raw engine, one image at a time (decode+infer){when} | 1 | "
        f"{raw['single_images_per_s']} | {raw['single_p50_ms']} | {raw['single_p99_ms']} |",
        f"| raw engine, best pipelined{when} ({raw['best_shape']}) | - | {raw['images_per_s']} | | |",
    ]
    paired = res.get("paired_c1")
    if isinstance(paired, dict):
        how = f"{paired['slices']} slices of {paired['slice_s']} s each, alternating"
        lines.append(f"| raw engine, one image at a time ({how} with the next row) | 1 | | "
                     f"{paired['raw_p50_ms']} | {paired['raw_p99_ms']} |")
        lines.append(f"| tuneserve service (HTTP) ({how} with the row above) | 1 | | "
                     f"{paired['service_p50_ms']} | {paired['service_p99_ms']} |")
    paired8 = res.get("paired_c8")
    if isinstance(paired8, dict):
        how = f"{paired8['slices']} slices of {paired8['slice_s']} s each, alternating"
        lines.append(f"| raw engine, {paired8['shape']} ({how} with the next row; per slice "
                     f"{paired8['raw_per_slice']}) | - | {paired8['raw_images_per_s']} | | |")
        lines.append(f"| tuneserve service (HTTP) ({how} with the row above; per slice "
                     f"{paired8['service_per_slice']}) | 8 | {paired8['service_images_per_s']} | | |")
    if isinstance(res.get("raw_int8"), dict):
        r8 = res["raw_int8"]
        lines.append(f"| raw engine int8 variant, one image at a time | 1 | {r8['single_images_per_s']} | "
                     f"{r8['single_p50_ms']} | {r8['single_p99_ms']} |")
        lines.append(f"| raw engine int8 variant, best pipelined ({r8['best_shape']}) | - | {r8['images_per_s']} | | |")
    names = {"service": "tuneserve service (HTTP)", "naive": "naive FastAPI + torch per request",
             "bentoml": "BentoML, adaptive batching, same ONNX", "service_int8": "tuneserve service, int8 variant"}
    for key, label in names.items():
        val = res.get(key)
        if key == "service_int8" and val is None:
            continue
        if not isinstance(val, dict):
            lines.append(f"| {label} | - | not measured: {val} | | |")
            continue
        for c, row in val.items():
            err = f" ({row['errors']} errors)" if row["errors"] else ""
            lines.append(f"| {label} | {c} | {row['images_per_s']}{err} | {row['p50_ms']} | {row['p99_ms']} |")
    lines += ["", "Raw engine shapes tried (images/s): " + ", ".join(f"{k}: {v}" for k, v in raw["pipelined"].items()),
              "", "| ratio | value | target |", "| --- | --- | --- |"]
    targets = {"service_c8 / raw_engine": ">= 0.9",
               "service_c8 / raw_engine, alternating slices": ">= 0.9", "service_c8 / naive_c8": ">= 2",
               "service_c8 / bentoml_c8": ">= 1.5", "service_c1_p99 / raw_single_p50": "<= 1.25",
               "service_c1_p99 / raw_single_p99": "<= 1.25",
               "service_c1_p99 / raw_single_p99, alternating slices": "<= 1.25"}
    for k, v in rat.items():
        lines.append(f"| {k} | {v} | {targets.get(k, '')} |")
    return "\n".join([*lines, "", NOTES]) + "\n"




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="bootstrapped TUNESERVE_HOME")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--skip", default="", help="comma list of: naive,bentoml")
    parser.add_argument("--write-docs", action="store_true", help="write the results into docs/benchmarks.md")
    parser.add_argument("--int8-home", type=Path, default=None,
                        help="also measure the int8 variant (a home bootstrapped with --variants)")
    parser.add_argument("--compare", default="",
                        help="only compare service configurations: ';'-separated env settings, each a "
                             "space-separated list of VAR=VALUE ('default' = none), e.g. "
                             "'default;TUNESERVE_CPU_LANES=1'")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    levels = [int(x) for x in opts.levels.split(",")]
    skip = set(filter(None, opts.skip.split(",")))
    home = ensure_home(opts.home)
    if opts.compare:
        print(compare_configs(home, load_jpegs(), opts.compare, levels, opts.duration))
        return 0
    model_file = active_model(home)
    jpegs = load_jpegs()
    args = sys.argv[1:] if argv is None else argv
    meta = {"command": " ".join(["flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.serve", *args]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "images": len(jpegs),
            "duration_s": opts.duration, "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    res: dict[str, object] = {"raw": raw_engine(model_file, jpegs, opts.duration)}
    log.info("raw engine: %s", res["raw"])
    paired = (model_file, str(res["raw"]["best_shape"])) if {1, 8} <= set(levels) else None  # type: ignore[index]
    service = run_service(home, jpegs, levels, opts.duration, paired_with=paired)
    res["paired_c1"] = service.pop("paired_c1", None)
    res["paired_c8"] = service.pop("paired_c8", None)
    res["service"] = service
    peers: list[tuple[str, Callable[[], dict[int, dict[str, Any]]]]] = [
        ("naive", lambda: run_naive(jpegs, levels, opts.duration)),
        ("bentoml", lambda: run_bentoml(model_file, jpegs, levels, opts.duration))]
    for name, fn in peers:
        if name in skip:
            res[name] = "skipped"
            continue
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a peer that can't run is reported, not fatal
            log.error("%s failed: %s", name, exc)
            res[name] = f"failed: {exc}"
    if opts.int8_home is not None:
        info = json.loads((active_model(opts.int8_home).parent / "manifest.json").read_text())
        int8_file = active_model(opts.int8_home).parent / info["variants"]["int8"]["file"]
        res["raw_int8"] = raw_engine(int8_file, jpegs, opts.duration)
        res["service_int8"] = run_service(opts.int8_home, jpegs, levels, opts.duration, {"TUNESERVE_VARIANT": "int8"})
    # Background load on a shared machine drifts; measuring the raw engine before and after the HTTP
    # runs and comparing against the mean keeps the ratios from favouring whichever ran in the quiet.
    res["raw_before"] = res["raw"]
    res["raw_after"] = raw_engine(model_file, jpegs, opts.duration)
    res["raw"] = mean_raw(res["raw_before"], res["raw_after"])  # type: ignore[arg-type]
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rat = ratios(res)
    print(json.dumps({"results": res, "ratios": rat, "meta": meta}, indent=2, default=str))
    text = markdown(res, rat, meta)
    print(text)
    if opts.write_docs:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
