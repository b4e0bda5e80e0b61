"""ONNX export that checks itself: onnx.checker, dynamic batch only, onnxruntime vs torch on real images."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from trainer.onnx_cpu import cpu_session, run_batch

log = logging.getLogger(__name__)

MAX_ABS_LOGIT_DIFF = 1e-3
OPSET = 18


class ExportCheckFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    top1_agreement: float
    images_checked: int


def export_onnx(model: nn.Module, crop: int, out_path: Path, check_batch: torch.Tensor) -> ExportReport:
    """Export ``model`` (eval mode, fp32) to ``out_path`` and verify it against torch on ``check_batch``.

    ``check_batch`` should hold real, preprocessed images: parity on noise says little about
    parity on photos. The file is written to a temp path and moved into place only once it passes.
    """
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(model, crop, tmp)
        report = check_export(model, tmp, check_batch)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
        raise
    return ExportReport(out_path, report.max_abs_diff, report.top1_agreement, report.images_checked)


def _quiet_exporter_logs() -> None:
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _export(model: nn.Module, crop: int, path: Path) -> None:
    _quiet_exporter_logs()
    example = torch.randn(2, 3, crop, crop)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The dynamo exporter with only the batch dynamic folds TF 'same' padding into the convs; the
    # legacy exporter keeps it as shape arithmetic that runs on the CPU (slower, and Memcpy on CUDA:
    # docs/benchmarks.md, "Trainer: the numbers behind its comments").
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=OPSET,
            input_names=["input"], output_names=["logits"], optimize=True, verbose=False,
        )
    assert program is not None
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


def check_export(model: nn.Module, path: Path, batch: torch.Tensor) -> ExportReport:
    session = cpu_session(path)
    shape = session.get_inputs()[0].shape
    if not isinstance(shape[0], str) or any(not isinstance(d, int) for d in shape[1:]):
        raise ExportCheckFailed(f"expected only the batch dimension dynamic, got input shape {shape}")
    with torch.no_grad():
        expected = model(batch.float()).numpy()
    got = run_batch(session, batch.numpy())
    diff = float(np.abs(expected - got).max())
    agree = float((expected.argmax(1) == got.argmax(1)).mean())
    log.info("export check: max |logit diff| %.2e, top-1 agreement %.3f on %d images", diff, agree, len(batch))
    if diff > MAX_ABS_LOGIT_DIFF or agree < 1.0:
        raise ExportCheckFailed(
            f"onnxruntime disagrees with torch: max |logit diff| {diff:.2e} (limit {MAX_ABS_LOGIT_DIFF}), "
            f"top-1 agreement {agree:.3f}"
        )
    return ExportReport(path, diff, agree, len(batch))
