"""fine_tune end to end on small real and synthetic data: every mode and option, resume, cancel."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from core.datasets import Dataset
from core.jobspec import TrainSpec
from trainer.calibrate.calibration import EDGE, LOG_T_MAX, LOG_T_MIN
from trainer.run.checkpoint import CHECKPOINT_FILE
from trainer.run.engine import Cancelled, EpochMetrics, Pruned, TrainingError, TrainingResult, fine_tune

# Short image stages: two epochs over 12 images, two batches each (so "within a batch" means something).
# The probe runs on cached features (cheap).
FAST: dict[str, Any] = {"probe_epochs": 6, "max_epochs": 2, "batch_size": 6}

_RESULTS: dict[str, TrainingResult] = {}


def _linear(hym_probe: Dataset) -> TrainingResult:
    """One shared linear-mode run (module cache: several tests read it)."""
    if "linear" not in _RESULTS:
        spec = TrainSpec(mode="linear", probe_epochs=40, batch_size=16)
        _RESULTS["linear"] = fine_tune(spec, hym_probe)
    return _RESULTS["linear"]


def test_linear_probe_learns_real_photos_and_reports_progress(hym_probe: Dataset) -> None:
    seen: list[EpochMetrics] = []
    result = fine_tune(TrainSpec(mode="linear", probe_epochs=40, batch_size=16), hym_probe, on_progress=seen.append)
    _RESULTS.setdefault("linear", result)
    assert result.metrics["val_accuracy"] >= 0.85  # 20 val photos; the frozen probe gets ~0.95 on the full set
    assert result.labels == ["ants", "bees"] and result.temperature > 0
    # 10 val photos per class at ~0.95: +-0.11, wider than the rule's +-0.10, and the advice clears it
    m = result.metrics
    assert len(m["warnings"]) == 1 and "Bring every class to at least" in m["warnings"][0]
    # ... so the temperature is fitted on every train+val photo's out-of-fold probe logits, not on 20
    assert m["calibration_source"] == "cross_fit" and m["probe_cv_images"] == 60
    assert "out-of-fold train+val logits (5-fold" in m["calibration_reason"] and m["probe_cv_accuracy"] >= 0.8
    assert [m.epoch for m in seen] == list(range(1, len(seen) + 1))
    assert all(m.stage == "linear" and m.epochs == 40 and m.lr > 0 and m.images_per_s > 0 for m in seen)
    assert seen[-1].eta_s == 0.0 or seen[-1].epoch < 40
    assert seen[0].train_loss > seen[-1].train_loss
    best = result.history[result.metrics["best_epoch"] - 1]
    assert result.metrics["val_accuracy"] == pytest.approx(best.val_accuracy)  # best weights restored
    assert result.metrics["val_loss"] == pytest.approx(best.val_loss, abs=1e-4)
    assert not result.model.training


def test_same_spec_and_data_give_the_same_metrics(hym_probe: Dataset) -> None:
    first = _linear(hym_probe)
    again = fine_tune(TrainSpec(mode="linear", probe_epochs=40, batch_size=16), hym_probe)
    assert again.metrics["val_loss"] == first.metrics["val_loss"]
    assert [h.train_loss for h in again.history] == [h.train_loss for h in first.history]
    other = fine_tune(TrainSpec(mode="linear", probe_epochs=40, batch_size=16, seed=1), hym_probe)
    assert [h.train_loss for h in other.history] != [h.train_loss for h in first.history]


def test_early_stopping_stops_early_and_restores_the_best(hym_probe: Dataset) -> None:
    spec = TrainSpec(mode="linear", probe_epochs=200, lr=0.05, early_stopping={"metric": "val_loss", "patience": 2})
    result = fine_tune(spec, hym_probe)
    run = result.metrics["epochs_run"]
    assert run < 200
    losses = [h.val_loss for h in result.history]
    best = result.metrics["best_epoch"]
    assert losses[best - 1] == min(losses) and run == best + 2
    assert result.metrics["val_loss"] == pytest.approx(min(losses), abs=1e-4)


def test_lr_auto_and_min_delta(hym_probe: Dataset) -> None:
    spec = TrainSpec(mode="linear", lr="auto", probe_epochs=30, optimizer="sgd",
                     early_stopping={"metric": "val_accuracy", "patience": 3, "min_delta": 0.5})
    result = fine_tune(spec, hym_probe)
    assert result.metrics["lr"] != 1e-3 and 1e-5 < result.metrics["lr"] < 1.0
    assert result.metrics["epochs_run"] == 4  # nothing beats the first epoch by 0.5


def test_calibration_never_raises_validation_nll(hym_probe: Dataset) -> None:
    # A long, sharp probe without label smoothing: over-confident on its 20 validation photos.
    spec = TrainSpec(mode="linear", probe_epochs=60, lr=0.05, label_smoothing=0.0, weight_decay=0.0,
                     early_stopping={"metric": "val_accuracy", "patience": 100})
    result = fine_tune(spec, hym_probe)
    m = result.metrics
    val = result.outputs["val"]
    if m["calibration_source"] == "cross_fit":  # 20 val photos are weak: T was fitted on out-of-fold logits,
        assert m["probe_cv_images"] == 60  # the NLL it must not raise is theirs (train+val, 3x the photos)
        assert m["val_nll_after"] <= m["val_nll_before"] + 1e-7
        return
    nll_raw = float(F.cross_entropy(val.logits, val.labels))
    nll_served = float(F.cross_entropy(val.logits / result.temperature, val.labels))
    assert nll_served <= nll_raw + 1e-7
    assert m["val_nll_before"] == pytest.approx(nll_raw, abs=1e-5)
    assert m["val_nll_after"] == pytest.approx(nll_served, abs=1e-5)
    if m["calibration_applied"]:
        assert nll_served < nll_raw and result.temperature == m["temperature_fitted"]
        assert LOG_T_MIN + EDGE < math.log(result.temperature) < LOG_T_MAX - EDGE  # an optimum, not a bound
    else:
        assert result.temperature == 1.0 and "T stays 1" in m["calibration_reason"]
    assert m["ece_split"] == "val"  # no test split here: ECE is measured on validation
    assert 0.0 <= m["ece_after"] <= 1.0 and 0.0 <= m["ece_before"] <= 1.0


def test_three_classes_with_test_split(synthetic: Dataset) -> None:
    result = fine_tune(TrainSpec(mode="linear", probe_epochs=30, augment="standard"), synthetic)
    assert result.labels == ["blue", "green", "red"]
    assert result.metrics["test_images"] == 12 and 0.0 <= result.metrics["test_accuracy"] <= 1.0
    assert set(result.outputs) == {"val", "test"}
    assert result.metrics["ece_split"] == "test"  # ECE before/after on held-out photos, not the fitting set
    assert result.metrics["train_images"] == 18  # "standard": the mirrored views count as extra features


def test_finetune_sgd_onecycle_strong_ema_workers(hym_small: Dataset) -> None:
    seen: list[EpochMetrics] = []
    spec = TrainSpec(mode="finetune", optimizer="sgd", lr=0.01, scheduler="onecycle", augment="strong", ema=True,
                     num_workers=1, label_smoothing=0.0, **{**FAST, "max_epochs": 1})
    result = fine_tune(spec, hym_small, on_progress=seen.append)
    stages = [m.stage for m in seen]
    assert stages[-1] == "finetune" and stages[-2] == "linear" and stages[0] == "linear"
    best = max(result.history, key=lambda h: (h.val_accuracy, -h.val_loss))  # min_delta 0: ties by loss
    assert result.metrics["best_stage"] == best.stage  # the best validated weights, whichever stage
    assert result.metrics["val_accuracy"] == pytest.approx(best.val_accuracy)
    assert [r["stage"] for r in result.metrics["stages"]] == ["linear", "finetune"]
    assert seen[-1].images_per_s > 0 and seen[-1].eta_s == 0.0
    assert 0.5 <= result.metrics["val_accuracy"] <= 1.0


def test_gradual_unfreezes_stage_by_stage(hym_small: Dataset) -> None:
    spec = TrainSpec(mode="gradual", scheduler="step", augment="standard", freeze_bn=False, gradual_stages=2,
                     **{**FAST, "max_epochs": 2})
    base = dict(fine_tune(TrainSpec(mode="linear", probe_epochs=1), hym_small).model.named_parameters())
    result = fine_tune(spec, hym_small)
    assert [h.stage for h in result.history][-2:] == ["gradual_1", "gradual_2"]
    params = dict(result.model.named_parameters())
    if result.metrics["best_stage"] == "linear":  # 8 val photos: the paired test keeps the simpler probe
        assert "the simpler linear is kept" in result.metrics["best_stage_reason"]
        assert torch.equal(params["conv_head.weight"], base["conv_head.weight"])
        return
    assert not torch.equal(params["conv_head.weight"], base["conv_head.weight"])  # top group trains first
    stem_trained = not torch.equal(params["conv_stem.weight"], base["conv_stem.weight"])
    assert stem_trained == (result.metrics["best_stage"] == "gradual_2")  # the stem only in the last step


def test_a_later_stage_that_does_not_beat_the_probe_is_discarded_and_said_so(hym_small: Dataset) -> None:
    # min_delta 0.5: no fine-tuning epoch can beat the probe's accuracy by half, so its weights must go.
    spec = TrainSpec(mode="finetune", augment="none", lr="auto",
                     early_stopping={"metric": "val_accuracy", "patience": 5, "min_delta": 0.5}, **FAST)
    result = fine_tune(spec, hym_small)
    m = result.metrics
    assert [h.stage for h in result.history][-2:] == ["finetune", "finetune"]  # it did train
    assert m["best_stage"] == "linear" and m["best_epoch"] <= spec.probe_epochs
    probe, ft = m["stages"]
    assert probe["kept"] and not ft["kept"] and "discarded" in ft["reason"]
    assert "discarded" in m["best_stage_reason"]
    probe_best = result.history[m["best_epoch"] - 1]
    assert m["val_accuracy"] == pytest.approx(probe_best.val_accuracy)  # the probe's weights are published
    assert m["val_loss"] == pytest.approx(probe_best.val_loss, abs=1e-4)
    # lr "auto": fine-tuning does not take the head's rate (trainer/run/optim.py)
    assert m["stage_lrs"]["finetune"] == pytest.approx(min(m["lr"] / 10, 1e-3))


def test_block_groups_run_bottom_to_top_without_the_head() -> None:
    from trainer.backbones import create_backbone
    from trainer.run.engine import block_groups

    backbone = create_backbone()
    groups = block_groups(backbone)
    names = {id(m): n for n, m in backbone.model.named_modules()}
    assert [names[id(g)] for g in groups[:2]] == ["conv_stem", "bn1"]
    assert [names[id(g)] for g in groups[-2:]] == ["conv_head", "bn2"]
    assert all(names[id(g)] != "classifier" for g in groups) and len(groups) == 11
    covered = {id(p) for g in groups for p in g.parameters()}
    assert covered == {id(p) for p in backbone.backbone_parameters()}


def test_auto_keeps_the_probe_unless_fine_tuning_beats_it(hym_small: Dataset) -> None:
    spec = TrainSpec(mode="auto", scheduler="plateau", augment="none", label_smoothing=0.0,
                     early_stopping={"metric": "val_accuracy", "patience": 1}, **FAST)
    result = fine_tune(spec, hym_small)
    probe_best = max(h.val_accuracy for h in result.history if h.stage == "linear")
    assert result.metrics["val_accuracy"] >= probe_best
    # 4 val photos per class: the job says its choices were made on a weak split
    assert len(result.metrics["warnings"]) == 1 and "weak val split (8 images)" in result.metrics["warnings"][0]
    ft = [h for h in result.history if h.stage == "finetune"]
    assert 1 <= len(ft) <= 2
    if result.metrics["best_stage"] == "linear":
        assert all(h.val_accuracy <= probe_best for h in ft)


def test_cancel_within_a_batch_and_resume_gives_the_uninterrupted_result(hym_small: Dataset,
                                                                          tmp_path: Path) -> None:
    spec = TrainSpec(mode="finetune", augment="light", **FAST)
    straight = fine_tune(spec, hym_small, checkpoint_dir=tmp_path / "straight")
    done: list[EpochMetrics] = []
    batches = {"n": 0}

    def stop_in_second_finetune_epoch() -> bool:
        if done and done[-1].stage == "finetune":  # first fine-tuning epoch is complete
            batches["n"] += 1
            return batches["n"] == 2  # the second batch of the second fine-tuning epoch
        return False

    with pytest.raises(Cancelled):
        fine_tune(spec, hym_small, on_progress=done.append, should_stop=stop_in_second_finetune_epoch,
                  checkpoint_dir=tmp_path / "run")
    assert batches["n"] == 2 and (tmp_path / "run" / CHECKPOINT_FILE).is_file()
    resumed_epochs: list[int] = []
    resumed = fine_tune(spec, hym_small, on_progress=lambda m: resumed_epochs.append(m.epoch),
                        checkpoint_dir=tmp_path / "run")
    assert resumed_epochs == [straight.history[-1].epoch]  # only the epoch that was cut short
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]
    assert resumed.metrics["val_accuracy"] == straight.metrics["val_accuracy"]
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in straight.history]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_from_the_middle_of_the_probe(hym_probe: Dataset, tmp_path: Path) -> None:
    spec = TrainSpec(mode="linear", probe_epochs=12, early_stopping={"patience": 50})
    straight = fine_tune(spec, hym_probe)

    def prune_at_5(epoch: int, _acc: float) -> None:
        if epoch == 5:
            raise Pruned("simulated worker death after epoch 5")

    with pytest.raises(Pruned):
        fine_tune(spec, hym_probe, checkpoint_dir=tmp_path, on_epoch_end=prune_at_5)
    resumed = fine_tune(spec, hym_probe, checkpoint_dir=tmp_path)
    assert [h.epoch for h in resumed.history] == list(range(1, 13))
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in straight.history]
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]


def test_cancel_before_anything_trains(hym_probe: Dataset) -> None:
    with pytest.raises(Cancelled):
        fine_tune(TrainSpec(mode="linear"), hym_probe, should_stop=lambda: True)


def test_dataset_without_validation_split_is_refused(tmp_path: Path, store_root: Path) -> None:
    from tests.trainer.conftest import write_synthetic
    from tests.trainer.dataset_helpers import make_dataset

    folder = write_synthetic(tmp_path / "only-train", {"train": 6}, seed=3)
    dataset = make_dataset(folder / "train", tmp_path / "store", "only-train")  # class folders: the store splits
    if dataset.items("val"):
        dataset = dataset.model_copy(update={"files": [f for f in dataset.files if f.split != "val"]})
        dataset.attach(tmp_path / "store" / dataset.id)
    with pytest.raises(TrainingError, match="no validation images"):
        fine_tune(TrainSpec(mode="linear", probe_epochs=1), dataset)


def test_progress_is_monotone_measured_and_ends_at_one(hym_small: Dataset) -> None:
    from trainer.progress.tracker import ProgressTracker

    snaps: list[dict[str, Any]] = []
    tracker = ProgressTracker(snaps.append, min_interval_s=0.0)  # every update, to see them all
    fine_tune(TrainSpec(mode="finetune", **FAST), hym_small, progress=tracker)
    tracker.finish()
    fractions = [s["fraction"] for s in snaps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and max(fractions[:-1]) < 1.0
    elapsed = [s["elapsed_s"] for s in snaps]
    assert elapsed == sorted(elapsed)
    assert snaps[0]["eta_s"] is None and snaps[0]["stage"] == "probe"  # no measurement yet: no guess
    # From the first timed batch on, never null: the expected time left and the worst case above it.
    measured = next(i for i, s in enumerate(snaps) if s["eta_s"] is not None)
    assert all(s["eta_s"] is not None and 0 <= s["eta_s"] <= s["eta_max_s"] for s in snaps[measured:])
    assert {"probe", "finetune"} <= {s["stage"] for s in snaps[measured:]}
    # fraction follows the clock: elapsed / (elapsed + expected time left), within the snapshot's own
    # rounding (eta_s to 0.1 s, elapsed_s to 1 ms, fraction to 1e-4). A fixed 0.01 had not covered it
    # in this 1-3 s run: 0.05 s of eta_s is 0.02 of the fraction at 0.9 s elapsed and 0.6 s left.
    for s in snaps[measured:-1]:
        elapsed = s["elapsed_s"] - 5e-4
        assert s["fraction"] >= min(0.999, elapsed / (elapsed + s["eta_s"] + 0.05)) - 5e-5, s
    order = list(dict.fromkeys(s["stage"] for s in snaps))
    assert order == ["probe", "finetune", "calibrate", "done"]
    # progress moves within an epoch: batch 1 of 2 of each fine-tuning epoch is reported
    ft = [s for s in snaps if s["epochs_stage"] == "finetune"]
    assert {(s["epoch"], s["batch"]) for s in ft} >= {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert all(s["epochs"] == 2 and s["batches"] == 2 for s in ft)  # epochs counts the stage it names
    assert all(s["epochs"] == 6 for s in snaps if s["epochs_stage"] == "linear")
    done = snaps[-1]
    assert done["eta_s"] is None or done["eta_s"] == 0.0
    assert all(st["state"] == "done" for st in done["stages"])


def test_a_tiny_time_budget_keeps_the_probe_and_says_what_it_cut(hym_small: Dataset) -> None:
    spec = TrainSpec(mode="finetune", time_budget_s=0.01, **FAST)
    result = fine_tune(spec, hym_small)
    m = result.metrics
    assert all(h.stage == "linear" for h in result.history)  # no fine-tuning epoch ran
    assert m["best_stage"] == "linear"
    cut = m["time_budget"]["cuts"]
    assert [(c["stage"], c["action"], c["kept_epochs"]) for c in cut] == [("finetune", "skipped", 0)], cut
    assert m["time_budget"]["time_budget_s"] == 0.01 and m["time_budget"]["used_s"] > 0.01
    assert any("finetune skipped" in w and "probe's result is kept" in w for w in m["warnings"]), m["warnings"]
    probe, ft = m["stages"]
    assert probe["kept"] and not ft["kept"] and "time budget" in ft["reason"]
    # The model is exactly the probe's: the same probe alone (linear mode, same seed) gives the same weights.
    alone = fine_tune(TrainSpec(mode="linear", probe_epochs=FAST["probe_epochs"], batch_size=FAST["batch_size"]),
                      hym_small)
    ours, theirs = result.model.state_dict(), alone.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert m["val_accuracy"] == alone.metrics["val_accuracy"]


def test_the_budget_shortens_or_stops_fine_tuning_from_timed_batches() -> None:
    from trainer.run.budget import Budget, OverBudget, epochs_that_fit

    assert epochs_that_fit(6.0, 1.5, 5.0, 4) == 1 and epochs_that_fit(60.0, 0.0, 5.0, 4) == 4
    used = [4.0]
    budget = Budget(10.0, lambda: used[0])
    # 3 timed batches of 0.5 s, 10 per epoch, 6 val images in 1 batch: ~5.2 s an epoch, 6 s left -> 1 of 4.
    assert budget.after_batch("finetune", 10, 2, 0.5, 6, 6, 4) is None  # not enough batches timed yet
    assert budget.after_batch("finetune", 10, 3, 0.5, 6, 6, 4) == 1
    assert budget.after_batch("finetune", 10, 4, 0.5, 6, 6, 4) is None  # estimated once per stage
    (cut,) = budget.cuts
    assert cut.action == "shortened" and cut.kept_epochs == 1 and "shortened to 1 epoch" in cut.reason
    used[0] = 9.9  # 0.1 s left: not one epoch of the next stage fits
    with pytest.raises(OverBudget, match="not one epoch fits"):
        budget.after_batch("gradual_2", 10, 3, 0.5, 6, 6, 2)
    with pytest.raises(OverBudget, match="earlier fine-tuning stage"):
        budget.before_stage("gradual_3", 2)
    assert Budget(100.0, lambda: 1.0).after_batch("finetune", 10, 3, 0.5, 6, 6, 4) is None  # it fits
    assert [w.split(":")[0] for w in budget.warnings()] == ["time budget"] * 3
