"""ONNX export that checks itself: onnx.checker, dynamic batch only, onnxruntime vs torch on real images.

Networks with a global-average-pool + linear head are exported with a second output, ``features`` (the
last convolutional feature map), and their head's weights are written beside the file (``cam.npz``):
the service draws class activation maps from them without torch (trainer/publish/cam.py). ``logits`` stays
the first output, so code that reads output 0 is unchanged and a run that asks for logits only costs
the same as before. With a fitted out-of-distribution score (trainer/calibrate/ood.py), ``ood_score`` follows
them, its bank written beside the file (``ood.npz``), and the check compares it with torch's too.
"""

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

from trainer.calibrate.ood import OOD_FILE, OOD_OUTPUT, OodScorer, WithScore
from trainer.progress.steps import step
from trainer.publish.cam import CAM_FILE, FEATURES_OUTPUT, WithFeatures, save_head, with_features
from trainer.publish.onnx_cpu import cpu_session

log = logging.getLogger(__name__)

MAX_ABS_LOGIT_DIFF = 1e-3
MAX_REL_FEATURE_DIFF = 1e-3  # of the largest feature value: the maps are compared, not just their argmax
MAX_ABS_SCORE_DIFF = 1e-4  # a cosine distance: thresholds are compared at about this precision
OPSET = 18


class ExportCheckFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float
    top1_agreement: float
    images_checked: int
    cam_file: Path | None = None  # the head's weights for CAM; None when the network has no CAM output
    ood_file: Path | None = None  # the out-of-distribution bank; None when no score was exported
    max_abs_score_diff: float | None = None


def export_onnx(model: nn.Module, crop: int, out_path: Path, check_batch: torch.Tensor,
                ood: OodScorer | None = None) -> ExportReport:
    """Export ``model`` (eval mode, fp32) to ``out_path`` and verify it against torch on ``check_batch``.

    ``check_batch`` should hold real, preprocessed images: parity on noise says little about
    parity on photos. The file is written to a temp path and moved into place only once it passes.
    With a CAM output (trainer/publish/cam.py), ``cam.npz`` is written beside ``out_path``; with ``ood``,
    the ``ood_score`` output and ``ood.npz``.
    """
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    cam_network = with_features(model)
    network: nn.Module = cam_network or model
    if ood is not None:
        network = WithScore(network, model, ood).eval()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(network, crop, tmp)
        step("trace")  # the progress tracker's export steps (trainer/progress/steps.py)
        report = check_export(network, tmp, check_batch)
        step("check")
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
        raise
    cam = save_head(model, out_path.parent / CAM_FILE) if cam_network is not None else None
    ood_file = ood.save(out_path.parent / OOD_FILE) if ood is not None else None
    return ExportReport(out_path, report.max_abs_diff, report.top1_agreement, report.images_checked, cam,
                        ood_file, report.max_abs_score_diff)


def output_names(network: nn.Module) -> list[str]:
    """The graph's outputs in the service's order: logits, [features], [ood_score]."""
    inner = network.network if isinstance(network, WithScore) else network
    names = ["logits", FEATURES_OUTPUT] if isinstance(inner, WithFeatures) else ["logits"]
    return [*names, OOD_OUTPUT] if isinstance(network, WithScore) else names


def _quiet_exporter_logs() -> None:
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _export(model: nn.Module, crop: int, path: Path) -> None:
    _quiet_exporter_logs()
    example = torch.randn(2, 3, crop, crop)
    outputs = output_names(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The dynamo exporter with only the batch dynamic folds TF 'same' padding into the convs; the
    # legacy exporter keeps it as shape arithmetic that runs on the CPU (slower, and Memcpy on CUDA:
    # docs/benchmarks.md, "Trainer: the numbers behind its comments").
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=OPSET,
            input_names=["input"], output_names=outputs, optimize=True, verbose=False,
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
        out = model(batch.float())
    expected_all = [t.numpy() for t in out] if isinstance(out, tuple) else [out.numpy()]
    got_all = session.run(None, {session.get_inputs()[0].name: batch.numpy().astype(np.float32)})
    if len(got_all) < len(expected_all):
        raise ExportCheckFailed(f"the ONNX file has {len(got_all)} outputs, torch {len(expected_all)}")
    names = output_names(model)
    score_diff = None
    if names[-1] == OOD_OUTPUT:
        score_diff = _check_score(expected_all.pop(), got_all[len(names) - 1])
    expected, got = expected_all[0], got_all[0]
    for name, want, have in zip(names[1:], expected_all[1:], got_all[1:], strict=False):
        rel = float(np.abs(want - have).max() / max(float(np.abs(want).max()), 1e-6))
        if want.shape != have.shape or rel > MAX_REL_FEATURE_DIFF:
            raise ExportCheckFailed(f"onnxruntime's {name} output differs from torch's: shape {have.shape} vs "
                                    f"{want.shape}, max relative diff {rel:.2e} (limit {MAX_REL_FEATURE_DIFF})")
    diff = float(np.abs(expected - got).max())
    agree = float((expected.argmax(1) == got.argmax(1)).mean())
    log.info("export check: max |logit diff| %.2e, top-1 agreement %.3f on %d images", diff, agree, len(batch))
    if diff > MAX_ABS_LOGIT_DIFF or agree < 1.0:
        raise ExportCheckFailed(
            f"onnxruntime disagrees with torch: max |logit diff| {diff:.2e} (limit {MAX_ABS_LOGIT_DIFF}), "
            f"top-1 agreement {agree:.3f}"
        )
    return ExportReport(path, diff, agree, len(batch), max_abs_score_diff=score_diff)


def _check_score(want: np.ndarray, have: np.ndarray) -> float:
    diff = float(np.abs(want - have).max()) if want.size else 0.0
    if want.shape != have.shape or diff > MAX_ABS_SCORE_DIFF:
        raise ExportCheckFailed(f"onnxruntime's {OOD_OUTPUT} differs from torch's: shape {have.shape} vs "
                                f"{want.shape}, max |diff| {diff:.2e} (limit {MAX_ABS_SCORE_DIFF})")
    log.info("export check: max |%s diff| %.2e", OOD_OUTPUT, diff)
    return diff
