"""The HTTP phases of ``bench/gpu/gpu_e2e.py``: the real service under load, and fine-tuning jobs through the API."""

from __future__ import annotations

import os
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.loadgen import LoadResult, load_test, multipart_request
from bench.serving.serve import Server, free_port

MODEL_URL = "/v1/models/{name}"
PREDICT = "/v1/models/{name}/predict?top_k=1"


def start_service(home: Path, device: str, workers: int, extra_env: dict[str, str],
                  training_worker: bool = True) -> Server:
    """``tuneserve serve --workers N`` (with its training worker unless told not) and embedded Redis."""
    port = free_port()
    env = {"TUNESERVE_HOME": str(home), "TUNESERVE_DEVICE": "auto" if device == "cuda" else "cpu",
           "TUNESERVE_DECODER": "gpu", "TUNESERVE_VARIANT": "auto", "TUNESERVE_MAX_QUEUE": "100000",
           "TUNESERVE_BUILD_VARIANTS": "fp16" if device == "cuda" else "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH")])), **extra_env}
    if device == "cuda":
        env["LD_LIBRARY_PATH"] = cuda_library_path()
    cmd = [sys.executable, "-m", "tuneserve.cli", "serve", "--port", str(port), "--workers", str(workers)]
    cmd += [] if training_worker else ["--no-worker"]
    return Server(f"tuneserve-{workers}w", cmd, env, port, "/readyz")


def cuda_library_path() -> str:
    """The CUDA libraries pip wheels put under site-packages (the image's torch ones, the carried nvJPEG).

    On the lent machine onnxruntime-gpu lives in /tmp/site, apart from the image's nvidia/* wheels, so
    ``onnxruntime.preload_dlls`` (which looks beside onnxruntime) cannot find them in processes that do
    not import torch first, as the API processes never do: the loader path tells it."""
    dirs = [str(d) for entry in map(Path, sys.path) if entry.is_dir()
            for d in sorted(entry.glob("nvidia/*/lib")) + sorted(entry.glob("torch/lib"))]
    return os.pathsep.join(dict.fromkeys([*dirs, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]))


def keep_log(server: Server, out_dir: Path, lines: int = 400) -> str:
    """The server's log tail, copied beside the JSON (the whole log stays in the temp file)."""
    text = Path(server.log_file.name).read_text(errors="replace").splitlines()[-lines:]
    dest = out_dir / f"{server.name}.log"
    dest.write_text("\n".join(text) + "\n")
    return dest.name


def service_view(server: Server, name: str) -> dict[str, Any]:
    view = httpx.get(f"http://127.0.0.1:{server.port}{MODEL_URL.format(name=name)}", timeout=30).json()
    return {k: view.get(k) for k in ("serving_version", "provider", "variant", "decoder", "load_error")}


def multipart(path: str, payloads: list[bytes]) -> bytes:
    if len(payloads) == 1:
        return multipart_request(path, "file", "0.jpg", payloads[0])
    boundary = "tuneservee2eboundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{k}.jpg\"\r\n"
             f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for k, data in enumerate(payloads)]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    from bench.loadgen import raw_request

    return raw_request(path, body, f"multipart/form-data; boundary={boundary}")


def _load_part(args: tuple[int, list[bytes], int, float, int]) -> LoadResult:
    port, requests, concurrency, seconds, per_request = args
    return load_test(port, requests, concurrency, duration_s=seconds, max_requests=10_000_000,
                     images_per_request=per_request)


def load(port: int, jpegs: list[bytes], per_request: int, concurrency: int, seconds: float,
         procs: int) -> dict[str, Any]:
    """Closed-loop clients in ``procs`` load-generator processes (one asyncio process tops out below the
    service on a big machine); images/s summed, latencies pooled."""
    requests = [multipart(PREDICT.format(name="imagenet"), [jpegs[(i * per_request + k) % len(jpegs)]
                                                             for k in range(per_request)]) for i in range(16)]
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(_load_part, [(port, requests, c, seconds, per_request) for c in shares]))
    latencies = np.concatenate([np.asarray(p.latencies_ms) for p in parts]) if parts else np.zeros(1)
    wall = max(p.wall_s for p in parts)
    done = sum(p.requests for p in parts)
    return {"photos_per_request": per_request, "concurrency": concurrency, "requests": done,
            "errors": sum(p.errors for p in parts), "first_error": next((p.first_error for p in parts
                                                                          if p.first_error), ""),
            "images_per_s": round(done * per_request / wall, 1) if wall else 0.0,
            "p50_ms": round(float(np.percentile(latencies, 50)), 2) if len(latencies) else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 2) if len(latencies) else None,
            "load_processes": procs}


# ------------------------------------------------------------------ fine-tuning through the API
def cifar_archive(root: Path, dest: Path, train: int, val: int, test: int) -> dict[str, int]:
    """A zip with train/val/test class folders: train and val from CIFAR's train split, test from its test split."""
    counts = {"train": 0, "val": 0, "test": 0}
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for cls in sorted(p.name for p in (root / "train").iterdir() if p.is_dir()):
            train_files = sorted((root / "train" / cls).glob("*.jpg"))
            test_files = sorted((root / "test" / cls).glob("*.jpg"))[:test]
            for split, files in (("train", train_files[:train]), ("val", train_files[train : train + val]),
                                 ("test", test_files)):
                for f in files:
                    zf.write(f, f"cifar10/{split}/{cls}/{f.name}")
                counts[split] += len(files)
    return counts


def run_job(http: httpx.Client, body: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Post a job and follow it to its end (or cancel it at ``deadline``); its figures."""
    posted = time.monotonic()
    resp = http.post("/v1/jobs", json=body)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1.0)
    else:
        http.post(f"/v1/jobs/{job_id}/cancel")
        job = http.get(f"/v1/jobs/{job_id}").json()
        job["stopped_by_deadline"] = True
    result = job.get("result") or {}
    history = job.get("metrics")
    epochs: list[dict[str, Any]] = history if isinstance(history, list) else []
    metrics = version_metrics(http, body["model"], result.get("version"))
    best = metrics.get("best_epoch") or 0
    return {
        "id": job_id, "state": job.get("state"), "error": job.get("error"),
        "wall_s": round(time.monotonic() - posted, 1),
        "stopped_by_deadline": job.get("stopped_by_deadline", False),
        "result": result, "metrics": metrics,
        # training time until the epoch that was kept (the job's own clock, from its first epoch)
        "wall_s_to_best_epoch": epochs[best - 1].get("elapsed_s") if 0 < best <= len(epochs) else None,
        "epochs": epochs,
    }


def version_metrics(http: httpx.Client, name: str, version: int | None) -> dict[str, Any]:
    """The registered version's training metrics (val/test accuracy, images/s, best epoch, wall time)."""
    if version is None:
        return {}
    view = http.get(MODEL_URL.format(name=name)).json()
    return next((v["metrics"] for v in view.get("versions", []) if v["version"] == version), {})


def served_accuracy(port: int, name: str, root: Path, per_class: int, per_request: int) -> dict[str, Any]:
    """The active version of ``name`` over HTTP on CIFAR's test split (the service's own decoding path)."""
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    labels = http.get(MODEL_URL.format(name=name)).json()["labels"]
    items = [(f, cls) for cls in labels for f in sorted((root / "test" / cls).glob("*.jpg"))[:per_class]]
    correct, started = 0, time.perf_counter()
    for i in range(0, len(items), per_request):
        chunk = items[i : i + per_request]
        files = [("file", (f.name, f.read_bytes(), "image/jpeg")) for f, _ in chunk]
        resp = http.post(PREDICT.format(name=name), files=files)
        resp.raise_for_status()
        body = resp.json()
        correct += sum(r["predictions"][0]["label"] == cls for r, (_, cls) in zip(body["results"], chunk,
                                                                                   strict=True))
    version = body["version"] if items else None
    http.close()
    return {"version": version, "test_images": len(items), "accuracy": round(correct / max(1, len(items)), 4),
            "wall_s": round(time.perf_counter() - started, 1)}


def upload(http: httpx.Client, archive: Path) -> dict[str, Any]:
    with archive.open("rb") as fh:
        resp = http.post("/v1/datasets", files={"file": (archive.name, fh, "application/zip")})
    resp.raise_for_status()
    body = resp.json()
    return {"id": body["id"], "counts": body.get("counts"), "bytes": archive.stat().st_size}
