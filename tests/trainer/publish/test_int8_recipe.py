"""The int8 recipe (trainer/publish/int8_recipe.py): the stem kept fp32, and bias correction, on the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import Registry
from models.manifest import Preprocessing
from service.inference.preprocess import preprocess
from tests.photos import imagenet_rows
from trainer.publish.int8_recipe import Int8Recipe, stem_nodes, weight_shift
from trainer.publish.onnx_cpu import cpu_session, run_batch
from trainer.publish.variants import quantize_int8

PRE = Preprocessing()


@pytest.fixture(scope="module")
def fp32_model(bootstrapped_home: Path) -> Path:
    return Registry(bootstrapped_home / "models").get("imagenet").model_path


@pytest.fixture(scope="module")
def photos(imagenet_samples: Path, hymenoptera: Path) -> tuple[np.ndarray, np.ndarray]:
    """(32 training photos to calibrate on, 16 other photos to measure on)."""
    calib = [f for cls in ("ants", "bees") for f in sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:16]]
    check = [imagenet_samples / r["filename"] for r in imagenet_rows(imagenet_samples)[:16]]
    return tuple(np.stack([preprocess(f.read_bytes(), PRE, 40_000_000) for f in files])  # type: ignore[return-value]
                 for files in (calib, check))


def test_stem_is_the_first_conv_and_its_activation(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    stem = stem_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    assert [by_name[n].op_type for n in stem] == ["Conv", "Clip"]
    assert by_name[stem[0]].input[0] == model.graph.input[0].name
    assert by_name[stem[1]].input[0] == by_name[stem[0]].output[0]


def conv_model(w: np.ndarray, group: int) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[1] * group, 40, 40])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group)  # no padding: every output sees real pixels
    graph = helper.make_graph([node], "conv", [x], [y], [numpy_helper.from_array(w.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime reads, whatever onnx writes by default
    return model.SerializeToString()


@pytest.mark.parametrize(("in_channels", "out_channels", "group"), [(6, 4, 1), (6, 6, 6), (6, 4, 2)])
def test_weight_shift_is_the_mean_output_change(in_channels: int, out_channels: int, group: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(out_channels, in_channels // group, 3, 3))
    scale = np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127
    w_q = np.round(w / scale) * scale  # per-channel symmetric int8, like the quantiser's weights
    means = rng.uniform(0.5, 3.0, size=in_channels)
    x = (means[None, :, None, None] + rng.normal(scale=0.05, size=(1, in_channels, 40, 40))).astype(np.float32)

    def run(weights: np.ndarray) -> np.ndarray:
        out: np.ndarray = ort.InferenceSession(conv_model(weights, group), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
        return out

    measured = (run(w_q) - run(w)).mean(axis=(0, 2, 3))
    assert np.abs(measured).max() > 1e-3  # rounding really moved the outputs
    np.testing.assert_allclose(weight_shift(w, w_q, x.mean(axis=(0, 2, 3)), group), measured, atol=2e-4)


def test_recipe_is_stated_and_bias_correction_brings_int8_closer_to_fp32(
    fp32_model: Path, photos: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    calib, check = photos
    reference = run_batch(cpu_session(fp32_model), check)
    errors = {}
    for name, recipe in (("plain", Int8Recipe(bias_correction=False, fp32_stem=False, reduce_range=False)),
                         ("default", Int8Recipe()),  # 7-bit weights or 8: this CPU's choice
                         ("7-bit", Int8Recipe(bias_correction=False, fp32_stem=False, reduce_range=True))):
        path = tmp_path / f"{name}.onnx"
        stated = quantize_int8(fp32_model, path, calib, recipe)
        assert stated["bias_correction"] is recipe.bias_correction and stated["calibration_images"] == len(calib)
        assert stated["fp32_nodes"] == (stem_nodes(onnx.load(str(fp32_model))) if recipe.fp32_stem else [])
        quantised = {i.name for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_quantized")}
        stem_weight = next(n for n in onnx.load(str(fp32_model)).graph.node if n.op_type == "Conv").input[1]
        assert (f"{stem_weight}_quantized" in quantised) is not recipe.fp32_stem
        # 7-bit weights (reduce_range): every quantised weight within [-64, 64], so u8 x s8 pairs summed
        # by AVX2's VPMADDUBSW cannot saturate int16 on CPUs without VNNI.
        widest = max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max())
                     for i in onnx.load(str(path)).graph.initializer if i.data_type == TensorProto.INT8)
        assert stated["reduce_range"] is recipe.resolved().reduce_range and (widest <= 64) is stated["reduce_range"]
        errors[name] = float(((run_batch(cpu_session(path), check) - reference) ** 2).mean())
    # Measured 0.0130 plain and 0.0046 default on these photos (docs/benchmarks.md, "int8 recipes").
    assert errors["default"] < 0.6 * errors["plain"], errors


def test_weights_are_7_bit_only_where_the_cpu_sums_int8_products_in_int16(tmp_path: Path) -> None:
    from trainer.publish.int8_recipe import cpu_flags, has_int8_dot

    zen2 = tmp_path / "zen2"  # an AVX2-only EPYC (docs/benchmarks.md, "int8 on a CPU without VNNI")
    zen2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    zen4 = tmp_path / "zen4"
    zen4.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n")
    graviton = tmp_path / "arm"
    graviton.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert Int8Recipe().resolved(cpu_flags(zen2)).reduce_range is True
    assert Int8Recipe().resolved(cpu_flags(zen4)).reduce_range is False
    assert Int8Recipe().resolved(cpu_flags(graviton)).reduce_range is False
    assert Int8Recipe().resolved(cpu_flags(tmp_path / "absent")).reduce_range is True  # unknown: the safe choice
    assert Int8Recipe(reduce_range=False).resolved(cpu_flags(zen2)).reduce_range is False  # a stated choice stands
    assert Int8Recipe().resolved().reduce_range is not has_int8_dot()
