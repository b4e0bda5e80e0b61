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
from trainer.data.transforms import EvalPreset
from trainer.publish.export import ExportCheckFailed, check_export, export_onnx


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


def test_feature_map_output_gives_exact_cams(exported: tuple[nn.Module, Path], photos: torch.Tensor) -> None:
    """The second output is the last feature map; W . F averaged over the map plus b is the logit."""
    _, path = exported
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "features"]
    logits, feats = sess.run(None, {"input": photos[:4].numpy()})
    assert feats.shape == (4, 1280, 7, 7)
    head = np.load(path.parent / "cam.npz")
    assert head["weight"].shape == (1000, 1280) and head["bias"].shape == (1000,)
    cams = np.einsum("kc,nchw->nkhw", head["weight"], feats)
    assert np.abs(cams.mean(axis=(2, 3)) + head["bias"] - logits).max() < 1e-3
    only_logits = sess.run(["logits"], {"input": photos[:4].numpy()})[0]  # what the service asks for
    assert np.array_equal(only_logits, logits)


def test_head_without_gap_and_linear_gets_no_cam(tmp_path: Path, photos: torch.Tensor) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    report = export_onnx(model, 224, tmp_path / "model.onnx", photos[:2])
    assert report.cam_file is None and not (tmp_path / "cam.npz").exists()
    assert [o.name for o in ort.InferenceSession(str(tmp_path / "model.onnx")).get_outputs()] == ["logits"]
