"""Registry deletes: whole versions or none, the active one refused, numbers never reused, leftovers of a
crashed delete invisible and swept."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import ModelNotFound, Registry, VersionInUse, VersionNotFound
from tests.models.test_registry import manifest, tiny_onnx


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "models")
    for bias in (1.0, 2.0, 3.0):
        registry.register(manifest(), tiny_onnx(tmp_path / f"m{bias}.onnx", bias))
    registry.activate("demo", 3)
    registry.activate("demo", 2)  # history: [3]
    return registry


def test_delete_version(registry: Registry) -> None:
    with pytest.raises(VersionInUse, match="active"):
        registry.delete_version("demo", 2)
    registry.delete_version("demo", 3)
    assert [v.version for v in registry.versions("demo")] == [1, 2]
    assert registry.history("demo") == []  # a rollback never aims at a deleted version
    assert not list((registry.root / "demo").glob(".trash-*"))
    with pytest.raises(VersionNotFound):
        registry.delete_version("demo", 3)
    assert registry.register(manifest(), registry.get("demo", 1).model_path).version == 4


def test_trash_is_never_listed_and_is_swept(registry: Registry) -> None:
    crashed = registry.root / "demo" / ".trash-1-123"  # a delete that died between rename and removal
    (registry.get("demo", 1).path).rename(crashed)
    other = registry.root / ".trash-gone-456"
    other.mkdir()
    assert [v.version for v in registry.versions("demo")] == [2, 3]
    assert registry.model_names() == ["demo"]
    registry.delete_version("demo", 3)
    assert not crashed.exists()
    assert registry.delete_model("demo") == [2]
    assert not other.exists() and registry.model_names() == []
    with pytest.raises(ModelNotFound):
        registry.versions("demo")
