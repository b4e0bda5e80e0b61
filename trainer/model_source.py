"""Where a run's starting weights come from: a catalogue backbone or a registered model version.

The registry stores ONNX for serving; every version the trainer registers also carries
``model.pt`` (state_dict + backbone name + labels), which is what a later run continues from.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from models import Registry
from trainer.backbones import Backbone, create_backbone

log = logging.getLogger(__name__)

TORCH_FILE = "model.pt"


class BaseUnavailable(ValueError):
    """The spec's base cannot be loaded (unknown version, or a version without torch weights)."""


def torch_payload(backbone: Backbone, labels: list[str]) -> dict[str, Any]:
    return {"format": 1, "backbone": backbone.name, "num_classes": len(labels), "labels": list(labels),
            "state_dict": {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()}}


_PRISTINE: dict[str, Backbone] = {}


def pristine_backbone(name: str) -> Backbone:
    """A fresh copy of catalogue backbone ``name``; the built original is kept per process (a search
    runs many trials, and building means re-reading and re-mapping the weights file)."""
    if name not in _PRISTINE:
        _PRISTINE[name] = create_backbone(name)
    return copy.deepcopy(_PRISTINE[name])


def load_base(base: str, registry_base: tuple[str, int] | None, labels: list[str],
              registry: Registry | None) -> tuple[Backbone, dict[str, Any]]:
    """The starting network with a head for ``labels`` (kept when the base had the same labels)."""
    if registry_base is None:
        backbone = pristine_backbone(base)
        backbone.replace_classifier(len(labels))
        return backbone, {"kind": "backbone", "name": base}
    if registry is None:  # the caller (a task entry, the CLI) passes the registry of its settings
        raise BaseUnavailable(f"base {base!r} is a registered version, but no registry was given to load it from")
    name, version = registry_base
    try:
        info = registry.get(name, version)
    except Exception as exc:  # ModelNotFound / VersionNotFound: say what to fix
        raise BaseUnavailable(f"base {base!r}: {exc}") from exc
    lineage = {"kind": "registry", "model": name, "version": version, "sha256": info.manifest.sha256}
    torch_file = info.path / TORCH_FILE
    if torch_file.is_file():
        payload = torch.load(torch_file, map_location="cpu", weights_only=True)
        backbone = pristine_backbone(payload["backbone"])
        backbone.replace_classifier(int(payload["num_classes"]))
        backbone.model.load_state_dict(payload["state_dict"])
        same_head = list(payload.get("labels", [])) == list(labels)
    elif info.manifest.source.get("kind") == "pretrained":
        backbone = pristine_backbone(info.manifest.backbone)  # e.g. the bootstrapped ImageNet model
        same_head = False
    else:
        raise BaseUnavailable(
            f"base {base!r} has no {TORCH_FILE} (only versions registered by the trainer can be continued)"
        )
    if not same_head:
        backbone.replace_classifier(len(labels))
    lineage["head"] = "kept" if same_head else "new"
    backbone.model.eval()
    return backbone, lineage
