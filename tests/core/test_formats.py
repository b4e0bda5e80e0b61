"""Format versions of the dataset store and the registry: older data reads (the committed fixture of the
release before versions), new writes carry the version, and a newer format is refused naming the upgrade."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.datasets import DATASET_FORMAT, DatasetTooNew
from core.formats import FORMAT_FILE, FormatTooNew, read_store_format
from dataset_store import DatasetStore
from models import Registry, VersionTooNew
from models.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MODEL_FILE, REGISTRY_FORMAT
from tests.models.test_registry import manifest, tiny_onnx

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "upgrade_home"
DATASET = "650e2bef797aa846"


@pytest.fixture
def old_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    return home


def test_the_previous_releases_stores_read_and_are_stamped(old_home: Path) -> None:
    assert "format_version" not in json.loads((old_home / "datasets" / DATASET / "index.json").read_text())
    assert read_store_format(old_home / "datasets") == 0 and read_store_format(old_home / "models") == 0
    dataset = DatasetStore(old_home / "datasets").get(DATASET)
    assert dataset.format_version == 0 and len(dataset.items("train")) == 10
    registry = Registry(old_home / "models")
    assert [v.version for v in registry.versions("colours")] == [1, 2]
    assert registry.get("colours").manifest.format_version == 0
    assert read_store_format(old_home / "datasets") == DATASET_FORMAT
    assert read_store_format(old_home / "models") == REGISTRY_FORMAT


def test_new_writes_carry_the_format(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "models")
    info = registry.register(manifest(), tiny_onnx(tmp_path / "m.onnx", 0.0))
    assert json.loads((info.path / MANIFEST_FILE).read_text())["format_version"] == MANIFEST_FORMAT
    assert read_store_format(tmp_path / "models") == REGISTRY_FORMAT


def _bump(path: Path, key: str = "format_version", value: int = 99) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))


def test_a_newer_store_format_is_refused_naming_the_upgrade(old_home: Path) -> None:
    for folder, open_store in ((old_home / "datasets", DatasetStore), (old_home / "models", Registry)):
        (folder / FORMAT_FILE).write_text('{"format_version": 99}')
        with pytest.raises(FormatTooNew, match=r"format version 99.*pip install -U tuneserve"):
            open_store(folder)


def test_a_newer_dataset_or_version_is_refused_and_the_others_stay_usable(old_home: Path) -> None:
    _bump(old_home / "datasets" / DATASET / "index.json")
    store = DatasetStore(old_home / "datasets")
    with pytest.raises(DatasetTooNew, match=rf"dataset {DATASET} has format version 99.*upgrade tuneserve"):
        store.get(DATASET)
    assert store.list() == []
    _bump(old_home / "models" / "colours" / "2" / MANIFEST_FILE)
    registry = Registry(old_home / "models")
    with pytest.raises(VersionTooNew, match=r"version 2 of model 'colours' has format version 99"):
        registry.get("colours", 2)
    assert [v.version for v in registry.versions("colours")] == [1]
    assert (old_home / "models" / "colours" / "2" / MODEL_FILE).is_file()  # refused, not removed
