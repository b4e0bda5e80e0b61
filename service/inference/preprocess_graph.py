"""The eval transform as a small ONNX graph, so it runs where the model runs (CUDA or CPU provider).

One decoded image in (HWC uint8, any size), one normalised CHW tensor out, the way Pillow and
torchvision's eval preset do it (``service/inference/preprocess.py``, ``trainer/data/transforms.py``):

* resize the shorter side to ``pre.resize`` with Pillow's filter: ``cubic`` with a = -0.5 (``linear``
  for bilinear), the filter stretched by the downscale factor (ONNX ``antialias=1`` is Pillow's
  scheme), taps outside the image dropped and the rest renormalised (``exclude_outside=1``), pixel
  centres at +0.5 (``half_pixel``);
* two passes like Pillow's: horizontal, round to 8 bits, vertical, round to 8 bits (Pillow keeps an
  8-bit image between its passes and after them);
* center crop (columns between the passes, which the vertical pass does not mix), then
  ``x / 255`` and ``(x - mean) / std``.

The output sizes and the crop box are inputs (int64, host memory, where onnxruntime's CUDA kernels
read them), computed by the caller with the same arithmetic as the Pillow path (:func:`geometry`), so
no shape arithmetic runs in the graph and nothing is copied between host and device for it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.manifest import Preprocessing
from service.inference.preprocess import center_crop_box, resized_size

OPSET = 18  # Resize's antialias attribute
IMAGE, HSIZE, VSIZE = "image", "hsize", "vsize"
LEFT, RIGHT, TOP, BOTTOM = "left", "right", "top", "bottom"  # the crop box, one int64 each
OUTPUT = "pixels"
_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}


def supported(pre: Preprocessing) -> bool:
    """The graph covers a crop inside the resized image (Pillow's path also handles crop > resize)."""
    return pre.crop <= pre.resize and pre.interpolation in _MODES


def geometry(height: int, width: int, pre: Preprocessing) -> dict[str, np.ndarray]:
    """The host-side inputs for one ``height`` x ``width`` image: resize sizes and crop ranges."""
    new_w, new_h = resized_size(width, height, pre.resize)
    left, top, right, bottom = center_crop_box(new_w, new_h, pre.crop)
    return {
        HSIZE: np.array([1, 3, height, new_w], dtype=np.int64),
        VSIZE: np.array([1, 3, new_h, pre.crop], dtype=np.int64),
        LEFT: np.array([left], dtype=np.int64), RIGHT: np.array([right], dtype=np.int64),
        TOP: np.array([top], dtype=np.int64), BOTTOM: np.array([bottom], dtype=np.int64),
    }


def _resize(name: str, src: str, sizes: str, mode: str) -> onnx.NodeProto:
    attrs: dict[str, Any] = {"mode": mode}
    if mode == "nearest":
        attrs.update(coordinate_transformation_mode="half_pixel", nearest_mode="floor")
    else:
        attrs.update(coordinate_transformation_mode="half_pixel", antialias=1, exclude_outside=1)
        if mode == "cubic":
            attrs["cubic_coeff_a"] = -0.5
    return helper.make_node("Resize", [src, "", "", sizes], [name], name=name, **attrs)


def _round_u8(name: str, src: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Round", [src], [f"{name}_r"], name=f"{name}_r"),
        helper.make_node("Clip", [f"{name}_r", "u8_min", "u8_max"], [name], name=name),
    ]


def build(pre: Preprocessing) -> bytes:
    """The serialised graph for ``pre`` (cached: every version of a model shares its preprocessing)."""
    return _build(pre.model_dump_json())


@lru_cache(maxsize=8)
def _build(pre_json: str) -> bytes:
    pre = Preprocessing.model_validate_json(pre_json)
    if not supported(pre):
        raise ValueError(f"preprocessing {pre} has a crop larger than its resize: not covered by the graph")
    mode = _MODES[pre.interpolation]
    std = np.asarray(pre.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1).astype(np.float32)
    shift = (np.asarray(pre.mean, dtype=np.float32) / std).reshape(1, 3, 1, 1).astype(np.float32)
    consts: dict[str, np.ndarray] = {
        "u8_min": np.array(0.0, np.float32), "u8_max": np.array(255.0, np.float32),
        "scale": scale, "shift": shift, "axis_w": np.array([3], np.int64), "axis_h": np.array([2], np.int64),
    }
    nodes = [
        helper.make_node("Cast", [IMAGE], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["chw"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["chw", "zero_axis"], ["nchw"]),
        _resize("horizontal", "nchw", HSIZE, mode),
        *_round_u8("h8", "horizontal"),
        helper.make_node("Slice", ["h8", LEFT, RIGHT, "axis_w"], ["cropped_w"]),
        _resize("vertical", "cropped_w", VSIZE, mode),
        *_round_u8("v8", "vertical"),
        helper.make_node("Slice", ["v8", TOP, BOTTOM, "axis_h"], ["cropped"]),
        helper.make_node("Mul", ["cropped", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "shift"], [OUTPUT]),
    ]
    consts["zero_axis"] = np.array([0], np.int64)
    graph = helper.make_graph(
        nodes, "tuneserve_preprocess",
        [helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["height", "width", 3]),
         helper.make_tensor_value_info(HSIZE, TensorProto.INT64, [4]),
         helper.make_tensor_value_info(VSIZE, TensorProto.INT64, [4]),
         *[helper.make_tensor_value_info(name, TensorProto.INT64, [1]) for name in (LEFT, RIGHT, TOP, BOTTOM)]],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 3, pre.crop, pre.crop])],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tuneserve")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data
