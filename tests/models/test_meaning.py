"""models.meaning: which label sets a job may publish under an existing model name."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Manifest, Registry
from models.meaning import LabelConflict, check_labels
from tests.models.test_registry import tiny_onnx


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "models")
    registry.register(Manifest(name="shop", labels=["shoes", "hat", "pants"], backbone="tiny"),
                      tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    return registry


def test_a_new_name_is_free(registry: Registry) -> None:
    assert check_labels(registry, "fresh", ["ants", "bees"]) is None


def test_same_labels_in_another_order_map_to_the_served_order(registry: Registry) -> None:
    assert check_labels(registry, "shop", ["hat", "pants", "shoes"]) == ["shoes", "hat", "pants"]


def test_other_labels_are_refused_naming_both_fixes_unless_replacing(registry: Registry) -> None:
    with pytest.raises(LabelConflict, match=r"new model name.*replace_labels") as info:
        check_labels(registry, "shop", ["hat", "pants", "socks"])
    assert "not in the dataset: shoes" in str(info.value) and "new: socks" in str(info.value)
    assert check_labels(registry, "shop", ["hat", "pants", "socks"], replace_labels=True) is None


def test_the_pretrained_model_is_never_replaced_by_a_job(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(LabelConflict, match="cannot replace"):
        check_labels(registry, "imagenet", ["ants", "bees"], replace_labels=True)
    registry.register(Manifest(name="vision", labels=["a", "b", "c"], backbone="tiny",
                               source={"kind": "pretrained"}), tiny_onnx(tmp_path / "b.onnx", 1.0), activate=True)
    with pytest.raises(LabelConflict, match="activated or rolled back by hand"):
        check_labels(registry, "vision", ["a", "b", "c"])
