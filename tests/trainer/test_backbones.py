"""Backbone catalogue: explicit key mapping, pretrained accuracy on real photos, offline-only weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.images import open_rgb
from tests.photos import imagenet_rows
from trainer.backbones import (
    BackboneUnavailable,
    UnknownBackbone,
    available_backbones,
    create_backbone,
    hub_checkpoint_dir,
    lite0_weights_file,
    lukemelas_to_timm,
    torchvision_weights_file,
)
from trainer.data.transforms import EvalPreset


@pytest.fixture(scope="module")
def lite0():  # type: ignore[no-untyped-def]
    return create_backbone("efficientnet_lite0")


def test_key_mapping_is_complete_and_shape_exact(lite0) -> None:  # type: ignore[no-untyped-def]
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in lite0.model.blocks]
    mapped = lukemelas_to_timm(source, depths)
    target = lite0.model.state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # spot-check the rules, not positions: block 0 has no expansion, block 1 does
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped["blocks.1.0.conv_pw.weight"], source["_blocks.1._expand_conv.weight"])
    assert torch.equal(mapped["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(mapped["bn2.running_var"], source["_bn1.running_var"])


def test_unknown_key_is_refused() -> None:
    with pytest.raises(KeyError, match="no rule maps"):
        lukemelas_to_timm({"_mystery.weight": torch.zeros(1)}, [1])


def test_pretrained_accuracy_on_real_photos(lite0, imagenet_samples: Path) -> None:  # type: ignore[no-untyped-def]
    rows = imagenet_rows(imagenet_samples)
    preset = EvalPreset(lite0.preprocessing)
    batch = torch.stack([preset(open_rgb(imagenet_samples / r["filename"], 10**8)) for r in rows])
    with torch.no_grad():
        top5 = lite0.model(batch).topk(5).indices
    truth = torch.tensor([int(r["imagenet_index"]) for r in rows])
    top1_hits = int((top5[:, 0] == truth).sum())
    top5_hits = int((top5 == truth[:, None]).any(1).sum())
    assert top1_hits >= 37 and top5_hits >= 42, (top1_hits, top5_hits)


def test_preprocessing_reported(lite0) -> None:  # type: ignore[no-untyped-def]
    pre = lite0.preprocessing
    assert (pre.resize, pre.crop, pre.interpolation, pre.mean, pre.std) == (256, 224, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert lite0.feature_dim == 1280 and lite0.classifier().out_features == 1000


def test_catalogue_lists_torchvision_architectures() -> None:
    names = available_backbones()
    expected = {"efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"}
    assert expected <= set(names)
    with pytest.raises(UnknownBackbone, match=r"choose one of .*resnet18"):
        create_backbone("vgg_huge")


def test_missing_torchvision_weights_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    expected = torchvision_weights_file("resnet18")
    with pytest.raises(BackboneUnavailable) as err:
        create_backbone("resnet18")
    assert expected.name in str(err.value) and str(hub_checkpoint_dir()) in str(err.value)


def test_torchvision_weights_load_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file placed in the hub cache is loaded (here: a freshly initialised resnet18's)."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    path = torchvision_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    backbone = create_backbone("resnet18")
    assert torch.equal(backbone.model.fc.weight, reference.fc.weight)
    assert backbone.feature_dim == 512 and backbone.preprocessing.interpolation == "bilinear"
    backbone.replace_classifier(3)
    assert backbone.classifier().out_features == 3
