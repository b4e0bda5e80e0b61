"""The ETA model: early stopping's expected epochs, the tracker's expected and worst-case time left,
a resumed tracker that never moves back, the cost book, and a stalled job as the API shows it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobs import JobStore
from service.http.routes.jobs import job_view
from trainer.progress.eta import CostBook, expected_epochs_left, improve_probability
from trainer.progress.tracker import ProgressTracker


def test_expected_epochs_follow_the_run_length_model() -> None:
    assert expected_epochs_left(0.0, patience=3, bad=0, epochs_left=50) == 3  # never improves: patience epochs
    assert expected_epochs_left(0.0, patience=3, bad=2, epochs_left=50) == 1
    assert expected_epochs_left(1.0, patience=3, bad=0, epochs_left=50) == 50  # always improves: all of them
    assert expected_epochs_left(0.5, patience=3, bad=3, epochs_left=50) == 0
    # Long horizon: the mean waiting time for `patience` failures in a row, (1 - f^p) / ((1 - f) f^p).
    q, p = 0.4, 4
    f = 1 - q
    closed = (1 - f ** p) / ((1 - f) * f ** p)
    assert expected_epochs_left(q, p, 0, 10_000) == pytest.approx(closed, rel=1e-6)
    # More improvement, more epochs expected; capped by the plan.
    values = [expected_epochs_left(q, 5, 0, 20) for q in (0.1, 0.3, 0.5, 0.7)]
    assert values == sorted(values) and values[-1] <= 20


def test_the_improvement_rate_is_read_off_the_recent_curve() -> None:
    assert improve_probability([]) == 0.5
    rising, flat = [True] * 6, [True] * 3 + [False] * 8
    assert improve_probability(rising) > 0.8 > 0.2 > improve_probability(flat)


def test_the_eta_counts_the_epochs_early_stopping_likely_leaves_and_the_worst_case_all() -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan_training("finetune", epochs=10, batches=4, patience=2)
    tracker.start("finetune", 40)
    assert tracker.snapshot()["eta_s"] is None  # nothing timed yet: no number shown
    for _ in range(4):
        tracker.unit_done(1.0)
    tracker.add_time(2.0)  # the epoch's validation
    tracker.epoch_end(improved=False, bad=1)
    snap = tracker.snapshot()
    expected = expected_epochs_left(improve_probability([False]), 2, 1, 9) * (4 * 1.0 + 2.0)
    assert snap["eta_s"] == pytest.approx(expected, abs=0.1)
    assert snap["eta_max_s"] == pytest.approx(9 * 6.0, abs=0.1) and snap["eta_s"] < snap["eta_max_s"] / 3
    # Half-way through the next epoch, the batches done are not counted again.
    tracker.unit_done(1.0)
    tracker.unit_done(1.0)
    assert tracker.snapshot()["eta_s"] == pytest.approx(expected - 2.0, abs=0.1)


def test_a_one_off_stage_uses_its_measured_cost_and_never_claims_zero_while_running() -> None:
    tracker = ProgressTracker(min_interval_s=0.0)
    tracker.plan([("export", 1)])
    tracker.expect("export", seconds=10.0)
    tracker.start("export")
    tracker.measured = True
    assert 9.0 < tracker.remaining() <= 10.0
    tracker.stages["export"].started_at = time.perf_counter() - 30  # overran its estimate: a quarter of its time
    assert tracker.remaining() == pytest.approx(7.5, abs=0.1)


def test_a_resumed_tracker_continues_the_stored_progress_from_the_checkpoint_position() -> None:
    first = ProgressTracker(min_interval_s=0.0)
    first.plan_training("probe", epochs=2, batches=2, patience=5)
    first.plan_training("finetune", epochs=4, batches=3, patience=5)
    first.start("probe", 4)
    for _ in range(4):
        first.unit_done(0.01)
    first.start("finetune", 12)
    for _ in range(5):
        first.unit_done(2.0)
    stored = first.snapshot()
    stored["fraction"] = 0.6  # what the job store holds
    stored["elapsed_s"] = 40.0

    again = ProgressTracker(min_interval_s=0.0)
    again.restore(json.loads(json.dumps(stored)))  # as read back from the job store
    again.plan_training("probe", epochs=2, batches=2, patience=5)
    again.plan_training("finetune", epochs=4, batches=3, patience=5)
    again.start("probe", 4)
    snap = again.snapshot()
    assert snap["fraction"] >= 0.6 and snap["elapsed_s"] >= 40.0 and snap["eta_s"] is not None
    again.resume_at(["probe"], "finetune", epochs_done=1)  # the checkpoint: one fine-tuning epoch done
    ft = again.stages["finetune"]
    assert again.stages["probe"].state == "done" and ft.done == 3 and ft.unit_s() == pytest.approx(2.0)
    assert again.snapshot()["fraction"] >= 0.6


def test_the_cost_book_keeps_a_moving_average_per_backbone(tmp_path: Path) -> None:
    path = tmp_path / "work" / "eta_costs.json"
    book = CostBook(path)
    book.record("effnet", "export_s", 40.0)
    book.record("effnet", "export_s", 20.0)
    assert CostBook(path).get("effnet", "export_s") == pytest.approx(30.0)
    assert CostBook(path).get("resnet", "export_s") is None
    path.write_text("{not json")
    assert CostBook(path).get("effnet", "export_s") is None  # a cache: unreadable means priors


def test_a_job_without_a_live_worker_says_so(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create("m", "d", {"mode": "linear"})
    lease = 60.0
    assert job_view(store.get(job.id), lease)["progress"]["stage"] == "queued"
    assert store.claim(job.id, "worker-1", lease, 3) is not None
    # Claimed, before the run's first progress (the worker imports torch for seconds): not "queued".
    assert job_view(store.get(job.id), lease)["progress"]["stage"] == "starting"
    store.record_progress(job.id, "worker-1", {"stage": "finetune", "fraction": 0.4, "eta_s": 30.0})
    now = time.time()
    live = job_view(store.get(job.id), lease, now)["progress"]
    assert live["stalled_s"] is None and live["eta_s"] == 30.0 and "lease_expires_at" not in live
    # The worker stops renewing: seconds later the job says it is stalled, and the stall grows.
    later = [job_view(store.get(job.id), lease, now + dt)["progress"] for dt in (10, 20)]
    assert later[0]["stalled_s"] == pytest.approx(10, abs=1) and later[1]["stalled_s"] == pytest.approx(20, abs=1)
    assert all(p["eta_s"] is None and "no live worker" in p["eta_note"] and p["lease_expires_at"] for p in later)
    assert later[1]["fraction"] == 0.4  # the progress it had is kept
    # Requeued after the lease ran out: still stalled (nobody runs it), and still growing.
    gone = store.get(job.id)
    assert store.requeue(gone, now + lease + 1)
    queued = [job_view(store.get(job.id), lease, time.time() + dt)["progress"] for dt in (0, 5)]
    assert queued[0]["stalled_s"] >= lease and queued[1]["stalled_s"] > queued[0]["stalled_s"]


def test_between_batches_the_eta_counts_down_and_the_ticker_pushes() -> None:
    snaps: list[dict[str, Any]] = []
    tracker = ProgressTracker(snaps.append, min_interval_s=0.1)
    tracker.plan_training("finetune", epochs=2, batches=2, patience=0)
    tracker.start("finetune", 4)
    tracker.unit_done(2.0)  # batches take 2 s: the next one is under way from here
    before = tracker.remaining()
    with tracker.ticking(0.1):
        time.sleep(0.6)
    assert before - tracker.remaining() == pytest.approx(0.6, abs=0.3)
    etas = [s["eta_s"] for s in snaps[-4:]]
    assert len(snaps) >= 4 and etas == sorted(etas, reverse=True) and etas[0] > etas[-1]
