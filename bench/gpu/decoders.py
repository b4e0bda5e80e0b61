"""CPU figures behind the GPU decoder's choice (docs/gpu.md): nvImageCodec's CPU backend against Pillow.

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.gpu.decoders

Decodes the committed photos (tests/data: 43 ImageNet + the ants/bees JPEGs) with Pillow (the service's
``core.images.open_rgb``, one thread) and with nvImageCodec's CPU backend (one batch call, one thread and
all cores), checks that the pixels are identical, and times the preprocessing graph on the CPU provider
against the Pillow path's resize/crop/normalise. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.images import open_rgb
from models.manifest import Preprocessing
from service.inference import preprocess_graph as graph
from service.inference.gpu_pipeline import nvimgcodec
from service.inference.preprocess import preprocess

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
LIMIT = 40_000_000


def best_rate(fn, count: int, rounds: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Images per second of the fastest of ``rounds`` runs (the machine is shared: the best is the cleanest)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(count / min(times), 1)


def main() -> int:
    nv, reason = nvimgcodec()
    if nv is None:
        raise SystemExit(f"nvImageCodec is not importable ({reason}): make install installs the gpu extra")
    jpegs = [p.read_bytes() for p in sorted(DATA.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg")]
    params = nv.DecodeParams(apply_exif_orientation=True, color_spec=nv.ColorSpec.SRGB,
                             sample_format=nv.SampleFormat.I_RGB)
    backends = [nv.Backend(nv.BackendKind.CPU_ONLY)]
    one = nv.Decoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, backends=backends, max_num_cpu_threads=1)
    every = nv.Decoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, backends=backends)
    decoded = [np.asarray(img) for img in one.decode(jpegs, params=params)]
    reference = [np.asarray(open_rgb(d, LIMIT)) for d in jpegs]
    worst = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(decoded, reference, strict=True))
    pre = Preprocessing()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(graph.build(pre), opts, providers=["CPUExecutionProvider"])

    def run_graph() -> None:
        for rgb in decoded:
            session.run(None, {graph.IMAGE: rgb, **graph.geometry(rgb.shape[0], rgb.shape[1], pre)})

    report = {
        "photos": len(jpegs), "cores": len(os.sched_getaffinity(0)),
        "max_pixel_difference_nvimgcodec_cpu_vs_pillow": worst,
        "decode_images_per_s": {
            "pillow_1_thread": best_rate(lambda: [open_rgb(d, LIMIT) for d in jpegs], len(jpegs)),
            "nvimgcodec_cpu_1_thread_batch": best_rate(lambda: one.decode(jpegs, params=params), len(jpegs)),
            "nvimgcodec_cpu_all_cores_batch": best_rate(lambda: every.decode(jpegs, params=params), len(jpegs)),
        },
        "resize_crop_normalise_images_per_s": {
            "pillow_path_decode_included": best_rate(lambda: [preprocess(d, pre, LIMIT) for d in jpegs], len(jpegs)),
            "onnx_graph_cpu_provider_decode_excluded": best_rate(run_graph, len(jpegs)),
        },
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
