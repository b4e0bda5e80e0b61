"""onnxruntime sessions: provider choice per device, thread settings, warm-up, softmax with temperature."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def gpu_present() -> bool:
    """A CUDA driver is loaded (checked without importing torch or touching CUDA)."""
    return Path("/proc/driver/nvidia/version").exists()


def choose_providers(device: str) -> list[str]:
    if device == "cpu" or CUDA not in ort.get_available_providers() or not gpu_present():
        return [CPU]
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # finds the CUDA/cuDNN libraries pip installed beside torch
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - a missing library only means CPU fallback
            log.warning("onnxruntime.preload_dlls failed: %s", exc)
    return [CUDA, CPU]


def session_options(settings: Settings) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = settings.intra_op_threads or (os.cpu_count() or 1)
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning threads would steal the cores the decode pool needs between batches.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxEngine:
    """One onnxruntime session for one model file."""

    def __init__(self, model_file: Path, settings: Settings) -> None:
        providers = choose_providers(settings.device)
        self.session = ort.InferenceSession(str(model_file), session_options(settings), providers=providers)
        self.provider = self.session.get_providers()[0]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = inp.shape
        self.output_name = self.session.get_outputs()[0].name
        self.input_type = np.float16 if "float16" in inp.type else np.float32

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) for a (N, 3, H, W) batch."""
        feed = batch if batch.dtype == self.input_type else batch.astype(self.input_type)
        (logits,) = self.session.run([self.output_name], {self.input_name: feed})
        return np.asarray(logits, dtype=np.float32)

    def warm_up(self, crop: int) -> None:
        self.run(np.zeros((1, 3, crop, crop), dtype=np.float32))

    def close(self) -> None:
        del self.session
        release_freed_memory()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / np.float32(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


def top_k(probs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    k = min(k, probs.shape[1])
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows = []
    for row, cand in zip(probs, idx, strict=True):
        order = cand[np.argsort(-row[cand], kind="stable")]
        rows.append([(int(i), float(row[i])) for i in order])
    return rows


def release_freed_memory() -> None:
    """Hand freed heap back to the OS; glibc keeps it otherwise and RSS grows with every swap."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
