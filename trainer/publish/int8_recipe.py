"""How the int8 variant is made beyond onnxruntime's static quantisation: the stem kept fp32, and bias correction.

Plain static QDQ quantisation (per-channel int8 weights, uint8 activations, MinMax ranges on training
photos) of the bootstrapped EfficientNet-Lite0 agreed with fp32 on 0.974 of the 153 hymenoptera val
photos; its flips were all photos whose fp32 top-2 probability margin is below 0.05. Two measured changes
(docs/benchmarks.md, "int8 recipes", has the whole table):

* **Bias correction** (Nagel et al. 2019, "Data-Free Quantization", section 4.2, with the input means
  measured on the calibration photos rather than derived from batch-norm statistics): rounding a
  channel's weights shifts its mean output by ``sum((W_q - W) * E[x])``. That shift is subtracted from
  the fp32 bias and the model is quantised again (same weights, so the same ``W_q``). It halved the
  squared logit error against fp32 on held-out training photos (0.0119 -> 0.0055).
* **The stem stays fp32**: the first convolution (and its activation) reads the raw normalised photo;
  keeping it fp32 lowered that error further (0.0049) for about 2 % of the int8 model's time.
  Keeping a single *inner* convolution fp32 made things worse (its output is then quantised without
  the activation's clipped range), so nothing else is excluded.

The recipe that made a file is stored in its manifest (``Variant.recipe``) next to the gate it passed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ACTIVATIONS = ("Clip", "Relu")
MEAN_BATCH = 16


# CPU features whose int8 dot products accumulate u8 x s8 straight into int32 (x86 VNNI and AMX, Arm's
# dot-product instructions): full 8-bit weights cannot saturate there.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def has_int8_dot(flags: set[str] | None = None) -> bool:
    return bool(INT8_DOT_FLAGS & (cpu_flags() if flags is None else flags))


@dataclass(frozen=True)
class Int8Recipe:
    bias_correction: bool = True
    fp32_stem: bool = True  # the first convolution and its activation stay fp32
    # 7-bit weights (onnxruntime's reduce_range). None: decided by the CPU that builds and gates the file.
    # Without VNNI, AVX2's u8s8 kernels sum pairs of products in int16, which full 8-bit weights saturate
    # (logit MSE against fp32 0.115, the gate refused every 8-bit file there); with VNNI, 7 bits only
    # cost precision (MSE 0.0112 against 0.0054, HTTP agreement 0.980 against 0.994, same speed:
    # docs/benchmarks.md, "int8 recipes"). Without VNNI int8's speed against fp32 depends on the CPU
    # (slower on one, faster on another: docs/benchmarks.md), so `auto` times both files as a version
    # loads and serves fp32 where int8 is not faster (service/inference/selection.py).
    reduce_range: bool | None = None

    def resolved(self, flags: set[str] | None = None) -> Int8Recipe:
        """This recipe with ``reduce_range`` decided for this CPU when it was left open."""
        if self.reduce_range is not None:
            return self
        return replace(self, reduce_range=not has_int8_dot(flags))

    def describe(self, calibration_images: int, fp32_nodes: list[str]) -> dict[str, Any]:
        """What goes into ``Variant.recipe``: enough to rebuild the file and to compare files."""
        return {"format": "QDQ", "weights": "int8 per-channel", "activations": "uint8, MinMax ranges",
                "calibration_images": calibration_images, **asdict(self.resolved()), "fp32_nodes": fp32_nodes}


DEFAULT_RECIPE = Int8Recipe()


def stem_nodes(model: onnx.ModelProto) -> list[str]:
    """The first convolution fed by the graph's input and, when it alone reads its output, its activation."""
    inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] in inputs:
            after = readers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type in ACTIVATIONS:
                return [node.name, after[0].name]
            return [node.name]
    return []


def conv_input_means(model: onnx.ModelProto, tensors: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel mean of each named tensor over ``images`` (N, H and W), read by running ``model`` in fp32."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors
                              if t not in known)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    sums = [np.zeros(0, np.float64) for _ in tensors]
    for start in range(0, len(images), MEAN_BATCH):
        chunk = images[start : start + MEAN_BATCH].astype(np.float32)
        for k, value in enumerate(session.run(tensors, {input_name: chunk})):
            total = np.asarray(value, np.float64).mean(axis=(0, 2, 3)) * len(chunk)
            sums[k] = total if sums[k].size == 0 else sums[k] + total
    return {t: s / len(images) for t, s in zip(tensors, sums, strict=True)}


def weight_shift(w: np.ndarray, w_q: np.ndarray, mean_in: np.ndarray, group: int) -> np.ndarray:
    """Mean output shift per output channel of a convolution whose weights ``w`` became ``w_q``, for an
    input of per-channel mean ``mean_in`` (borders, where padding reads zeros, are ignored)."""
    error = (w_q - w).sum(axis=(2, 3))  # (out, in / group)
    out_channels, in_per_group = error.shape
    per_group = out_channels // group
    means = mean_in.reshape(group, in_per_group)[np.arange(out_channels) // per_group]
    shift: np.ndarray = (error * means).sum(axis=1)
    return shift


def bias_corrected(fp32: onnx.ModelProto, quantised: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """A copy of ``fp32`` whose convolution biases absorb the mean shift that ``quantised``'s weights cause."""
    q_init = {i.name: i for i in quantised.graph.initializer}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(fp32)
    init = {i.name: i for i in fixed.graph.initializer}
    convs = [n for n in fixed.graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in init
             and f"{n.input[1]}_quantized" in q_init and n.input[1] in init]
    means = conv_input_means(fp32, sorted({n.input[0] for n in convs}), images)
    for node in convs:
        w = numpy_helper.to_array(init[node.input[1]]).astype(np.float64)
        scale = numpy_helper.to_array(q_init[f"{node.input[1]}_scale"]).astype(np.float64)
        zero = numpy_helper.to_array(q_init[f"{node.input[1]}_zero_point"]).astype(np.float64)
        w_int = numpy_helper.to_array(q_init[f"{node.input[1]}_quantized"]).astype(np.float64)
        shape = (-1, 1, 1, 1) if scale.ndim else ()
        w_q = (w_int - zero.reshape(shape)) * scale.reshape(shape)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        bias = init[node.input[2]]
        value = numpy_helper.to_array(bias).astype(np.float64) - weight_shift(w, w_q, means[node.input[0]], group)
        bias.CopyFrom(numpy_helper.from_array(value.astype(np.float32), bias.name))
    return fixed


def build_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray, exclude: list[str],
               quantise: Callable[[Path, Path, list[str]], None],
               recipe: Int8Recipe = DEFAULT_RECIPE) -> dict[str, Any]:
    """Quantise ``fp32_path`` into ``out_path`` with ``quantise(src, dst, nodes_to_exclude)`` following
    ``recipe``; returns the recipe's description for the manifest."""
    source = onnx.load(str(fp32_path))
    kept = stem_nodes(source) if recipe.fp32_stem else []
    excluded = sorted(set(exclude) | set(kept))
    quantise(fp32_path, out_path, excluded)
    if recipe.bias_correction:
        fixed = bias_corrected(source, onnx.load(str(out_path)), calib_images)
        with tempfile.TemporaryDirectory() as tmp:
            corrected = Path(tmp) / "bias_corrected.onnx"
            onnx.save(fixed, str(corrected))
            quantise(corrected, out_path, excluded)
    return recipe.describe(len(calib_images), kept)
