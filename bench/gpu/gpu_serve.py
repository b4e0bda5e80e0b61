"""GPU serving check in one script: raw onnxruntime fp16 vs torch fp16, decode, and the service over HTTP.

On the H100 (see ../shared/GPU.md for carrying onnxruntime-gpu and the web stack):

    ../shared/tools/gpu-pack fastapi uvicorn python-multipart pydantic-settings celery redis sqlalchemy
    # ... part calls, then in the last call:
    source .gpu/unpack.sh && python3 -m bench.gpu.gpu_serve --device cuda

Here, end to end on the CPU in about a minute:

    .venv/bin/python -m bench.gpu.gpu_serve --device cpu --quick

It prints one JSON object. Targets: service >= 10,000 images/s end to end (500x375 JPEGs, several per
request); onnxruntime fp16 (IO binding) >= 0.8x torch fp16 channels_last on the model alone.
The model is the real EfficientNet-Lite0 when its weights package is importable, otherwise the same
architecture with random weights (speed is the same; the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from bench.data import shared_data  # noqa: E402  (after the path insert: run as a script on the device)

log = logging.getLogger("bench.gpu.gpu_serve")


# ------------------------------------------------------------------ model
def torch_model() -> tuple[Any, str]:
    """EfficientNet-Lite0 in eval mode: pretrained if the weights are at hand, else random (same speed)."""
    try:
        from trainer.backbones import create_backbone

        return create_backbone().model.eval(), "pretrained"
    except Exception as exc:  # noqa: BLE001 - the GPU image may lack the weights package
        import timm

        log.warning("pretrained weights unavailable (%s): random weights, speed only", exc)
        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).eval(), "random"


def prepare_home(home: Path, model: Any, weights: str) -> Path:
    """A registry with ``imagenet`` v1: dynamo-exported fp32 ONNX plus its fp16 variant."""
    import torch

    from core.fsutil import sha256_file
    from models import Manifest, Registry
    from models.manifest import Preprocessing, Variant
    from trainer.publish.export import export_onnx
    from trainer.publish.variants import convert_fp16

    registry = Registry(home / "models")
    if registry.exists("imagenet") and registry.active_version("imagenet") is not None:
        return home
    pre = Preprocessing()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        check = torch.rand(4, 3, pre.crop, pre.crop) * 2 - 1
        export_onnx(model.cpu().float(), pre.crop, fp32, check)
        fp16 = convert_fp16(fp32, Path(tmp) / "model.fp16.onnx")
        labels = [f"class_{i}" for i in range(1000)]
        manifest = Manifest(
            name="imagenet", labels=labels, preprocessing=pre, backbone="efficientnet_lite0",
            source={"kind": "bench", "weights": weights},
            variants={"fp16": Variant(file=fp16.name, sha256=sha256_file(fp16))},
        )
        registry.register(manifest, fp32, extra_files={fp16.name: fp16}, activate=True)
    return home


# ------------------------------------------------------------------ raw engines
def bench_torch(model: Any, device: str, batch: int, seconds: float) -> float:
    import torch

    dtype = torch.float16 if device == "cuda" else torch.float32
    net = model.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        _sync(device)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            net(x)
            done += batch
        _sync(device)
    return done / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bench_ort(model_file: Path, device: str, batch: int, seconds: float) -> dict[str, float]:
    """The model alone (input already on the device) and the service's engine path (host numpy in/out)."""
    import onnxruntime as ort

    from core.settings import Settings
    from service.inference.onnx_session import CUDA, OnnxEngine

    engine = OnnxEngine(model_file, Settings(device=device))
    host = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    engine.warm_up(224, (batch,))
    out: dict[str, float] = {"engine_host_io": _loop(lambda: engine.run(host), batch, seconds)}
    if engine.provider == CUDA:
        session = engine.session
        binding = session.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(host, "cuda", 0)
        binding.bind_ortvalue_input(engine.input_name, x)
        binding.bind_output(engine.output_name, "cuda")

        def run_bound() -> None:
            session.run_with_iobinding(binding)

        run_bound()
        out["device_io"] = _loop(run_bound, batch, seconds)  # run_with_iobinding waits for the GPU
    out["provider"] = engine.provider  # type: ignore[assignment]
    return out


def _loop(fn: Any, batch: int, seconds: float) -> float:
    fn()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        done += batch
    return done / (time.perf_counter() - started)


# ------------------------------------------------------------------ decode
def jpegs_500x375(limit: int) -> list[bytes]:
    from PIL import Image

    out = []
    for f in sorted((shared_data("hymenoptera") / "val").rglob("*.jpg")):
        with Image.open(f) as im:
            if im.size == (500, 375):
                out.append(f.read_bytes())
        if len(out) >= limit:
            break
    return out


def bench_decode(jpegs: list[bytes], threads: int, seconds: float) -> float:
    from models.manifest import Preprocessing
    from service.inference.preprocess import preprocess

    pre = Preprocessing()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda d: preprocess(d, pre, 40_000_000), jpegs[:threads]))
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            list(pool.map(lambda d: preprocess(d, pre, 40_000_000), jpegs))
            done += len(jpegs)
    return done / (time.perf_counter() - started)


# ------------------------------------------------------------------ service
def bench_service(home: Path, opts: argparse.Namespace, jpegs: list[bytes]) -> dict[str, Any]:
    from bench.loadgen import load_test
    from bench.serving.serve import Server, free_port

    port = free_port()
    env = {
        "TUNESERVE_HOME": str(home), "TUNESERVE_DEVICE": opts.device if opts.device == "cpu" else "auto",
        "TUNESERVE_VARIANT": "fp16" if opts.device == "cuda" else "fp32",
        "TUNESERVE_DECODE_THREADS": str(opts.decode_threads), "TUNESERVE_MAX_QUEUE": "100000",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if opts.max_batch:
        env["TUNESERVE_MAX_BATCH_SIZE"] = str(opts.max_batch)
    cmd = [sys.executable, "-m", "uvicorn", "service.http.app:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", str(opts.workers)]
    started = time.perf_counter()
    server = Server("service", cmd, env, port, "/readyz")
    ready_s = time.perf_counter() - started
    try:
        requests = [_multipart(jpegs, i, opts.images_per_request) for i in range(16)]
        res = load_test(port, requests, opts.concurrency, duration_s=opts.seconds, max_requests=1_000_000,
                        images_per_request=opts.images_per_request)
        return {**res.summary(), "images_per_request": opts.images_per_request, "workers": opts.workers,
                "decode_threads_per_worker": opts.decode_threads, "ready_s": round(ready_s, 1),
                "server_log": server.log_file.name}
    finally:
        server.stop()


def _multipart(jpegs: list[bytes], start: int, n: int) -> bytes:
    from bench.loadgen import raw_request

    boundary = "gpuservebenchboundary"
    parts = []
    for k in range(n):
        data = jpegs[(start * n + k) % len(jpegs)]
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{k}.jpg\"\r\n"
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return raw_request("/v1/models/imagenet/predict?top_k=1", body, f"multipart/form-data; boundary={boundary}")


# ------------------------------------------------------------------ main
def parse(argv: list[str] | None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="small batches and short runs (CPU smoke test)")
    p.add_argument("--home", type=Path, default=None, help="a registry with imagenet + fp16 (else built)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--workers", type=int, default=max(1, cores // 4))
    p.add_argument("--decode-threads", type=int, default=4)
    p.add_argument("--images-per-request", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=0, help="service max_batch_size (0 = device default)")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.batch, opts.seconds, opts.workers = 8, 2.0, 1
        opts.decode_threads, opts.images_per_request, opts.concurrency = 2, 4, 4
    return opts


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    opts = parse(argv)
    t0 = time.perf_counter()
    model, weights = torch_model()
    home = prepare_home(opts.home or Path(tempfile.mkdtemp(prefix="gpu-serve-")), model, weights)
    from models import Registry

    info = Registry(home / "models").get("imagenet")
    result: dict[str, Any] = {"device": opts.device, "weights": weights, "batch": opts.batch, "home": str(home),
                              "prepare_s": round(time.perf_counter() - t0, 1)}
    if opts.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name()
    result["torch_images_per_s"] = round(bench_torch(model, opts.device, opts.batch, opts.seconds), 1)
    result["torch_dtype"] = "fp16 channels_last" if opts.device == "cuda" else "fp32 channels_last"
    model.cpu()
    variant = info.file("fp16") if opts.device == "cuda" else info.model_path
    ort_res = bench_ort(variant, opts.device, opts.batch, opts.seconds)
    result["ort_variant"] = "fp16" if opts.device == "cuda" else "fp32"
    result["ort"] = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in ort_res.items()}
    best_ort = ort_res.get("device_io", ort_res["engine_host_io"])
    result["ort_vs_torch"] = round(best_ort / result["torch_images_per_s"], 3)
    jpegs = jpegs_500x375(64)
    cores = len(os.sched_getaffinity(0))
    result["pil_decode_images_per_s"] = {
        "1_thread": round(bench_decode(jpegs, 1, opts.seconds / 2), 1),
        f"{cores}_threads": round(bench_decode(jpegs, cores, opts.seconds / 2), 1),
    }
    result["service"] = bench_service(home, opts, jpegs)
    result["targets"] = {
        "service_images_per_s >= 10000": result["service"]["images_per_s"] >= 10_000,
        "ort_vs_torch >= 0.8": result["ort_vs_torch"] >= 0.8,
    }
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
