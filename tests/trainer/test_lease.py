"""The claimed-job context every job runs in: one claim wins, and each way a job can end is recorded once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.settings import Settings
from jobs import JobStore
from trainer.lease import ClaimedJob, claim, take_over


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", lease_seconds=2.0)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    settings.home.mkdir(parents=True)
    return JobStore(settings.resolved_database_url)


def _claimed(settings: Settings, store: JobStore) -> ClaimedJob:
    job = store.create("m", "d", {"mode": "linear"})
    claimed = claim(settings, store, job.id, "worker-1", settings.lease_seconds)
    assert claimed is not None
    return claimed


def test_only_the_first_claim_holds_the_job(settings: Settings, store: JobStore) -> None:
    first = _claimed(settings, store)
    assert claim(settings, store, first.id, "worker-2", settings.lease_seconds) is None
    assert store.get(first.id).lease_owner == "worker-1" and store.get(first.id).state == "running"


def test_a_failure_ends_the_job_failed_with_its_reason(settings: Settings, store: JobStore) -> None:
    job = _claimed(settings, store)
    with job:
        assert job.end_after_error(ValueError("bad pixels"), "search could not start: ") == "failed"
    done = store.get(job.id)
    assert done.state == "failed" and done.error == "search could not start: ValueError: bad pixels"


def test_a_cancel_request_reaches_the_heartbeat_and_ends_the_job_cancelled(
        settings: Settings, store: JobStore) -> None:
    job = _claimed(settings, store)
    with job:
        store.cancel(job.id)
        deadline = time.monotonic() + 10
        while not job.should_stop() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.should_stop()
        assert job.end_after_error(RuntimeError("stopped by the engine")) == "cancelled"
    done = store.get(job.id)
    assert done.state == "cancelled" and done.error == "cancelled on request"


def test_a_job_past_its_timeout_is_failed_saying_so(settings: Settings, store: JobStore) -> None:
    late = Settings(home=settings.home, lease_seconds=2.0, job_timeout_s=0.0)
    job = _claimed(late, store)
    with job:
        assert job.should_stop()
        assert job.end_after_error(RuntimeError("stopped")) == "failed"
    assert "timed out after 0s (job timeout)" in str(store.get(job.id).error)


def test_a_lost_lease_writes_nothing(settings: Settings, store: JobStore) -> None:
    job = _claimed(settings, store)
    new_owner = take_over(settings, store, job.job, "worker-1", "worker-2")
    assert new_owner is not None and take_over(settings, store, job.job, "worker-1", "worker-3") is None
    with job:
        deadline = time.monotonic() + 10
        while not job.beat.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.end_after_error(RuntimeError("stopped")) == "lost"
        assert not job.finish("succeeded", result={})
    after = store.get(job.id)
    assert after.state == "running" and after.lease_owner == "worker-2" and after.error is None
    assert new_owner.finish("succeeded", result={"ok": True}) and store.get(job.id).state == "succeeded"
