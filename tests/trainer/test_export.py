"""ONNX export checks itself against torch on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from core.images import open_rgb
from trainer.backbones import create_backbone
from trainer.export import ExportCheckFailed, check_export, export_onnx
from trainer.transforms import EvalPreset


@pytest.fixture(scope="module")
def photos(imagenet_samples: Path) -> torch.Tensor:
    backbone = create_backbone()
    preset = EvalPreset(backbone.preprocessing)
    files = sorted(imagenet_samples.glob("*.JPEG"))[:12]
    return torch.stack([preset(open_rgb(f, 10**8)) for f in files])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, photos: torch.Tensor) -> tuple[nn.Module, Path]:
    backbone = create_backbone()
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    report = export_onnx(backbone.model, 224, path, photos)
    assert report.max_abs_diff <= 1e-3 and report.top1_agreement == 1.0 and report.images_checked == 12
    return backbone.model, path


def test_only_batch_dimension_is_dynamic(exported: tuple[nn.Module, Path]) -> None:
    _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 224, 224]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Shape", "Gather", "Ceil", "Pad"}, "TF 'same' padding should be folded into the convs"


def test_parity_with_torch_on_real_photos_any_batch(exported: tuple[nn.Module, Path], photos: torch.Tensor) -> None:
    model, path = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        got = sess.run(None, {"input": photos[:n].numpy()})[0]
        with torch.no_grad():
            want = model(photos[:n]).numpy()
        assert np.abs(got - want).max() <= 1e-3
        assert (got.argmax(1) == want.argmax(1)).all()


def test_check_refuses_a_wrong_export(exported: tuple[nn.Module, Path], photos: torch.Tensor) -> None:
    model, path = exported
    other = create_backbone().model
    with torch.no_grad():
        other.classifier.weight.mul_(-1.0)  # a different network than the file holds
    with pytest.raises(ExportCheckFailed, match="disagrees"):
        check_export(other, path, photos[:4])
    assert model is not other
