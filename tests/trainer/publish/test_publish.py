"""Export + report + registration of a trained model, evaluation of the ONNX file, continuing from it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.datasets import Dataset
from core.jobspec import TrainSpec
from models import Registry, VersionInfo
from models.card import CARD_FILE
from trainer.calibrate.ood import OOD_FILE
from trainer.data.job_data import JobData
from trainer.data.pixels import normalize
from trainer.model_source import TORCH_FILE
from trainer.publish.cam import CAM_FILE
from trainer.publish.evaluate import evaluate_onnx
from trainer.publish.onnx_cpu import cpu_session
from trainer.publish.publisher import export_and_register
from trainer.publish.report import REPORT_FILES
from trainer.run.engine import TrainingResult, fine_tune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(synthetic: Dataset) -> TrainingResult:
    return fine_tune(TrainSpec(mode="linear", probe_epochs=30), synthetic)


@pytest.fixture(scope="module")
def published(trained: TrainingResult, synthetic: Dataset, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Registry, VersionInfo]:
    registry = Registry(tmp_path_factory.mktemp("models"))
    info = export_and_register(trained, registry, "colours", JobData(synthetic), {"job_id": "job-1"}, activate=True)
    return registry, info


def test_version_holds_model_report_and_lineage(published: tuple[Registry, VersionInfo], trained: TrainingResult,
                                                synthetic: Dataset) -> None:
    registry, info = published
    m = info.manifest
    assert registry.active_version("colours") == info.version == 1
    assert m.labels == ["blue", "green", "red"] and m.temperature == trained.temperature
    assert m.backbone == "efficientnet_lite0" and m.preprocessing == trained.preprocessing
    assert m.source["dataset_id"] == synthetic.id and m.source["job_id"] == "job-1"
    assert m.source["spec"]["mode"] == "linear" and m.source["base"]["name"] == "efficientnet_lite0"
    assert m.metrics["val_accuracy"] == trained.metrics["val_accuracy"]
    assert m.metrics["export_max_abs_logit_diff"] < 1e-3 and m.metrics["export_check_images"] == 12
    assert set(m.files) == {*REPORT_FILES, TORCH_FILE, CAM_FILE, OOD_FILE, CARD_FILE}
    assert m.cam is not None and m.cam.output == "features" and m.cam.weights == CAM_FILE
    with np.load(info.path / CAM_FILE) as head:  # the trained head, not ImageNet's
        assert head["weight"].shape == (3, 1280) and head["bias"].shape == (3,)
    for name in m.files:
        assert (info.path / name).is_file(), name
    for name in ("confusion_matrix.png", "reliability.png", "curves.png"):
        with Image.open(info.path / name) as img:
            assert img.format == "PNG" and img.width > 200


def test_version_says_none_of_these_in_the_same_session_run(published: tuple[Registry, VersionInfo],
                                                             synthetic: Dataset) -> None:
    _, info = published
    ood = info.manifest.ood
    assert ood is not None and ood["method"] == "knn_cosine" and ood["target_recall"] == 0.95
    assert ood["bank_size"] == 18 and ood["feature_dim"] == 1280 and ood["val_images"] == 12
    assert 0.0 <= ood["test_recall"] <= 1.0 and info.manifest.metrics["export_max_abs_ood_score_diff"] <= 1e-4
    session = cpu_session(info.model_path)
    assert [o.name for o in session.get_outputs()] == ["logits", "features", "ood_score"]
    data = JobData(synthetic)
    val = data.split("val", info.manifest.preprocessing)
    logits, _, scores = session.run(None, {"input": normalize(val.eval, info.manifest.preprocessing).numpy()})
    assert logits.shape == (12, 3) and scores.shape == (12,)
    assert float((scores <= ood["threshold"]).mean()) == pytest.approx(ood["val_recall"]) and ood["val_recall"] >= 0.95
    gen = torch.Generator().manual_seed(0)
    far = torch.cat([torch.randn(4, 3, 224, 224, generator=gen), torch.zeros(2, 3, 224, 224)]).numpy()
    far_scores = session.run(["ood_score"], {"input": far})[0]
    assert far_scores.min() > scores.max() and (far_scores > ood["threshold"]).all()


def test_version_records_its_risk_coverage(published: tuple[Registry, VersionInfo]) -> None:
    _, info = published
    selective = info.manifest.selective
    assert selective is not None and selective["target_accuracy"] is None and selective["min_confidence"] is None
    curve = selective["risk_coverage"]
    assert curve[0][0] == 1.0 and all(a[0] > b[0] and a[2] < b[2] for a, b in itertools.pairwise(curve))
    report = json.loads((info.path / "report.json").read_text())
    assert set(report["risk_coverage"]) == {"val", "test"} and report["ood"] == info.manifest.ood
    assert report["risk_coverage"]["val"][0][1] == pytest.approx(report["splits"]["val"]["accuracy"])
    with Image.open(info.path / "risk_coverage.png") as img:
        assert img.format == "PNG"


def test_report_agrees_with_the_metrics(published: tuple[Registry, VersionInfo], trained: TrainingResult) -> None:
    _, info = published
    report = json.loads((info.path / "report.json").read_text())
    val, test = report["splits"]["val"], report["splits"]["test"]
    assert val["accuracy"] == pytest.approx(trained.metrics["val_accuracy"])
    assert test["accuracy"] == pytest.approx(trained.metrics["test_accuracy"])
    held_out = trained.metrics["ece_split"]
    assert held_out == "test"  # ECE before/after is measured on data the temperature was not fitted on
    assert report["splits"][held_out]["ece"] == pytest.approx(trained.metrics["ece_after"])
    assert report["calibration"]["ece_before"] == pytest.approx(trained.metrics["ece_before"])
    assert report["calibration"]["split"] == "test"
    for split in (val, test):
        matrix = split["confusion_matrix"]
        assert sum(map(sum, matrix)) == split["images"] == 12
        assert sum(matrix[i][i] for i in range(3)) == round(split["accuracy"] * 12)
        assert split["misclassified_count"] == 12 - round(split["accuracy"] * 12)
        assert sum(c["support"] for c in split["per_class"].values()) == 12
    confusion = json.loads((info.path / "confusion_matrix.json").read_text())
    assert confusion["val"]["matrix"] == val["confusion_matrix"]
    wrong = json.loads((info.path / "misclassified.json").read_text())
    assert len(wrong["val"]) == val["misclassified_count"]
    assert all(w["label"] != w["predicted"] and w["path"].startswith("images/") for w in wrong["val"])
    assert len(report["history"]) == trained.metrics["epochs_run"]


def test_evaluate_onnx_matches_the_torch_model(published: tuple[Registry, VersionInfo], trained: TrainingResult,
                                              synthetic: Dataset) -> None:
    _, info = published
    for split in ("val", "test"):
        got = evaluate_onnx(info.model_path, info.manifest, JobData(synthetic), split)
        assert got["accuracy"] == pytest.approx(trained.metrics[f"{split}_accuracy"])
        assert got["images"] == 12 and got["version"] == 1
    held_out = evaluate_onnx(info.model_path, info.manifest, JobData(synthetic), "test")
    assert held_out["ece"] == pytest.approx(trained.metrics["ece_after"], abs=1e-4)


def test_evaluate_onnx_refuses_labels_the_model_does_not_know(published: tuple[Registry, VersionInfo],
                                                             hym_small: Dataset) -> None:
    _, info = published
    with pytest.raises(ValueError, match="ants"):
        evaluate_onnx(info.model_path, info.manifest, JobData(hym_small), "val")


def test_continue_from_a_registered_version(published: tuple[Registry, VersionInfo], trained: TrainingResult,
                                            synthetic: Dataset, tmp_path: Path) -> None:
    registry, _ = published
    seen = []
    spec = TrainSpec(base="registry:colours:1", mode="linear", probe_epochs=1, lr=1e-9)
    result = fine_tune(spec, synthetic, registry=registry, on_progress=seen.append)
    assert result.base == {"kind": "registry", "model": "colours", "version": 1,
                           "sha256": registry.get("colours", 1).manifest.sha256, "head": "kept"}
    # The kept head with a ~zero LR reproduces the registered model's validation loss.
    assert seen[0].val_loss == pytest.approx(trained.metrics["val_loss"], abs=1e-4)
    with pytest.raises(Exception, match="no version 7"):
        fine_tune(TrainSpec(base="registry:colours:7", mode="linear"), synthetic, registry=registry)


def test_variants_are_built_gated_and_served_when_configured(
    trained: TrainingResult, synthetic: Dataset, tmp_path: Path
) -> None:
    """A job asked for variants registers them beside fp32 (they pass the gate on this easy set); the
    service's LoadedModel serves int8 when configured, and fp32 instead of fp16 on a CPU."""
    from core.settings import Settings
    from service.inference.loaded import LoadedModel

    registry = Registry(tmp_path / "models")
    info = export_and_register(trained, registry, "colours", JobData(synthetic), {}, activate=True,
                               variants=("fp16", "int8"))
    assert set(info.manifest.variants) == {"fp16", "int8"}
    variant = info.manifest.variants["int8"]
    assert (info.path / variant.file).is_file() and variant.top1_agreement is not None
    assert variant.top1_agreement >= 0.99 and (variant.accuracy_delta or 0.0) <= 0.01
    loaded = LoadedModel(info, Settings(home=tmp_path, variant="int8"))
    try:
        assert loaded.variant == "int8"
    finally:
        loaded.retire()
    on_cpu = LoadedModel(info, Settings(home=tmp_path, variant="fp16"))
    try:
        assert on_cpu.provider == "CPUExecutionProvider" and on_cpu.variant == "fp32"
    finally:
        on_cpu.retire()


def test_same_labels_in_another_order_are_published_in_the_served_order(
        trained: TrainingResult, synthetic: Dataset, tmp_path: Path) -> None:
    import copy

    from core.settings import Settings
    from trainer.publish.publisher import Request, Trained, publish
    from trainer.run.labels import reorder_labels

    served = ["red", "blue", "green"]  # what callers of "colours" know index i to mean
    registry = Registry(tmp_path / "models")
    v1 = export_and_register(reorder_labels(copy.deepcopy(trained), served), registry, "colours",
                             JobData(synthetic), {"job_id": "job-1"}, activate=True)
    assert v1.manifest.labels == served
    settings = Settings(home=tmp_path, build_variants="")
    out = publish(Trained(copy.deepcopy(trained), JobData(synthetic)), registry,
                  Request("colours", "job", job_id="job-2"), settings)
    v2 = registry.get("colours", out["version"])
    assert trained.labels == ["blue", "green", "red"] and v2.manifest.labels == served  # mapped, not refused
    candidate, active = out["evaluation"]["candidate"], out["evaluation"]["active"]
    assert active["version"] == 1  # compared like for like with the served version
    assert candidate["accuracy"] == pytest.approx(active["accuracy"]) == pytest.approx(trained.metrics["test_accuracy"])
    assert out["promoted"]


def test_reorder_labels_permutes_outputs_without_changing_predictions(trained: TrainingResult) -> None:
    import copy

    import torch

    from trainer.run.labels import reorder_labels

    order = ["green", "red", "blue"]
    moved = reorder_labels(copy.deepcopy(trained), order)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        before, after = trained.model.eval()(x), moved.model.eval()(x)
    perm = [trained.labels.index(n) for n in order]
    assert torch.allclose(after, before[:, perm], atol=1e-5)
    val, moved_val = trained.outputs["val"], moved.outputs["val"]
    names = [trained.labels[i] for i in val.labels]
    assert [order[i] for i in moved_val.labels] == names  # every image keeps its label name
    assert (moved_val.logits.argmax(1) == moved_val.labels).float().mean() == \
        (val.logits.argmax(1) == val.labels).float().mean()
    with pytest.raises(ValueError, match="not the same set"):
        reorder_labels(copy.deepcopy(trained), ["blue", "green"])
