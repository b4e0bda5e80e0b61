"""Registry: versions, pointer, atomicity, corruption, rollback. Uses small real ONNX files."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import Manifest, Registry, RegistryError, VersionNotFound
from models.registry import ModelNotFound


def tiny_onnx(path: Path, bias: float) -> Path:
    """A real (tiny) ONNX classifier: logits = mean over pixels per channel + bias."""
    node = helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0)
    add = helper.make_node("Add", ["m", "b"], ["logits"])
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], [bias, 0.0, 0.0])
    graph = helper.make_graph(
        [node, add], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def manifest(name: str = "demo") -> Manifest:
    return Manifest(name=name, labels=["a", "b", "c"], backbone="tiny")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_register_assigns_increasing_versions_and_checksums(registry: Registry, tmp_path: Path) -> None:
    v1 = registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    v2 = registry.register(manifest(), tiny_onnx(tmp_path / "b.onnx", 2.0))
    assert (v1.version, v2.version) == (1, 2)
    assert registry.active_version("demo") == 1
    assert [v.status for v in registry.versions("demo")] == ["active", "registered"]
    stored = json.loads((v2.path / "manifest.json").read_text())
    assert stored["version"] == 2 and len(stored["sha256"]) == 64
    assert v1.manifest.sha256 != v2.manifest.sha256


def test_activate_and_rollback(registry: Registry, tmp_path: Path) -> None:
    for bias in (1.0, 2.0, 3.0):
        registry.register(manifest(), tiny_onnx(tmp_path / f"{bias}.onnx", bias), activate=True)
    assert registry.active_version("demo") == 3
    registry.activate("demo", 1)
    assert registry.active_version("demo") == 1
    assert registry.rollback("demo").version == 3
    assert registry.get("demo").version == 3


def test_unknown_model_and_version(registry: Registry, tmp_path: Path) -> None:
    registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0))
    with pytest.raises(ModelNotFound):
        registry.get("nope")
    with pytest.raises(VersionNotFound):
        registry.get("demo", 7)
    with pytest.raises(VersionNotFound, match="no active version"):
        registry.get("demo")
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.register(manifest("Bad Name/.."), tmp_path / "a.onnx")


def test_corrupt_version_is_never_usable(registry: Registry, tmp_path: Path) -> None:
    registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    v2 = registry.register(manifest(), tiny_onnx(tmp_path / "b.onnx", 2.0))
    with (v2.path / "model.onnx").open("r+b") as fh:  # flip bytes: checksum no longer matches
        fh.seek(10)
        fh.write(b"\x00\x01\x02\x03")
    fresh = Registry(registry.root)
    assert [v.version for v in fresh.versions("demo")] == [1]
    with pytest.raises(VersionNotFound, match="corrupt"):
        fresh.activate("demo", 2)
    assert fresh.active_version("demo") == 1


def test_half_written_temp_folder_is_ignored(registry: Registry, tmp_path: Path) -> None:
    registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    junk = registry.root / "demo" / ".tmp-crashed"
    junk.mkdir()
    (junk / "model.onnx").write_bytes(b"partial")
    (registry.root / "demo" / "9").mkdir()  # a version folder with nothing in it
    assert [v.version for v in registry.versions("demo")] == [1]
    assert registry.register(manifest(), tiny_onnx(tmp_path / "b.onnx", 2.0)).version == 10


def _register_then_die(root: str, model_file: str) -> None:
    """Child: write a version, then get SIGKILLed right before flipping the pointer."""
    import models.registry as reg

    def die(*_: object, **__: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    reg.Registry._flip_pointer = die  # type: ignore[method-assign]
    reg.Registry(Path(root)).register(manifest(), Path(model_file), activate=True)


def test_crash_between_write_and_flip_keeps_previous_active(registry: Registry, tmp_path: Path) -> None:
    registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_register_then_die, args=(str(registry.root), str(tiny_onnx(tmp_path / "b.onnx", 2.0))))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    fresh = Registry(registry.root)
    assert fresh.active_version("demo") == 1
    active = fresh.get("demo")
    assert active.version == 1 and active.model_path.read_bytes() == (tmp_path / "a.onnx").read_bytes()
    # the written-but-unflipped version is complete and usable, just not active
    assert [v.version for v in fresh.versions("demo")] == [1, 2]


def test_crash_while_copying_leaves_no_listed_version(registry: Registry, tmp_path: Path) -> None:
    registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 1.0), activate=True)
    missing = tmp_path / "missing.onnx"
    with pytest.raises(FileNotFoundError):
        registry.register(manifest(), missing, activate=True)
    assert [v.version for v in registry.versions("demo")] == [1]
    assert not [p for p in (registry.root / "demo").iterdir() if p.name.startswith(".tmp-")]


def test_registered_model_runs_in_onnxruntime(registry: Registry, tmp_path: Path) -> None:
    import onnxruntime as ort

    info = registry.register(manifest(), tiny_onnx(tmp_path / "a.onnx", 5.0), activate=True)
    sess = ort.InferenceSession(str(info.model_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": np.zeros((2, 3, 8, 8), np.float32)})[0]
    assert out.shape == (2, 3) and out[0, 0] == pytest.approx(5.0)


def test_registry_is_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, models, models.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
