"""The BentoML peer: the same ONNX file and the same preprocessing, with BentoML's adaptive batching on.

Run: ``TUNESERVE_BENCH_MODEL=<home>/models/imagenet/1/model.onnx \
     bentoml serve bench.serving.bentoml_service:Classifier``
(bench/serving/serve.py starts it). Requests: multipart field ``image`` holding one JPEG. BentoML collects
concurrent requests into one call of ``predict`` (adaptive batching, up to ``max_batch_size``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort

from models.manifest import Manifest
from service.inference.onnx_session import softmax, top_k
from service.inference.preprocess import preprocess

MODEL = Path(os.environ.get("TUNESERVE_BENCH_MODEL", "var/models/imagenet/1/model.onnx"))
THREADS = int(os.environ.get("TUNESERVE_BENCH_THREADS", "0")) or (os.cpu_count() or 1)


# Access logs off, as for every server in bench/serving/serve.py (uvicorn runs with --no-access-log).
@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        manifest = Manifest.model_validate_json((MODEL.parent / "manifest.json").read_text())
        self.labels = manifest.labels
        self.pre = manifest.preprocessing
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = THREADS
        self.session = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.pool = ThreadPoolExecutor(THREADS)  # decode the batch's images in parallel

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=1000)  # type: ignore[untyped-decorator, unused-ignore]
    def predict(self, image: list[Path]) -> list[dict[str, object]]:
        arrays = list(self.pool.map(lambda p: preprocess(Path(p), self.pre, 40_000_000), image))
        (logits,) = self.session.run(None, {self.input_name: np.stack(arrays)})
        rows = top_k(softmax(np.asarray(logits, np.float32)), 5)
        return [
            {"predictions": [{"label": self.labels[i], "index": i, "probability": p} for i, p in row]}
            for row in rows
        ]
