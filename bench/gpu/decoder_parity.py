"""Parity of the GPU decoder (``service/inference/gpu_pipeline.py``) with the Pillow path and the training transform.

One function, used by the test suite (nvImageCodec's CPU backend, onnxruntime's CPU provider) and by
``bench/gpu/gpu_e2e.py`` on the device: the same photos through the served model three ways, compared by
top-1 agreement and the largest probability difference over all classes and photos.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.images import open_rgb
from service.inference.gpu_pipeline import GpuPipeline
from service.inference.onnx_session import OnnxEngine, softmax
from service.inference.preprocess import preprocess

LIMIT = 40_000_000
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".gif"}


def committed_photos(*folders: Path) -> list[bytes]:
    """Every photo under ``folders`` (sorted; the ants/bees set's placeholder GIF included, as a user may send one)."""
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.suffix.lower() in PHOTO_SUFFIXES]
    return [f.read_bytes() for f in files]


def large_jpegs(folder: Path, count: int = 4) -> list[bytes]:
    """Photos re-encoded at 3000x2250, big enough for the Pillow path's JPEG draft mode (DCT scaling)."""
    out = []
    for path in sorted(folder.glob("*.JPEG"))[:count]:
        big = open_rgb(path, LIMIT).resize((3000, 2250), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        out.append(buf.getvalue())
    return out


def _in_batches(fn: Callable[[Any], np.ndarray], items: Any, batch: int) -> np.ndarray:
    return np.concatenate([fn(items[i : i + batch]) for i in range(0, len(items), batch)])


def _compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    p, q = softmax(ours.copy()), softmax(theirs.copy())
    return {"top1_agreement": float((p.argmax(1) == q.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(p - q).max())}


def parity(pipeline: GpuPipeline, engine: OnnxEngine, payloads: list[bytes], batch: int = 32) -> dict[str, Any]:
    """{"photos", "vs_service": {...}, "vs_trainer": {...}, "nv_decoded"}: the pipeline against the Pillow
    service path and the trainer's eval transform (torchvision on Pillow, what training evaluates)."""
    from trainer.data.transforms import EvalPreset  # torch: only where parity is measured

    pre = pipeline.pre
    decoded_before = pipeline.nv_decoded
    ours, _ = engine.unpack(_in_batches(pipeline.run, payloads, min(batch, pipeline.capacity)))  # logits (+ score)
    nv_decoded = pipeline.nv_decoded - decoded_before
    service_in = np.stack([preprocess(d, pre, LIMIT) for d in payloads])
    preset = EvalPreset(pre)
    trainer_in = np.stack([preset(open_rgb(d, LIMIT)).numpy() for d in payloads])
    service = _in_batches(engine.run, service_in, batch)
    # The two references differ where the Pillow path drafts (large JPEGs) and, by a grey level or two, where
    # its resize computes only the crop's columns: infer just those again.
    differs = np.abs(service_in - trainer_in).reshape(len(payloads), -1).max(axis=1) > 1e-6
    drafted = sum(not np.array_equal(row, preprocess(d, pre, LIMIT, use_draft=False))
                  for d, row in zip(payloads, service_in, strict=True))
    trainer = service.copy()
    if differs.any():
        trainer[differs] = engine.run(trainer_in[differs])
    return {"photos": len(payloads), "nv_decoded": nv_decoded, "drafted_by_pillow_path": int(drafted),
            "vs_service": _compare(ours, service), "vs_trainer": _compare(ours, trainer)}
