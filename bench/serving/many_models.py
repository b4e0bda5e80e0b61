"""Many models per API process: cold-load latency and steady-state memory with 50 small models.

Registers 50 small classifiers (a real ONNX graph built here with onnx's helper API: two convolutions, global
pooling and a 1000-class head, 64x64 input, ~0.8 MB of weights) in a temp home, then runs ``tuneserve serve
--no-worker`` twice: without a budget (every model loaded at start and kept) and with
``TUNESERVE_MAX_LOADED_MODELS`` (models loaded on their first request, the least recently used unloaded).
Each run: time to ready and RSS at ready; a pass asking every model once (cold under the budget); a
second pass over every model (still cold: 50 models through a budget of 8); a hot set of 4 models asked
round-robin (warm); the API process's RSS after each pass. Latency is the client's, per request, over HTTP.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.many_models [--write]
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.docs import write_section  # noqa: E402
from bench.procs import rss_mib  # noqa: E402
from core.settings import Settings  # noqa: E402
from models import Registry  # noqa: E402
from models.manifest import Manifest, Preprocessing  # noqa: E402
from tests.integration.procs import Server, base_env  # noqa: E402

SECTION = "## Many models per process"
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.many_models --write"
MODELS = 50
BUDGET = 8
HOT = 4
HOT_ROUNDS = 10


def small_model(path: Path, seed: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"])]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=[weight("w1", 64, 3, 3, 3), weight("w2", 128, 64, 3, 3), weight("w3", 128, 1000),
                     weight("b3", 1000)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def populate(home: Path) -> None:
    registry = Registry(Settings(home=home).models_dir)
    labels = [f"class{i}" for i in range(1000)]
    for i in range(MODELS):
        manifest = Manifest(name=f"m{i:02d}", labels=labels, backbone="small",
                            preprocessing=Preprocessing(input_size=64, resize=72, crop=64))
        registry.register(manifest, small_model(home / f"m{i}.onnx", i), activate=True)
        (home / f"m{i}.onnx").unlink()


def photo() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def ask(api: Server, model: str, image: bytes) -> float:
    started = time.perf_counter()
    resp = api.http.post(f"/v1/models/{model}/predict", content=image, headers={"Content-Type": "image/jpeg"})
    elapsed = time.perf_counter() - started
    assert resp.status_code == 200, resp.text
    return elapsed * 1000


def unloads(api: Server) -> int:
    found = [line for line in api.http.get("/metrics").text.splitlines()
             if line.startswith("tuneserve_model_unloads_total ")]
    return int(float(found[0].split()[1])) if found else 0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run(home: Path, budget: int, image: bytes) -> dict[str, Any]:
    extra = {"TUNESERVE_MAX_LOADED_MODELS": str(budget), "TUNESERVE_INTRA_OP_THREADS": "0",
             "TUNESERVE_REFRESH_INTERVAL_S": "5"}
    api = Server(base_env(home, **extra), home / f"api-{budget}.log")
    try:
        started = time.perf_counter()
        api.wait_ready(timeout=600)
        result: dict[str, Any] = {"budget": budget, "ready_s": time.perf_counter() - started,
                                  "rss_ready": rss_mib(api.pid)}
        names = [f"m{i:02d}" for i in range(MODELS)]
        counts = [unloads(api)]
        result["first"] = [ask(api, n, image) for n in names]
        result["rss_first"] = rss_mib(api.pid)
        counts.append(unloads(api))
        result["second"] = [ask(api, n, image) for n in names]
        result["rss_second"] = rss_mib(api.pid)
        counts.append(unloads(api))
        result["hot"] = [ask(api, names[r % HOT], image) for r in range(HOT)]
        counts.append(unloads(api))
        result["hot"] += [ask(api, names[r % HOT], image) for r in range(HOT, HOT * HOT_ROUNDS)]
        counts.append(unloads(api))
        time.sleep(1)  # unloaded sessions are closed on a background thread
        result["rss_end"] = rss_mib(api.pid)
        result["unloads_passes"] = [after - before for before, after in itertools.pairwise(counts)]
        result["unloads"] = counts[-1]
        return result
    finally:
        api.stop()


def report(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        label = "no budget (all 50 loaded at start)" if r["budget"] == 0 else f"`TUNESERVE_MAX_LOADED_MODELS={BUDGET}`"
        rows.append(
            f"| {label} | {r['ready_s']:.1f} | {r['rss_ready']:.0f} | {statistics.median(r['first']):.1f} / "
            f"{pct(r['first'], 95):.1f} | {statistics.median(r['second']):.1f} | {statistics.median(r['hot']):.1f} | "
            f"{r['rss_second']:.0f} | {r['rss_end']:.0f} | {r['unloads']} |")
    no_budget, budgeted = runs
    u = budgeted["unloads_passes"]
    return "\n".join([
        SECTION, "",
        f"{MODELS} small classifiers (a real ONNX graph: two convolutions and a 1000-class head, 64x64 input, "
        "~0.8 MB of weights each, built by the benchmark) in one registry, one `tuneserve serve --no-worker` "
        "process per row, one JPEG per request over HTTP, one request at a time. *first pass*: every model "
        f"asked once (under the budget each is a cold load); *second pass*: every model again (50 models "
        f"through a budget of {BUDGET}: cold again); *hot set*: {HOT} models round-robin, {HOT * HOT_ROUNDS} "
        "requests. Latency in ms (median, or median / p95), RSS of the API process in MiB.", "",
        "| run | ready after (s) | RSS at ready | first pass | second pass | hot set | RSS after 2nd pass "
        "| RSS at end | unloads |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
        f"Reading: a cold load (session, warm-up of every batch shape, first answer) costs "
        f"{statistics.median(budgeted['first']) - statistics.median(no_budget['first']):.0f} ms over a warm "
        f"answer at the median; with the budget the process holds {budgeted['rss_end']:.0f} MiB instead of "
        f"{no_budget['rss_end']:.0f} MiB ({budgeted['rss_end'] / no_budget['rss_end']:.2f}x) and is ready in "
        f"{budgeted['ready_s']:.1f} s instead of {no_budget['ready_s']:.1f} s; each loaded model of this size "
        f"holds about {(no_budget['rss_end'] - budgeted['rss_end']) / (MODELS - BUDGET):.1f} MiB. Unloads: "
        f"{u[0]} in the first pass, {u[1]} in the second, {u[2]} in the hot set's first round, {u[3]} after it "
        "(models asked for often stay loaded). One run on this shared 2-core machine; "
        "single-request latencies of a few ms are noisy here.", "",
        f"Command: `{COMMAND}`", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = parser.parse_args()
    image = photo()
    with tempfile.TemporaryDirectory(prefix="many-models-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        populate(home)
        runs = [run(home, 0, image), run(home, BUDGET, image)]
    text = report(runs)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
