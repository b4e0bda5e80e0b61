"""What the console's data costs: job event sizes (whole job per event vs snapshot + deltas) and the
price of ``predict?explain=true`` on the CPU (off vs on, alternating, same photos, same process).

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.console --write-docs
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.data import shared_data
from bench.docs import write_section

log = logging.getLogger(__name__)
COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.serving.console --write-docs"


def event_sizes(epochs: int = 30) -> dict[str, float]:
    """Bytes per SSE event of a job that records ``epochs`` epochs (EpochMetrics' fields, real magnitudes)."""
    from jobs import JobStore
    from service.http.reports import job_delta
    from service.http.routes.jobs import job_view

    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(f"sqlite:///{tmp}/jobs.db")
        spec = {"mode": "finetune", "max_epochs": epochs, "lr": "auto", "augment": "light", "batch_size": 32}
        job = store.create("bees", "0123456789abcdef", spec)
        store.claim(job.id, "w", 60, 3)
        views = [job_view(store.get(job.id), 60.0)]
        for epoch in range(1, epochs + 1):
            metric = {"epoch": epoch, "epochs": epochs, "stage": "finetune", "train_loss": 0.6931 / epoch ** 0.5,
                      "val_loss": 0.7123 / epoch ** 0.4, "val_accuracy": min(0.99, 0.5 + epoch / 60), "lr": 1e-3,
                      "images_per_s": 41.73, "elapsed_s": 12.5 * epoch, "eta_s": 12.5 * (epochs - epoch)}
            progress = {"epoch": epoch, "epochs": epochs, "stage": "finetune", "fraction": epoch / epochs,
                        "eta_s": 12.5 * (epochs - epoch), "images_per_s": 41.73}
            store.record_progress(job.id, "w", progress, metric)
            views.append(job_view(store.get(job.id), 60.0))
        store.dispose()
    whole = [len(json.dumps(v)) for v in views]
    deltas = [whole[0]] + [len(json.dumps(job_delta(a, b))) for a, b in itertools.pairwise(views)]
    return {"epochs": epochs, "whole_last": whole[-1], "whole_mean": statistics.mean(whole),
            "whole_total": sum(whole), "delta_max": max(deltas[1:]), "delta_mean": statistics.mean(deltas[1:]),
            "snapshot": deltas[0], "delta_total": sum(deltas)}


def explain_cost(rounds: int) -> dict[str, float]:
    """Median request latency, explain off vs on, one client, the real ImageNet model on the CPU."""
    from fastapi.testclient import TestClient

    from core.settings import Settings
    from models import Registry
    from service.http.app import create_app
    from trainer.publish.bootstrap import bootstrap

    photos_dir = shared_data("imagenet_samples")
    photos = [p.read_bytes() for p in sorted(photos_dir.glob("*.JPEG"))][:40]
    home = Path(tempfile.mkdtemp(prefix="bench-console-"))
    registry = Registry(home / "models")
    bootstrap(registry, Settings(home=home), check_images=photos_dir)
    register_without_features(registry, home)
    times: dict[str, list[float]] = {"old": [], "off": [], "on": []}
    with TestClient(create_app(Settings(home=home, device="cpu"))) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.1)
        modes = (("old", "imagenet-old", ""), ("off", "imagenet", ""), ("on", "imagenet", "?explain=true"))
        for data in photos[:5]:  # warm-up, every path
            for _, model, q in modes:
                client.post(f"/v1/models/{model}/predict{q}", content=data, headers={"content-type": "image/jpeg"})
        for _ in range(rounds):
            for data in photos:
                for mode, model, q in modes:  # alternating request by request: the same load on each
                    start = time.perf_counter()
                    resp = client.post(f"/v1/models/{model}/predict{q}", content=data,
                                       headers={"content-type": "image/jpeg"})
                    times[mode].append((time.perf_counter() - start) * 1000)
                    assert resp.status_code == 200, resp.text
        size = len(resp.content)
        parts = engine_parts(client.app.state.manager, photos)  # type: ignore[attr-defined]
    return {**parts,"images": len(photos), "rounds": rounds, "old_p50": statistics.median(times["old"]),
            "old_mean": statistics.mean(times["old"]), "off_p50": statistics.median(times["off"]),
            "on_p50": statistics.median(times["on"]), "off_mean": statistics.mean(times["off"]),
            "on_mean": statistics.mean(times["on"]), "on_bytes": size}


def engine_parts(manager: object, photos: list[bytes], reps: int = 5) -> dict[str, float]:
    """Per image, in-process (no HTTP, no queueing): the median of ``reps`` alternating runs of each path."""
    import numpy as np

    from service.inference.explain import crop_box, explanation, oriented_size
    from service.inference.preprocess import preprocess

    new, old = manager.get("imagenet"), manager.get("imagenet-old")  # type: ignore[attr-defined]
    try:
        head, pre = new.cam_head(), new.preprocessing
        runs: dict[str, list[float]] = {"old": [], "off": [], "on": [], "draw": []}
        for data in photos:
            batch = preprocess(data, pre, 10**8)[None]
            for _ in range(reps):
                t0 = time.perf_counter()
                old.engine.run(batch)
                t1 = time.perf_counter()
                new.engine.run(batch)
                t2 = time.perf_counter()
                logits, feats = new.engine.run_outputs(batch, [new.engine.output_name, head.output])
                t3 = time.perf_counter()
                top = logits.argmax(1)
                explanation(head.maps(feats, top)[0], "x", int(top[0]), crop_box(*oriented_size(data, 10**8), pre),
                            pre.crop)
                t4 = time.perf_counter()
                for key, dt in (("old", t1 - t0), ("off", t2 - t1), ("on", t3 - t2 + t4 - t3), ("draw", t4 - t3)):
                    runs[key].append(dt * 1000)
        return {f"engine_{k}": float(np.median(v)) for k, v in runs.items()}
    finally:
        new.release()
        old.release()


def register_without_features(registry: object, home: Path) -> None:
    """``imagenet-old``: the same network with only the logits output, as versions were exported before."""
    import onnx

    from models import Registry

    assert isinstance(registry, Registry)
    info = registry.get("imagenet")
    model = onnx.load(str(info.model_path))
    keep = [o for o in model.graph.output if o.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    path = home / "old.onnx"
    onnx.save(model, str(path))
    old = info.manifest.model_copy(update={"name": "imagenet-old", "cam": None, "files": [], "version": 0})
    registry.register(old, path, activate=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    ev = event_sizes()
    log.info("events: %s", ev)
    load_before = os.getloadavg()
    ex = explain_cost(args.rounds)
    load_after = os.getloadavg()
    log.info("explain: %s", ex)
    before_row = (f"| before: the whole job every time | {ev['whole_mean']:.0f} (mean; the last one "
                  f"{ev['whole_last']}) | {ev['whole_mean']:.0f} | {ev['whole_last']} | {ev['whole_total']} |")
    after_row = (f"| after: `snapshot`, then `delta` (changed fields, new epochs appended) | {ev['snapshot']} | "
                 f"{ev['delta_mean']:.0f} | {ev['delta_max']} | {ev['delta_total']} |")
    text = f"""## Console data: job events and explanations

Command: `{COMMAND}`

Job events (`GET /v1/jobs/{{id}}/events`) for a job that records {ev['epochs']} epochs, bytes of JSON per event:

| events | first event | later events, mean | largest later event | whole stream |
| --- | --- | --- | --- | --- |
{before_row}
{after_row}

`predict?explain=true` on the CPU: EfficientNet-Lite0, {ex['images']} ImageNet photos x {ex['rounds']} rounds,
one client, the modes alternating request by request in one process (load average before/after
{' '.join(f'{x:.2f}' for x in load_before)} / {' '.join(f'{x:.2f}' for x in load_after)}, other work on the machine;
on a busy machine every number grows, so compare the rows of one run, which alternate, rather than with other sections):

| explain | p50 ms | mean ms |
| --- | --- | --- |
| before: the model exported without the feature-map output | {ex['old_p50']:.2f} | {ex['old_mean']:.2f} |
| off (the default; the feature map is never copied out) | {ex['off_p50']:.2f} | {ex['off_mean']:.2f} |
| on (feature map, numpy CAM, 224 px RGBA PNG in base64) | {ex['on_p50']:.2f} | {ex['on_mean']:.2f} |
| extra per image | {ex['on_p50'] - ex['off_p50']:.2f} | {ex['on_mean'] - ex['off_mean']:.2f} |

An answer with a heatmap is {ex['on_bytes']} bytes (one image, top 5).

The same paths in process, without HTTP or queueing (median of 5 alternating runs per photo, one image per run):

| path | ms per image |
| --- | --- |
| logits, model without the feature-map output (before) | {ex['engine_old']:.2f} |
| logits, model with it, explain off | {ex['engine_off']:.2f} |
| explain on: logits + feature map, then the map, PNG and base64 | {ex['engine_on']:.2f} |
| of which the map, PNG and base64 (numpy + Pillow) | {ex['engine_draw']:.2f} |
"""
    print(text)
    if args.write_docs:
        write_section("## Console data: job events and explanations", text)


if __name__ == "__main__":
    main()
