"""The out-of-distribution score (trainer/calibrate/ood.py) and the risk-coverage curve
(trainer/calibrate/selective.py).

Fast: numpy facts, and a tiny convolutional network exported with its ``ood_score`` output. The score of
a real trained version and of the bootstrapped ``imagenet`` model is checked in test_publish.py and
test_bootstrap_ood below (they reuse the session's exports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from trainer.calibrate.ood import (
    OOD_OUTPUT,
    WithScore,
    choose_bank,
    fit_scorer,
    knn_scores,
    normalise,
    threshold_at_recall,
)
from trainer.calibrate.selective import floor_for, full_curve, selective_summary
from trainer.publish.export import ExportCheckFailed, check_export, export_onnx
from trainer.publish.onnx_cpu import cpu_session
from trainer.publish.variants import convert_fp16, score_only_nodes
from trainer.run.result import SplitOutput


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3)).eval()


def pooled(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """What enters the classifier: the reference features, computed without the wrapper."""
    with torch.no_grad():
        return net[:-1](x).numpy()


def class_images(n: int, seed: int) -> torch.Tensor:
    """Three smooth colour 'classes' with a little noise (normalised like the service's input)."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[0.8, -0.6, -0.6], [-0.6, 0.7, -0.5], [-0.5, -0.4, 0.8]])
    base = colours[torch.arange(n) % 3][:, :, None, None].expand(n, 3, 32, 32)
    return base + 0.1 * torch.randn(n, 3, 32, 32, generator=gen)


def test_knn_score_is_one_minus_the_kth_cosine_similarity() -> None:
    rng = np.random.default_rng(0)
    bank, queries = normalise(rng.normal(size=(50, 8))), rng.normal(size=(7, 8))
    sims = normalise(queries) @ bank.T
    for k in (1, 3):
        want = 1 - np.sort(sims, axis=1)[:, -k]
        assert np.allclose(knn_scores(bank, queries, k), want, atol=1e-6)
    assert np.allclose(knn_scores(bank, bank[:5] * 3.0, 1), 0.0, atol=1e-6)  # a training photo: distance 0


@pytest.mark.parametrize("recall", [0.9, 0.95, 1.0])
def test_threshold_keeps_the_stated_share_of_validation(recall: float) -> None:
    rng = np.random.default_rng(1)
    train, val = rng.normal(size=(200, 16)), rng.normal(size=(97, 16))
    scorer = fit_scorer(train, val, target_recall=recall)
    scores = knn_scores(scorer.bank, val, scorer.k)
    assert scorer.val_recall == pytest.approx(float((scores <= scorer.threshold).mean()))
    assert scorer.val_recall >= recall  # kept at least the stated share ...
    assert float((scores < scorer.threshold).mean()) < recall  # ... and the threshold is the smallest that does
    assert threshold_at_recall(np.array([0.3, 0.1, 0.2]), 1.0) == pytest.approx(0.3)


def test_bank_is_bounded_and_keeps_every_class_in_proportion() -> None:
    labels = np.array([0] * 900 + [1] * 300 + [2] * 3)
    rows = choose_bank(labels, limit=120, seed=0)
    assert len(rows) <= 120 and len(set(rows.tolist())) == len(rows)
    counts = np.bincount(labels[rows], minlength=3)
    assert counts[2] >= 1 and abs(counts[0] / counts[1] - 3) < 0.2
    assert np.array_equal(choose_bank(labels[:50], limit=120), np.arange(50))


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, object]:
    net = tiny_net()
    train, val = class_images(60, 1), class_images(30, 2)
    scorer = fit_scorer(pooled(net, train), pooled(net, val))
    path = tmp_path_factory.mktemp("ood") / "model.onnx"
    report = export_onnx(net, 32, path, class_images(8, 3), ood=scorer)
    assert report.ood_file is not None and report.ood_file.is_file()
    assert report.max_abs_score_diff is not None and report.max_abs_score_diff <= 1e-4
    return net, path, scorer


def test_graph_gives_logits_and_score_in_one_run_matching_the_reference(tiny_export: tuple) -> None:
    net, path, scorer = tiny_export
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logits", OOD_OUTPUT]
    session = cpu_session(path)
    x = class_images(5, 9)
    logits, score = session.run(None, {"input": x.numpy()})
    assert logits.shape == (5, 3) and score.shape == (5,) and score.dtype == np.float32
    with torch.no_grad():
        assert np.abs(logits - net(x).numpy()).max() < 1e-4
    assert np.abs(score - scorer.score(pooled(net, x))).max() < 1e-5  # the numpy reference
    with np.load(path.parent / "ood.npz") as saved:
        assert np.array_equal(saved["bank"], scorer.bank) and float(saved["threshold"]) == scorer.threshold


def test_far_off_inputs_score_higher_than_the_training_classes(tiny_export: tuple) -> None:
    _, path, scorer = tiny_export
    session = cpu_session(path)
    inside = session.run(None, {"input": class_images(30, 4).numpy()})[1]
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(10, 3, 32, 32, generator=gen) * 2
    constant = torch.full((4, 3, 32, 32), -1.0)
    for far in (noise, constant):
        outside = session.run(None, {"input": far.numpy()})[1]
        assert outside.min() > np.median(inside) and (outside > scorer.threshold).all()
    assert (inside <= scorer.threshold).mean() >= 0.85


def test_check_refuses_a_score_that_disagrees(tiny_export: tuple) -> None:
    net, path, _scorer = tiny_export
    other = fit_scorer(pooled(net, class_images(60, 7)) + 5.0, pooled(net, class_images(9, 8)))
    with pytest.raises(ExportCheckFailed, match=OOD_OUTPUT):
        check_export(WithScore(net, net, other).eval(), path, class_images(4, 6))


def test_fp16_variant_keeps_the_score_in_fp32(tiny_export: tuple, tmp_path: Path) -> None:
    _, path, _ = tiny_export
    model = onnx.load(str(path))
    assert score_only_nodes(model) and not score_only_nodes(model, "no-such-output")
    fp16 = convert_fp16(path, tmp_path / "model.fp16.onnx")
    x = class_images(6, 10).numpy()
    ref, got = cpu_session(path).run(None, {"input": x}), cpu_session(fp16).run(None, {"input": x})
    assert [o.name for o in cpu_session(fp16).get_outputs()] == ["logits", OOD_OUTPUT]
    assert np.abs(ref[1] - got[1]).max() < 5e-3


def test_risk_coverage_curve_facts() -> None:
    rng = np.random.default_rng(3)
    conf = np.round(rng.uniform(0.3, 1.0, 400), 2)  # ties on purpose
    correct = rng.uniform(size=400) < conf  # more sure, more often right
    curve = full_curve(conf, correct)
    assert curve[0, 0] == 1.0 and curve[0, 1] == pytest.approx(correct.mean())
    assert np.all(np.diff(curve[:, 0]) < 0) and np.all(np.diff(curve[:, 2]) > 0)  # stricter floor, fewer answers
    for coverage, accuracy, floor in curve[::17]:
        answered = conf >= floor
        assert coverage == pytest.approx(answered.mean()) and accuracy == pytest.approx(correct[answered].mean())
    row = floor_for(curve, 0.9)
    assert row is not None and np.all(curve[curve[:, 2] >= row[2], 1] >= 0.9)
    assert floor_for(curve, 1.01) is None


def test_selective_summary_sets_a_floor_only_for_a_target() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 4, generator=gen) * 3
    top = logits.softmax(1).max(1).values  # right about as often as it is sure (with the surest always right)
    right = (torch.rand(300, generator=gen) < top) | (top > 0.97)
    labels = torch.where(right, logits.argmax(1), (logits.argmax(1) + 1) % 4)
    outputs = {"val": SplitOutput(logits, labels, []), "test": SplitOutput(logits[:100], labels[:100], [])}
    none, curves = selective_summary(outputs, 1.0, None)
    assert none["min_confidence"] is None and none["target_accuracy"] is None and set(curves) == {"val", "test"}
    assert 2 <= len(none["risk_coverage"]) <= 50 and none["risk_coverage"][0][0] == 1.0
    accuracy = float((logits.argmax(1) == labels).float().mean())
    target = (accuracy + 1.0) / 2
    chosen, _ = selective_summary(outputs, 1.0, target)
    assert chosen["target_accuracy"] == target and chosen["min_confidence"] is not None
    assert chosen["val_at_min_confidence"]["accuracy"] >= target and chosen["val_at_min_confidence"]["coverage"] < 1
    assert "test_at_min_confidence" in chosen
    unreachable, _ = selective_summary({"val": SplitOutput(logits, (logits.argmax(1) + 1) % 4, [])}, 1.0, 0.5)
    assert unreachable["min_confidence"] is None and unreachable["reachable"] is False


@pytest.mark.slow
def test_bootstrapped_imagenet_model_has_the_score(bootstrapped_home: Path, imagenet_samples: Path) -> None:
    from models import Registry
    from trainer.backbones import create_backbone
    from trainer.data.transforms import EvalPreset
    from trainer.publish.bootstrap import IMAGENET_THRESHOLD, check_batch_from, prototype_scorer

    info = Registry(bootstrapped_home / "models").get("imagenet")
    ood = info.manifest.ood
    assert ood is not None and ood["bank_size"] == 1000 and "classifier weights" in ood["fitted_on"]
    assert "ood.npz" in info.manifest.files and (info.path / "ood.npz").is_file()
    session = cpu_session(info.model_path)
    assert [o.name for o in session.get_outputs()] == ["logits", "features", OOD_OUTPUT]
    backbone = create_backbone()
    photos = check_batch_from(imagenet_samples, EvalPreset(backbone.preprocessing), limit=100)
    assert photos is not None and len(photos) == 43
    inside = session.run([OOD_OUTPUT], {"input": photos[:16].numpy()})[0]
    assert (inside <= ood["threshold"]).mean() >= 0.95  # the threshold was chosen on these 16 check photos
    gen = torch.Generator().manual_seed(0)
    far = torch.cat([torch.randn(3, 3, 224, 224, generator=gen), torch.zeros(1, 3, 224, 224)]).numpy()
    assert (session.run([OOD_OUTPUT], {"input": far})[0] > ood["threshold"]).all()
    # Without check photos the threshold is the constant, measured on all 43 shipped photos: keep them equal.
    assert prototype_scorer(backbone.model.eval(), photos).threshold == pytest.approx(IMAGENET_THRESHOLD, abs=1e-4)
