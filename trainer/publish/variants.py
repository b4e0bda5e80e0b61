"""Extra ONNX variants of an exported model: fp16 (for CUDA) and int8 (for CPU), each checked before use.

Torch-free: everything here is onnx + onnxruntime, so the trainer's publish step and the bootstrap
can call :func:`build_variants` right after the fp32 export. A variant is kept only when it agrees
with fp32 on the validation images (top-1 agreement >= 99 %) and, where labels are known, loses at
most one accuracy point; otherwise it is dropped with a warning and the service keeps serving fp32.

The out-of-distribution score (trainer/calibrate/ood.py) stays fp32 in every variant: its nodes are kept out of
the fp16 conversion and the int8 quantisation, so a variant's ``ood_score`` means what fp32's does and
the version's one threshold holds for all files (the bank's MatMul costs little next to the backbone).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from core.fsutil import atomic_write, sha256_file
from models.manifest import Variant
from trainer.publish.int8_recipe import DEFAULT_RECIPE, Int8Recipe, build_int8
from trainer.publish.onnx_cpu import cpu_session, run_batch

log = logging.getLogger(__name__)

MIN_TOP1_AGREEMENT = 0.99
MAX_ACCURACY_DROP = 0.01
FP16_FILE = "model.fp16.onnx"
INT8_FILE = "model.int8.onnx"
EVAL_BATCH = 16


def passes_gate(top1_agreement: float, accuracy_delta: float | None) -> bool:
    """The registration rule for a variant: agrees with fp32 and costs at most one accuracy point."""
    if top1_agreement < MIN_TOP1_AGREEMENT:
        return False
    return accuracy_delta is None or accuracy_delta >= -MAX_ACCURACY_DROP - 1e-9


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed training images to onnxruntime's calibrator in small batches."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 8) -> None:
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(
            [images[i : i + batch].astype(np.float32) for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def predict_top1(path: Path, images: np.ndarray) -> np.ndarray:
    session = cpu_session(path)
    out = [run_batch(session, images[i : i + EVAL_BATCH]).argmax(1) for i in range(0, len(images), EVAL_BATCH)]
    return np.concatenate(out)


def score_only_nodes(model: onnx.ModelProto, output: str = "ood_score") -> list[str]:
    """Names of the nodes that compute ``output`` and no other graph output (empty without it)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def ancestors(names: list[str]) -> set[str]:
        seen: set[str] = set()
        todo = [producer[t] for t in names if t in producer]
        while todo:
            node = todo.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            todo.extend(producer[t] for t in node.input if t in producer)
        return seen

    outputs = [o.name for o in model.graph.output]
    if output not in outputs:
        return []
    shared = ancestors([o for o in outputs if o != output])
    return sorted(ancestors([output]) - shared)


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (so callers feed the same arrays); the score stays fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = onnx.load(str(fp32_path))
    model = convert_float_to_float16(source, keep_io_types=True, node_block_list=score_only_nodes(source) or None)
    _drop_duplicate_casts(model)
    _save(model, out_path)
    return out_path


def quantize_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray,
                  recipe: Int8Recipe = DEFAULT_RECIPE) -> dict[str, Any]:
    """Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on real images,
    made the way ``recipe`` says (trainer/publish/int8_recipe.py); returns the recipe's description."""
    input_name = cpu_session(fp32_path).get_inputs()[0].name
    recipe = recipe.resolved()  # 7-bit weights or 8, for the CPU that gates the file (int8_recipe.py)

    def quantise(src: Path, dst: Path, exclude: list[str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_out = Path(tmp) / "int8.onnx"
            quantize_static(
                str(src), str(tmp_out), ArrayCalibrationReader(input_name, calib_images),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False}, nodes_to_exclude=exclude,
                reduce_range=bool(recipe.reduce_range),
            )
            _save(onnx.load(str(tmp_out)), dst)

    return build_int8(fp32_path, out_path, calib_images, score_only_nodes(onnx.load(str(fp32_path))), quantise,
                      recipe)


def _drop_duplicate_casts(model: onnx.ModelProto) -> None:
    """The converter puts a Cast before each blocked node that reads an fp16 tensor, named after that
    tensor, so two blocked readers of one tensor get two identical Casts of one name and output, which
    onnxruntime refuses: keep the first (it precedes both readers in the graph's order)."""
    seen: set[str] = set()
    keep = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _save(model: onnx.ModelProto, out_path: Path) -> None:
    atomic_write(out_path, lambda fh: fh.write(model.SerializeToString()))


def evaluate_variant(
    variant_path: Path, reference_top1: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray | None
) -> tuple[float, float | None]:
    """(top-1 agreement with fp32, accuracy delta in [0, 1] units or None without labels)."""
    top1 = predict_top1(variant_path, val_images)
    agreement = float((top1 == reference_top1).mean())
    if val_labels is None:
        return agreement, None
    delta = float((top1 == val_labels).mean() - (reference_top1 == val_labels).mean())
    return agreement, delta


GATE_RULE = (f"top-1 agreement with fp32 >= {MIN_TOP1_AGREEMENT} and accuracy drop <= {MAX_ACCURACY_DROP} "
             "on every split checked")


def build_variants(
    fp32_path: Path,
    out_dir: Path,
    calib_images: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray | None,
    kinds: tuple[str, ...] = ("fp16", "int8"),
    test: tuple[np.ndarray, np.ndarray | None] | None = None,
    int8_recipe: Int8Recipe = DEFAULT_RECIPE,
) -> dict[str, Variant]:
    """Build, check and describe the variants of ``fp32_path``; files land in ``out_dir``.

    ``calib_images`` (training split), ``val_images`` and ``test``'s images are preprocessed NCHW
    float32 arrays, the network's input. A variant must pass the gate on val and, when given, on test
    (held-out photos the calibration never saw). Returns ``{"fp16": Variant, "int8": Variant}`` for
    those that pass, each stating its gate; put them in ``Manifest.variants`` and register the files
    beside the model (same names).
    """
    if len(val_images) == 0:
        raise ValueError("no validation images to check the variants on")
    splits = {"val": (val_images, val_labels)}
    if test is not None and len(test[0]):
        splits["test"] = test
    references = {name: predict_top1(fp32_path, images) for name, (images, _) in splits.items()}
    variants: dict[str, Variant] = {}
    for kind in kinds:
        path = out_dir / (FP16_FILE if kind == "fp16" else INT8_FILE)
        recipe: dict[str, Any] | None = None
        if kind == "fp16":
            convert_fp16(fp32_path, path)
        elif kind == "int8":
            if len(calib_images) == 0:
                raise ValueError("int8 needs calibration images")
            recipe = quantize_int8(fp32_path, path, calib_images, int8_recipe)
        else:
            raise ValueError(f"unknown variant {kind!r} (fp16 or int8)")
        checks: dict[str, dict[str, Any]] = {}
        for name, (images, labels) in splits.items():
            agreement, delta = evaluate_variant(path, references[name], images, labels)
            checks[name] = {"images": len(images), "top1_agreement": agreement, "accuracy_delta": delta}
        agreement = min(c["top1_agreement"] for c in checks.values())
        deltas = [c["accuracy_delta"] for c in checks.values() if c["accuracy_delta"] is not None]
        delta = min(deltas) if deltas else None
        if not all(passes_gate(c["top1_agreement"], c["accuracy_delta"]) for c in checks.values()):
            log.warning("%s variant dropped (%s): %s", kind, GATE_RULE, checks)
            path.unlink(missing_ok=True)
            continue
        log.info("%s variant kept: %s", kind, checks)
        variants[kind] = Variant(file=path.name, sha256=sha256_file(path), accuracy_delta=delta,
                                 top1_agreement=agreement, gate={"rule": GATE_RULE, "splits": checks}, recipe=recipe)
    return variants
