"""The per-stage cost model behind the ETA (trainer/progress/stage_cost.py) on a fake clock: recent rates with
the warm-up left out, the export's steps paced by this run, the fine-tune step predicted from the
forward pass, and a whole job's progress that is never null after its first measured batch and
never moves back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from trainer.progress import eta_plan
from trainer.progress.clocks import FeatureClock
from trainer.progress.eta import CostBook
from trainer.progress.stage import PLAN_UNITS
from trainer.progress.stage_cost import RecentRate, pace, steps_left
from trainer.progress.steps import reporting, step
from trainer.progress.tracker import ProgressTracker


class FakeClock:
    """``time.perf_counter`` that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def test_the_rate_leaves_out_the_warm_up_and_follows_the_recent_units() -> None:
    rate = RecentRate()
    assert rate.per_unit() is None
    rate.add(1.0)  # the first unit: warm-up, used only while it is the only one
    assert rate.per_unit() == 1.0
    rate.add(0.01)
    rate.add(0.03)
    assert rate.per_unit() == pytest.approx(0.02)
    for _ in range(60):  # the machine got slower: the rate forgets the fast units (5 s of recent ones)
        rate.add(0.1)
    assert rate.per_unit() == pytest.approx(0.1)
    for _ in range(8):  # slow units: the rate follows the last MIN_UNITS of them
        rate.add(2.0)
    assert rate.per_unit() == pytest.approx(2.0)


def test_the_steps_still_to_come_are_scaled_by_the_pace_of_those_done() -> None:
    expected = [("trace", 6.0), ("check", 2.0), ("variants", 0.0), ("rest", 2.0)]
    assert steps_left(expected, {}, 0.0) == pytest.approx(10.0)
    assert steps_left(expected, {}, 4.0) == pytest.approx(6.0)  # the trace under way counts down
    done = {"trace": 24.0}  # four times as slow as expected: the rest about twice (damped)
    assert pace(expected, done) == pytest.approx(2.0)
    assert steps_left(expected, done, 0.0) == pytest.approx(8.0)
    assert steps_left(expected, {"trace": 600.0}, 0.0) == pytest.approx(2.0 * 4.0)  # the pace is bounded
    assert pace(expected, {"trace": 1.5}) == pytest.approx(0.5)
    # A step near or past its estimate: a tenth of it, then a quarter of the overrun; never zero, never a jump.
    assert steps_left([("trace", 4.0)], {}, 3.6) == pytest.approx(0.4)
    assert steps_left([("trace", 4.0)], {}, 4.2) == pytest.approx(0.4)
    assert steps_left([("trace", 4.0)], {}, 20.0) == pytest.approx(4.0)
    for running in (3.0, 3.59, 3.61, 5.59, 5.61, 8.0):  # continuous across both bends (3.6 and 5.6 s)
        assert abs(steps_left([("trace", 4.0)], {}, running) - steps_left([("trace", 4.0)], {}, running + 0.01)) < 0.011


def test_the_export_reports_its_steps_and_the_eta_follows_them(clock: FakeClock) -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan([("export", 1)])
    tracker.expect("export", steps=[("trace", 6.0), ("check", 2.0), ("rest", 2.0)])
    assert tracker.remaining() == pytest.approx(10.0)
    tracker.start("export")
    with reporting(tracker.step_done):
        clock.advance(24.0)
        step("trace")
        assert tracker.remaining() == pytest.approx(8.0)  # the trace took four times its time: the rest twice
        clock.advance(8.0)
        step("check")
        assert tracker.remaining() == pytest.approx(2.0 * (32 / 8) ** 0.5)
        clock.advance(3.0)
    step("outside")  # nobody listens outside ``reporting``: nothing happens
    tracker.unit_done(35.0)
    cost = tracker.stages["export"]
    assert cost.steps_done == {"trace": 24.0, "check": 8.0, "rest": 3.0} and tracker.remaining() == 0.0


def test_a_probe_with_a_slow_first_batch_is_not_predicted_at_its_warm_up(clock: FakeClock) -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan_training("probe", epochs=50, batches=20, patience=0)
    tracker.start("probe", 1000)
    tracker.unit_done(0.5)  # the first batch: allocation and kernel selection
    clock.advance(0.5)
    for _ in range(10):
        clock.advance(0.01)
        tracker.unit_done(0.01)
    assert tracker.remaining() == pytest.approx(989 * 0.01, rel=0.05)  # not 989 x the mean with the warm-up


def test_the_feature_rate_is_read_off_the_batches_after_the_first(clock: FakeClock) -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan_training("probe", epochs=1, batches=1, patience=0)
    tracker.start("probe")
    feature_clock = FeatureClock(tracker, lambda: None, passes=[640], batch=64)
    feature_clock()  # the first batch starts
    clock.advance(6.4)  # warm-up: 0.1 s an image
    feature_clock()
    assert feature_clock.forward_s(0.0) is None  # one batch: too few to say
    for _ in range(3):
        clock.advance(1.28)  # 0.02 s an image
        feature_clock()
    assert feature_clock.forward_s(0.0) == pytest.approx(0.02)
    # The time left of the extraction: 384 images at the recent rate.
    assert tracker.stages["probe"].setup_left_s == pytest.approx(384 * 0.02)
    assert tracker.measured


def test_one_odd_feature_batch_moves_the_time_left_by_its_weight_against_the_plan(clock: FakeClock) -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan_training("probe", epochs=1, batches=1, patience=0)
    tracker.start("probe")
    feature_clock = FeatureClock(tracker, lambda: None, passes=[640], batch=64, expected_s=0.02)
    feature_clock()
    clock.advance(6.4)  # warm-up
    feature_clock()
    clock.advance(64 * 0.06)  # one batch three times the plan's rate
    feature_clock()
    weight = FeatureClock.PLAN_IMAGES
    blended = (0.02 * weight + 0.06 * 64) / (weight + 64)
    assert tracker.stages["probe"].setup_left_s == pytest.approx(blended * 512)
    for _ in range(7):  # the plan's weight fades as the extraction measures more
        clock.advance(64 * 0.03)
        feature_clock()
    assert FeatureClock.RECENT < 7  # the odd batch is out of the recent ones
    assert tracker.stages["probe"].setup_left_s == pytest.approx((0.02 * weight + 0.03 * 512) / (weight + 512) * 64)


def test_a_passs_partial_last_batch_counts_its_own_images(clock: FakeClock) -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan_training("probe", epochs=1, batches=1, patience=0)
    tracker.start("probe")
    feature_clock = FeatureClock(tracker, lambda: None, passes=[100, 30], batch=64)  # train, then val
    assert feature_clock.images == 130
    for size in (64, 36, 30):  # each call starts a batch: 64 and 36 of train, then val's 30
        feature_clock()
        clock.advance(size * 0.01)
    feature_clock()  # (extract calls before each batch only: here, to close the last one)
    assert feature_clock.done == 130
    assert feature_clock.rate() == pytest.approx(0.01)  # not 66 images' time spread over 128


def test_the_fine_tune_step_is_the_books_ratio_at_its_batch_size_times_this_runs_forward_pass(
        tmp_path: Path) -> None:
    book = CostBook(tmp_path / "book.json")
    work = eta_plan.Workload(train=100, val=20, test=0, batch_size=10, flip=False, images_stages=True)
    tracker = ProgressTracker()
    tracker.plan_training("finetune", epochs=3, batches=10, patience=0)
    tracker.yardstick_s = 0.05  # this run's timed forward pass (trainer/progress/unit_cost.py)
    book.record("b@cpu", "train_ratio_b10", 3.0)
    eta_plan.expect(tracker, work, book, "b@cpu", "trained")
    assert tracker.stages["finetune"].prior_batch_s == pytest.approx(3.0 * 0.05 * 10)
    assert tracker.stages["finetune"].prior_val_s == pytest.approx(20 * 0.05)
    # What a run measured goes back to the book: the ratio and the export's steps.
    tracker.start("finetune")
    for _ in range(3):
        tracker.unit_done(2.0)
    tracker.plan([("export", 1)])
    tracker.expect("export", steps=[("trace", 1.0), ("rest", 1.0)])
    tracker.start("export")
    tracker.stages["export"].steps_done = {"trace": 4.0}
    tracker.unit_done(5.0)
    eta_plan.learn(tracker, work, book, "b@cpu")
    assert book.get("b@cpu", "train_ratio_b10") == pytest.approx(0.5 * 3.0 + 0.5 * (2.0 / 10 / 0.05))
    assert book.get("b@cpu", "export_trace_s") == 4.0
    assert CostBook(tmp_path / "book.json").get("b@cpu", "train_ratio_b10")  # kept on disk for the next job


def test_a_step_per_image_costs_more_in_bigger_batches_and_a_partial_batch_counts_its_images(
        tmp_path: Path) -> None:
    book = CostBook(tmp_path / "book.json")
    prior = eta_plan.prior_train_ratio
    assert prior(1) == prior(4) and prior(16) < prior(24) < prior(32) < prior(512) == prior(64)
    assert prior(16) == dict(eta_plan.PRIOR_TRAIN_RATIO)[16]
    # No job measured it: the prior; another batch size measured: that level, the prior's shape.
    assert eta_plan.train_ratio(book, "b@cpu", 32) == prior(32)
    book.record("b@cpu", "train_ratio_b16", 2.0)
    assert eta_plan.train_ratio(book, "b@cpu", 16) == 2.0
    assert eta_plan.train_ratio(book, "b@cpu", 32) == pytest.approx(2.0 * prior(32) / prior(16))
    # 40 photos at batch 16 with frozen BatchNorm: batches of 16, 16 and 8, planned at their images.
    work = eta_plan.Workload(train=40, val=8, test=0, batch_size=16, flip=False, images_stages=True)
    assert work.batch_images() == pytest.approx(40 / 3)
    tracker = ProgressTracker()
    tracker.plan_training("finetune", epochs=2, batches=3, patience=0)
    tracker.yardstick_s = 0.01
    eta_plan.expect(tracker, work, book, "b@cpu", "trained")
    assert tracker.stages["finetune"].prior_batch_s == pytest.approx(2.0 * 0.01 * 40 / 3)
    dropping = eta_plan.Workload(train=40, val=8, test=0, batch_size=16, flip=False, images_stages=True,
                                 drop_last=True)
    assert dropping.batch_images() == 16


def test_a_whole_job_is_never_null_after_its_first_batch_and_never_moves_back(clock: FakeClock) -> None:
    snaps: list[dict[str, Any]] = []
    tracker = ProgressTracker(snaps.append, min_interval_s=0.0)
    tracker.plan([("export", 1), ("evaluate", 1), ("register", 1)])
    tracker.plan_training("probe", epochs=10, batches=5, patience=3)
    tracker.plan_training("finetune", epochs=4, batches=5, patience=2)
    tracker.plan([("calibrate", 1)])
    tracker.expect("finetune", batch_s=4.0, val_s=1.0)  # a prior four times too slow
    tracker.expect("export", steps=[("trace", 5.0), ("rest", 1.0)])
    tracker.start("probe", 50)
    assert snaps[-1]["eta_s"] is None  # nothing timed yet: no guess
    for name, epochs, batch_s in (("probe", 10, 0.02), ("finetune", 3, 1.0)):
        tracker.start(name, epochs * 5)
        for epoch in range(epochs):
            for _ in range(5):
                clock.advance(batch_s)
                tracker.unit_done(batch_s)
            clock.advance(0.5)
            tracker.add_time(0.5)
            tracker.epoch_end(improved=epoch < 2, bad=max(0, epoch - 1))
    for name, seconds in (("calibrate", 2.0), ("export", 8.0), ("evaluate", 1.0), ("register", 0.5)):
        tracker.start(name)
        for _ in range(int(seconds * 2)):
            clock.advance(0.5)
            tracker.push(force=True)
        tracker.unit_done(seconds)
    tracker.finish()
    first = next(i for i, s in enumerate(snaps) if any(row["timed"] for row in s["stages"]))
    after = snaps[first:]
    assert len(after) > 40
    assert all(s["eta_s"] is not None and s["eta_max_s"] >= s["eta_s"] for s in after)
    fractions = [s["fraction"] for s in snaps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert snaps[-1]["eta_s"] == 0.0


def test_earlier_jobs_epochs_bound_the_expected_epochs_but_never_below_the_patience_left() -> None:
    tracker = ProgressTracker()
    tracker.plan_training("probe", epochs=60, batches=10, patience=5)
    cost = tracker.stages["probe"]
    cost.prior_batch_s = 0.1
    worst = tracker.remaining(expected=False)
    assert worst == pytest.approx(60 * 10 * 0.1)
    no_book = tracker.remaining()
    cost.prior_epochs = 12.0  # earlier jobs' probes stopped after about 12 epochs
    assert tracker.remaining() == pytest.approx(12 * 10 * 0.1) and no_book > 3 * tracker.remaining()
    cost.epochs_done, cost.done, cost.improved, cost.bad = 11, 110, [True] * 11, 0
    assert tracker.remaining() == pytest.approx(5 * 10 * 0.1, rel=0.01)  # still improving: patience 5 to go


def test_the_stages_to_come_slow_down_with_the_latest_measured_forward_pass(tmp_path: Path) -> None:
    book = CostBook(tmp_path / "book.json")
    book.record("b@cpu", "forward_s", 0.04)  # measured beside the export's steps, on a quieter machine
    book.record("b@cpu", "export_trace_s", 8.0)
    book.record("b@cpu", "export_rest_s", 2.0)
    work = eta_plan.Workload(train=100, val=20, test=0, batch_size=10, flip=False, images_stages=True)
    tracker = ProgressTracker()
    tracker.plan([("export", 1)])
    eta_plan.expect_publishing(tracker, work, book, "b@cpu")
    export = sum(s for _, s in eta_plan.export_steps(book, "b@cpu", 0.0))  # the steps never timed at their share
    assert 10.0 < export < 10.0 / 0.77 + 1e-9
    at_book_speed = export + 20 * 0.5 * 0.04 + 1.0  # export, evaluate, register
    assert tracker.remaining() == pytest.approx(at_book_speed)
    tracker.yardstick_s = 0.04  # timed as fast as the book's at the start of the run
    tracker.observe_speed("validation", 0.05)  # the first validation: warm-up, left out
    tracker.observe_speed("validation", 0.1)  # the next one is the kind's baseline ...
    assert tracker.speed() == pytest.approx(1.0)
    tracker.observe_speed("features", 0.3)  # ... a first of another kind (another batch size) moves nothing
    tracker.observe_speed("features", 0.3)
    assert tracker.speed() == pytest.approx(1.0)
    tracker.observe_speed("validation", 0.225)  # the next validation: the forward pass 2.25 times slower now
    assert tracker.speed_now() == pytest.approx(0.09)
    assert tracker.speed() == pytest.approx(1.5) and tracker.remaining() == pytest.approx(1.5 * at_book_speed)
    tracker.observe_speed("validation", 2.5)  # bounded: one slow measurement does not make the export 5x longer
    assert tracker.remaining() == pytest.approx(2.0 * at_book_speed)


def test_a_first_jobs_probe_expects_a_probes_usual_epochs_at_a_share_of_its_forward_pass() -> None:
    work = eta_plan.Workload(train=240, val=60, test=0, batch_size=10, flip=False, images_stages=False)
    tracker = ProgressTracker()
    tracker.plan_training("probe", epochs=60, batches=24, patience=5)
    tracker.yardstick_s = 0.02
    eta_plan.expect(tracker, work, CostBook(None), "b@cpu", "trained")  # no earlier job on the backbone
    probe = tracker.stages["probe"]
    assert probe.prior_epochs == eta_plan.PRIOR_PROBE_EPOCHS
    assert probe.prior_batch_s == pytest.approx(eta_plan.PROBE_STEP_FORWARDS * 0.02)
    assert tracker.remaining() < 0.5 * tracker.remaining(expected=False)  # not all 60 planned epochs


def test_a_fine_tuning_stages_first_batch_bounds_the_later_ones_at_the_books_warm_up_ratio(
        tmp_path: Path) -> None:
    book = CostBook(tmp_path / "book.json")
    work = eta_plan.Workload(train=40, val=10, test=0, batch_size=10, flip=False, images_stages=True)

    def first_batch_alone(book: CostBook, first_s: float) -> ProgressTracker:
        tracker = ProgressTracker()
        tracker.plan_training("finetune", epochs=3, batches=4, patience=0)
        tracker.yardstick_s = 0.05
        eta_plan.expect(tracker, work, book, "b@cpu", "trained")
        tracker.start("finetune")
        tracker.unit_done(first_s)  # the first batch: its backward pass sets up kernels and buffers
        return tracker

    planned = eta_plan.prior_train_ratio(10) * 0.05 * 10
    # Before the first batch the plan counts its warm-up: first_ratio batches in one.
    tracker = ProgressTracker()
    tracker.plan_training("finetune", epochs=3, batches=4, patience=0)
    tracker.yardstick_s = 0.05
    eta_plan.expect(tracker, work, book, "b@cpu", "trained")
    assert tracker.stages["finetune"].remaining_s(time.perf_counter()) == pytest.approx(
        (12 + eta_plan.PRIOR_FIRST_BATCH_RATIO - 1) * planned + 3 * 10 * 0.05)
    # A first batch slower than the plan's warm-up: at most the plan (it only bounds the later ones).
    slow = first_batch_alone(book, 4 * eta_plan.PRIOR_FIRST_BATCH_RATIO * planned)
    assert slow.stages["finetune"].unit_s() == pytest.approx(planned)
    # One faster than the plan: the first over the prior ratio.
    fast = first_batch_alone(book, 0.5 * planned)
    assert fast.stages["finetune"].unit_s() == pytest.approx(0.5 * planned / eta_plan.PRIOR_FIRST_BATCH_RATIO)
    for _ in range(3):
        fast.unit_done(1.2)
    # Measured: the warm-up left out, the plan weighing as PLAN_UNITS more batches.
    assert fast.stages["finetune"].measured_unit_s() == pytest.approx(1.2)
    assert fast.stages["finetune"].unit_s() == pytest.approx((PLAN_UNITS * planned + 3 * 1.2) / (PLAN_UNITS + 3))
    eta_plan.learn(fast, work, book, "b@cpu")
    assert book.get("b@cpu", "finetune_first_ratio") == pytest.approx(max(1.0, 0.5 * planned / 1.2))
    book.costs["b@cpu"]["finetune_first_ratio"] = 3.0
    assert first_batch_alone(book, 0.3).stages["finetune"].unit_s() == pytest.approx(0.1)  # the next job's ratio


def test_export_steps_never_timed_take_their_prior_share_of_those_that_were(tmp_path: Path) -> None:
    book = CostBook(tmp_path / "book.json")
    shares = dict(eta_plan.EXPORT_STEPS)
    assert dict(eta_plan.export_steps(book, "b@cpu", 20.0)) == pytest.approx(
        {name: share * 20.0 for name, share in shares.items()})  # nothing measured: the prior split
    book.record("b@cpu", "export_trace_s", 7.6)  # bootstrap's export: the trace and the check, no report
    book.record("b@cpu", "export_check_s", 1.4)
    steps = dict(eta_plan.export_steps(book, "b@cpu", 20.0))
    implied = 9.0 / (shares["trace"] + shares["check"])
    assert steps["trace"] == 7.6 and steps["check"] == 1.4
    assert steps["report"] == pytest.approx(shares["report"] * implied) and steps["variants"] == 0.0
    assert sum(steps.values()) == pytest.approx(implied)
