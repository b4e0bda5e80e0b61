"""fp16 / int8 variants: the gate, real conversions of the real model, and serving a variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.fsutil import sha256_file
from core.settings import Settings
from models import Registry
from models.manifest import Preprocessing
from service.inference.loaded import LoadedModel
from service.inference.onnx_session import OnnxEngine
from service.inference.preprocess import preprocess
from tests.photos import imagenet_rows
from trainer.publish.variants import build_variants, passes_gate, predict_top1

PRE = Preprocessing()


@pytest.mark.parametrize(
    ("agreement", "delta", "kept"),
    [
        (1.0, 0.0, True),
        (0.99, -0.01, True),  # both limits are inclusive
        (0.989, 0.0, False),  # disagrees with fp32 too often
        (1.0, -0.011, False),  # loses more than a point
        (0.995, None, True),  # no labels: agreement alone decides
        (0.98, None, False),
        (1.0, 0.02, True),  # getting better is fine
    ],
)
def test_gate(agreement: float, delta: float | None, kept: bool) -> None:
    assert passes_gate(agreement, delta) is kept


@pytest.fixture(scope="module")
def labelled(imagenet_samples: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = imagenet_rows(imagenet_samples)[:16]
    images = np.stack([preprocess((imagenet_samples / r["filename"]).read_bytes(), PRE, 40_000_000) for r in rows])
    return images, np.array([int(r["imagenet_index"]) for r in rows])


@pytest.fixture(scope="module")
def calibration(hymenoptera: Path) -> np.ndarray:
    files = [f for cls in ("ants", "bees") for f in sorted((hymenoptera / "train" / cls).glob("*.jpg"))[:16]]
    return np.stack([preprocess(f.read_bytes(), PRE, 40_000_000) for f in files])


@pytest.fixture(scope="module")
def fp32_model(bootstrapped_home: Path) -> Path:
    return Registry(bootstrapped_home / "models").get("imagenet").model_path


def test_fp16_variant_loads_and_agrees(fp32_model: Path, labelled: tuple[np.ndarray, np.ndarray],
                                       tmp_path: Path) -> None:
    images, labels = labelled
    variants = build_variants(fp32_model, tmp_path, images[:0], images, labels, kinds=("fp16",))
    fp16 = variants["fp16"]
    path = tmp_path / fp16.file
    assert fp16.sha256 == sha256_file(path)
    assert fp16.top1_agreement is not None and fp16.top1_agreement >= 0.99
    assert fp16.accuracy_delta is not None and fp16.accuracy_delta >= -0.01
    engine = OnnxEngine(path, Settings(device="cpu"))  # loads in the service's engine, fp32 in/out
    assert engine.input_type == np.float32
    logits16 = engine.run(images[:4])
    logits32 = OnnxEngine(fp32_model, Settings(device="cpu")).run(images[:4])
    assert (logits16.argmax(1) == logits32.argmax(1)).all()
    assert np.abs(logits16 - logits32).max() < 0.1
    # Really half precision; the out-of-distribution score's bank stays fp32 in every variant (one threshold).
    ood = json.loads((fp32_model.parent / "manifest.json").read_text()).get("ood") or {}
    bank_bytes = 4 * ood.get("bank_size", 0) * ood.get("feature_dim", 0)
    assert path.stat().st_size - bank_bytes < 0.6 * (fp32_model.stat().st_size - bank_bytes)


def test_int8_calibrated_on_real_images_is_registered_and_served(
    fp32_model: Path, labelled: tuple[np.ndarray, np.ndarray], calibration: np.ndarray, tmp_path: Path,
    bootstrapped_home: Path,
) -> None:
    images, labels = labelled
    out = tmp_path / "variants"
    variants = build_variants(fp32_model, out, calibration, images, labels, kinds=("int8",))
    assert set(variants) == {"int8"}
    assert variants["int8"].top1_agreement is not None and variants["int8"].top1_agreement >= 0.99
    # Register beside fp32 the way the publish step does, then serve it when configured.
    registry = Registry(tmp_path / "models")
    manifest = Registry(bootstrapped_home / "models").get("imagenet").manifest.model_copy(
        update={"variants": variants, "version": 0}
    )
    info = registry.register(manifest, fp32_model, extra_files={v.file: out / v.file for v in variants.values()},
                             activate=True)
    loaded = LoadedModel(info, Settings(home=tmp_path, device="cpu", variant="int8"))
    try:
        assert loaded.variant == "int8"
        top1 = loaded.engine.run(images).argmax(1)
    finally:
        loaded.retire()
    assert (top1 == predict_top1(fp32_model, images)).mean() >= 0.99


def test_int8_that_disagrees_is_not_registered(fp32_model: Path, labelled: tuple[np.ndarray, np.ndarray],
                                               tmp_path: Path) -> None:
    images, labels = labelled
    # Calibrated on flat grey images, the activation ranges are far too narrow for real photos.
    flat = np.zeros((4, 3, PRE.crop, PRE.crop), np.float32)
    variants = build_variants(fp32_model, tmp_path, flat, images, labels, kinds=("int8",))
    assert variants == {}
    assert not (tmp_path / "model.int8.onnx").exists()


def test_no_validation_images_is_refused(fp32_model: Path, tmp_path: Path) -> None:
    empty = np.zeros((0, 3, PRE.crop, PRE.crop), np.float32)
    with pytest.raises(ValueError, match="validation"):
        build_variants(fp32_model, tmp_path, empty, empty, None)
    shutil.rmtree(tmp_path, ignore_errors=True)
