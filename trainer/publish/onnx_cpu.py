"""The trainer's one way to open an ONNX file on the CPU (export check, evaluation, variant gates).

The service opens its own sessions (``service/inference/onnx_session.py``: threads, lanes, CUDA); here every
check runs what the file computes, on the CPU, quietly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_session(path: Path) -> ort.InferenceSession:
    """A CPU session on ``path`` with onnxruntime's full graph optimisation and only errors logged."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_batch(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """The first output (logits) for one float32 NCHW batch."""
    name = session.get_inputs()[0].name
    out: np.ndarray = session.run(None, {name: batch.astype(np.float32)})[0]
    return out
