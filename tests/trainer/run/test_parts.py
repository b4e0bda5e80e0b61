"""The engine's parts on their own: schedules, calibration, presets, LR range test, metrics."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as S

from models.manifest import Preprocessing
from trainer.calibrate.calibration import EDGE, LOG_T_MAX, LOG_T_MIN, calibrate, expected_calibration_error
from trainer.data.transforms import batch_mix, train_preset
from trainer.publish.evaluate import classification_metrics
from trainer.run.lr_finder import lr_range_test
from trainer.run.schedulers import build_scheduler


def _lrs(name: str, steps: int = 10, epochs: int = 4, warmup: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(name, opt, steps, epochs, warmup, maximize=True)
    out = []
    for _ in range(steps * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warms_up_linearly_then_decays() -> None:
    lrs = _lrs("cosine")
    assert lrs[0] == pytest.approx(0.01)  # start_factor 0.1
    assert lrs[10] == pytest.approx(0.1)  # warmup over one epoch of 10 steps
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] < 0.002


def test_onecycle_and_step_shapes() -> None:
    one = _lrs("onecycle")
    peak = one.index(max(one))
    assert 0 < peak < len(one) - 1 and max(one) == pytest.approx(0.1, rel=0.05) and one[-1] < 0.001
    step = _lrs("step", steps=3, epochs=3)
    assert sorted(set(round(v, 6) for v in step), reverse=True) == [0.1, 0.01, 0.001]


def test_plateau_reduces_when_metric_stalls() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler("plateau", opt, 5, 10, 0, maximize=True)
    assert isinstance(sched, S.ReduceLROnPlateau)
    for _ in range(4):
        sched.step(0.5)
    assert opt.param_groups[0]["lr"] < 0.1


def test_unknown_scheduler_names_the_valid_ones() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="cosine, onecycle, step, plateau"):
        build_scheduler("cyclic", opt, 1, 1, 0, maximize=False)


def test_temperature_scaling_lowers_ece_of_overconfident_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=gen)
    clean = torch.randn(600, 3, generator=gen) + 1.5 * nn.functional.one_hot(labels, 3)
    logits = clean * 4.0  # the same ranking, 4x too confident
    t = calibrate(logits, labels).temperature
    before = expected_calibration_error(logits.softmax(1), labels)
    after = expected_calibration_error((logits / t).softmax(1), labels)
    assert 1.8 < t < 4.0  # calibrated logits are 1.5x the clean ones: T is about 4 / 1.5
    assert after < before / 2


def _nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    return float(nn.functional.cross_entropy(logits / t, labels))


@pytest.mark.parametrize("scale", [0.05, 0.3, 1.0, 3.0, 12.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_never_raises_nll_and_applies_only_an_interior_optimum(scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 40 + 60 * seed  # small validation sets too
    labels = torch.randint(0, 4, (n,), generator=gen)
    logits = (torch.randn(n, 4, generator=gen) + 2.0 * nn.functional.one_hot(labels, 4)) * scale
    cal = calibrate(logits, labels)
    before, served = _nll(logits, labels, 1.0), _nll(logits, labels, cal.temperature)
    assert served <= before + 1e-7
    assert cal.val_nll_before == pytest.approx(before, abs=1e-6)
    assert cal.val_nll_after == pytest.approx(served, abs=1e-6)
    if cal.applied:
        assert served < before
        log_t = math.log(cal.temperature)
        assert LOG_T_MIN + EDGE < log_t < LOG_T_MAX - EDGE
        # a real optimum: no temperature on a fine grid does better
        grid = torch.linspace(log_t - 1.0, log_t + 1.0, 201).exp()
        assert served <= min(_nll(logits, labels, float(t)) for t in grid) + 1e-6
    else:
        assert cal.temperature == 1.0


def test_underconfident_logits_get_a_temperature_below_one_not_at_a_bound() -> None:
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 3, (300,), generator=gen)
    logits = (torch.randn(300, 3, generator=gen) + 1.5 * nn.functional.one_hot(labels, 3)) * 0.2
    cal = calibrate(logits, labels)
    assert cal.applied and 0.05 < cal.temperature < 0.5  # the old floor (0.25) was hit by runs like this
    assert cal.val_nll_after < cal.val_nll_before


def test_perfectly_separated_validation_keeps_temperature_one() -> None:
    labels = torch.tensor([0, 1] * 10)
    logits = nn.functional.one_hot(labels, 2).float() * 3.0  # every answer right: NLL falls as T -> 0
    cal = calibrate(logits, labels)
    assert not cal.applied and cal.temperature == 1.0 and cal.fitted < 0.05
    assert "no optimum" in cal.reason


def test_ece_of_perfectly_calibrated_predictions_is_small() -> None:
    probs = torch.tensor([[0.75, 0.25]] * 400)
    labels = torch.tensor([0] * 300 + [1] * 100)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(torch.tensor([[0.9, 0.1]] * 4), torch.tensor([1, 1, 1, 1])) \
        == pytest.approx(0.9)


@pytest.mark.parametrize("augment", ["none", "light", "standard", "strong"])
def test_presets_crop_uint8_tensors(augment: str) -> None:
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    out = train_preset(augment, 48)(img)
    assert out.shape == (3, 48, 48) and out.dtype == torch.uint8
    if augment == "none":
        assert torch.equal(out, img[:, 8:56, 8:56])
    mix = batch_mix(augment, 3)
    assert (mix is None) == (augment != "strong")
    if mix is not None:
        _, y = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
        assert y.shape == (4, 3) and torch.allclose(y.sum(1), torch.ones(4))


def test_unknown_augment_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="none, light, standard, strong"):
        train_preset("heavy", 32)


def test_lr_range_test_picks_a_working_lr_and_restores_the_head() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=gen)
    feats = torch.randn(256, 16, generator=gen) + 2.0 * labels[:, None].float()
    head = nn.Linear(16, 2)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    lr = lr_range_test(head, feats, labels, lambda p, lr: torch.optim.AdamW(p, lr=lr), nn.CrossEntropyLoss(), 32, 0)
    assert 1e-4 < lr < 1.0
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())


def test_classification_metrics_agree_with_a_hand_count() -> None:
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    m = classification_metrics(logits, labels, ["a", "b"], paths=[f"p{i}" for i in range(5)])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["confusion_matrix"] == [[2, 0], [1, 2]]
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3) and m["per_class"]["a"]["recall"] == 1.0
    assert m["per_class"]["b"]["recall"] == pytest.approx(2 / 3) and m["per_class"]["b"]["precision"] == 1.0
    assert m["misclassified"] == [{"path": "p3", "label": "b", "predicted": "a",
                                   "confidence": pytest.approx(float(torch.tensor([2.0, 0.0]).softmax(0)[0]))}]


def test_preprocessing_normalize_matches_eval_preset_numbers() -> None:
    from trainer.data.pixels import normalize

    pre = Preprocessing()
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert normalize(x, pre).flatten().tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0])


def test_device_crop_loader_crops_flips_and_covers_every_image() -> None:
    from trainer.run.loops import DeviceCropLoader

    pixels = torch.arange(6 * 3 * 32 * 32, dtype=torch.float32).reshape(6, 3, 32, 32).remainder(251).to(torch.uint8)
    labels = torch.arange(6)
    center = DeviceCropLoader(pixels, labels, 4, 16, False, torch.Generator().manual_seed(0), drop_last=False)
    batches = list(center)
    assert len(center) == 2 and [len(y) for _, y in batches] == [4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(6))
    x, y = batches[0]
    assert torch.allclose(x, pixels[y][:, :, 8:24, 8:24].float(), atol=1e-3)  # aligned center crop is exact
    rand = DeviceCropLoader(pixels, labels, 4, 16, True, torch.Generator().manual_seed(0), drop_last=True)
    first = [b[0] for b in rand]
    again = [b[0] for b in DeviceCropLoader(pixels, labels, 4, 16, True, torch.Generator().manual_seed(0), True)]
    assert len(first) == 1 and first[0].shape == (4, 3, 16, 16) and torch.equal(first[0], again[0])


@pytest.mark.parametrize("name", ["cosine", "onecycle", "step"])  # plateau steps per epoch (above)
@pytest.mark.parametrize(("steps", "epochs"), [(1, 1), (2, 1), (1, 3)])
def test_every_schedule_survives_tiny_runs(name: str, steps: int, epochs: int) -> None:
    lrs = _lrs(name, steps=steps, epochs=epochs)
    assert len(lrs) == steps * epochs and all(lr > 0 for lr in lrs)


@pytest.mark.parametrize("optimizer,cap", [("adamw", 1e-3), ("sgd", 1e-2)])
def test_auto_lr_fine_tuning_takes_a_tenth_of_the_probe_rate_capped(optimizer: str, cap: float) -> None:
    from core.jobspec import TrainSpec
    from trainer.run.optim import stage_lr
    from trainer.run.stages import Stage

    probe, ft = Stage("linear", 1), Stage("finetune", 1)
    auto = TrainSpec(lr="auto", optimizer=optimizer)
    assert stage_lr(auto, probe, 1.9e-2) == 1.9e-2
    assert stage_lr(auto, ft, 1.9e-2) == pytest.approx(min(1.9e-3, cap))
    assert stage_lr(auto, ft, 1.9e-2) < 1.9e-2  # never the head's rate
    assert stage_lr(auto, ft, 2e-3) == pytest.approx(2e-4)
    assert stage_lr(TrainSpec(lr=0.02, optimizer=optimizer), ft, 1.9e-2) == 0.02  # a given number is used as is


def test_classification_metrics_per_class_scores_on_a_known_confusion() -> None:
    from trainer.publish.evaluate import classification_metrics

    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 0, 1, 1, 0, 0])  # class 2 never predicted right; nothing predicted as 2
    logits = nn.functional.one_hot(predicted, 3).float() * 5
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
    a, b, c = (m["per_class"][n] for n in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(2 / 4), pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)  # 0, not NaN
    assert a["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert m["accuracy"] == pytest.approx(3 / 6) and m["macro_f1"] == pytest.approx((a["f1"] + b["f1"]) / 3)
    bins = m["reliability"]
    assert m["ece"] == pytest.approx(sum(x["count"] / 6 * abs(x["accuracy"] - x["confidence"]) for x in bins))
