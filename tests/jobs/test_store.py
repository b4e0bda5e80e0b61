"""Job store and reconciler on SQLite and on the real PostgreSQL (a private schema per run)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from core.jobspec import JobSpec, TrainSpec
from jobs import JobFinished, JobNotFound, JobStore, reconcile
from tests.pg import private_schema


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh schema on the real PostgreSQL; the store finds it through search_path."""
    with private_schema("tuneserve_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    sqlite = request.param == "sqlite"
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if sqlite else request.getfixturevalue("pg_url")
    s = JobStore(url)
    yield s
    if request.param == "postgresql":
        with s.engine.begin() as conn:
            conn.execute(text("DELETE FROM tuneserve_jobs"))
    s.dispose()


def new_job(store: JobStore, dataset: str = "ds1") -> str:
    return store.create("bees", dataset, {"mode": "linear", "max_epochs": 3}).id


def race(attempt: Callable[[str], bool], owners: list[str]) -> list[str]:
    """Every owner attempts at the same moment (a barrier); the owners whose attempt succeeded."""
    wins: list[str] = []
    barrier = threading.Barrier(len(owners))

    def run(owner: str) -> None:
        barrier.wait()
        if attempt(owner):
            wins.append(owner)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


def test_the_stored_spec_is_typed_and_keeps_only_what_was_set(store: JobStore) -> None:
    spec = JobSpec(mode="linear", replace_labels=True, search={"method": "random", "trials": 2})
    job = store.get(store.create("bees", "ds", spec, kind="search").id)
    assert job.spec == spec and job.spec.stored() == {"mode": "linear", "replace_labels": True,
                                                      "search": {"method": "random", "trials": 2}}
    assert job.spec.train_spec().model_dump(exclude_unset=True) == {"mode": "linear"}  # no job keys in the run's spec
    with pytest.raises(ValidationError, match="lr"):
        store.create("bees", "ds", {"lr": -1})


def test_create_get_list(store: JobStore) -> None:
    a = new_job(store)
    b = store.create("wasps", "ds2", {}).id
    job = store.get(a)
    assert (job.state, job.model, job.spec.stored(), job.metrics, job.attempts) == (
        "queued", "bees", {"mode": "linear", "max_epochs": 3}, [], 0)
    assert isinstance(job.spec, JobSpec) and job.spec.train_spec() == TrainSpec(mode="linear", max_epochs=3)
    assert {j.id for j in store.list_jobs()} == {a, b}
    assert [j.id for j in store.list_jobs(model="wasps")] == [b]
    assert store.list_jobs(state="running") == []
    with pytest.raises(JobNotFound):
        store.get("nope")


def test_only_one_of_many_concurrent_claims_wins(store: JobStore) -> None:
    job_id = new_job(store)
    wins = race(lambda owner: store.claim(job_id, owner, lease_s=30, max_attempts=3) is not None,
                [f"w{i}" for i in range(6)])
    assert len(wins) == 1
    job = store.get(job_id)
    assert (job.state, job.lease_owner, job.attempts) == ("running", wins[0], 1)
    assert job.started_at is not None
    # A redelivered message for a job that is running under a live lease is not run again.
    assert store.claim(job_id, "late", lease_s=30, max_attempts=3) is None


def test_hand_over_moves_the_lease_to_exactly_one_new_owner(store: JobStore) -> None:
    job_id = new_job(store)
    assert store.claim(job_id, "search", lease_s=30, max_attempts=3)
    assert not store.hand_over(job_id, "not-the-owner", "thief", lease_s=30)
    wins = race(lambda owner: store.hand_over(job_id, "search", owner, lease_s=30),
                [f"finalizer{i}" for i in range(4)])
    assert len(wins) == 1 and store.get(job_id).lease_owner == wins[0]
    assert store.renew(job_id, wins[0], lease_s=30) == (True, False)
    assert store.renew(job_id, "search", lease_s=30) == (False, False)  # the old owner lost it
    store.finish(job_id, wins[0], "succeeded")
    assert not store.hand_over(job_id, wins[0], "late", lease_s=30)  # finished jobs keep their owner


def test_monotone_progress_never_moves_back(store: JobStore) -> None:
    """A search's writers read the study at different times: a late stale write keeps the higher fraction."""
    job_id = new_job(store)
    store.claim(job_id, "w1", 30, 3)
    assert store.record_progress(job_id, "w1", {"fraction": 0.5, "trials_done": 2}, monotone=True)
    assert store.record_progress(job_id, "w1", {"fraction": 0.25, "trials_done": 1}, monotone=True)
    assert store.get(job_id).progress == {"fraction": 0.5, "trials_done": 1}
    assert store.record_progress(job_id, "w1", {"fraction": 0.75}, monotone=True)
    assert store.get(job_id).progress == {"fraction": 0.75}
    assert store.record_progress(job_id, "w1", {"fraction": 0.1})  # a train job's own tracker decides
    assert store.get(job_id).progress == {"fraction": 0.1}


def test_progress_metrics_and_finish_need_the_lease(store: JobStore) -> None:
    job_id = new_job(store)
    store.claim(job_id, "w1", 30, 3)
    assert store.record_progress(job_id, "w1", {"epoch": 1, "epochs": 3}, {"epoch": 1, "val_accuracy": 0.5})
    assert store.record_progress(job_id, "w1", {"epoch": 2, "epochs": 3}, {"epoch": 2, "val_accuracy": 0.7})
    # A resumed run that repeats epoch 2 replaces it rather than appending a duplicate.
    assert store.record_progress(job_id, "w1", {"epoch": 2, "epochs": 3}, {"epoch": 2, "val_accuracy": 0.8})
    assert not store.record_progress(job_id, "intruder", {"epoch": 3}, {"epoch": 3})
    assert not store.finish(job_id, "intruder", "succeeded", result={})
    job = store.get(job_id)
    assert [m["val_accuracy"] for m in job.metrics] == [0.5, 0.8]
    assert job.progress == {"epoch": 2, "epochs": 3}
    assert store.finish(job_id, "w1", "succeeded", result={"version": 1})
    job = store.get(job_id)
    assert (job.state, job.result, job.lease_owner) == ("succeeded", {"version": 1}, None)
    assert job.finished_at is not None
    assert not store.finish(job_id, "w1", "failed", error="twice")


def test_cancel_queued_running_finished(store: JobStore) -> None:
    queued = new_job(store)
    assert store.cancel(queued).state == "cancelled"
    assert store.claim(queued, "w1", 30, 3) is None  # a cancelled job's message is a no-op
    running = new_job(store)
    store.claim(running, "w1", 30, 3)
    job = store.cancel(running)
    assert (job.state, job.cancel_requested) == ("running", True)
    assert store.renew(running, "w1", 30) == (True, True)  # what the worker's heartbeat sees
    store.finish(running, "w1", "cancelled", error="cancelled on request")
    with pytest.raises(JobFinished):
        store.cancel(running)


def test_dataset_in_use_counts_unfinished_jobs(store: JobStore) -> None:
    a = new_job(store, "dsA")
    new_job(store, "dsB")
    assert store.unfinished_on_dataset("dsA") == 1
    store.cancel(a)
    assert store.unfinished_on_dataset("dsA") == 0


def test_reconciler_requeues_expired_and_fails_hopeless_jobs(store: JobStore) -> None:
    sent: list[str] = []
    dead = new_job(store)
    store.claim(dead, "w-dead", lease_s=0.01, max_attempts=3)
    alive = new_job(store)
    store.claim(alive, "w-alive", lease_s=60, max_attempts=3)
    time.sleep(0.05)
    done = reconcile(store, lambda j: sent.append(j.id), max_attempts=3, job_timeout_s=3600)
    assert done.requeued == [dead] and sent == [dead]
    assert store.get(dead).state == "queued" and store.get(alive).state == "running"
    # The dead worker wakes up: it lost the lease, so it can write nothing.
    assert store.renew(dead, "w-dead", 30) == (False, False)
    assert not store.finish(dead, "w-dead", "succeeded", result={})
    # A second reconciler looking at the same moment does nothing more.
    assert reconcile(store, lambda j: sent.append(j.id), max_attempts=3, job_timeout_s=3600).requeued == []

    # The next worker claims it (attempt 2) and dies too; with a limit of 2 it is failed, not stuck.
    assert store.claim(dead, "w2", lease_s=0.01, max_attempts=2) is not None
    time.sleep(0.05)
    done = reconcile(store, lambda j: sent.append(j.id), max_attempts=2, job_timeout_s=3600)
    job = store.get(dead)
    assert done.failed == [dead] and job.state == "failed" and "lost 2 times" in (job.error or "")

    # Cancel requested while the worker was dead: it ends cancelled instead of running again.
    cancelled = new_job(store)
    store.claim(cancelled, "w3", lease_s=0.01, max_attempts=3)
    store.cancel(cancelled)
    time.sleep(0.05)
    assert reconcile(store, lambda j: sent.append(j.id), max_attempts=3, job_timeout_s=3600).cancelled == [cancelled]
    assert store.get(cancelled).state == "cancelled"


def test_reconciler_fails_jobs_past_the_timeout(store: JobStore) -> None:
    expired = new_job(store)
    store.claim(expired, "w1", lease_s=0.01, max_attempts=3)
    never_taken = new_job(store)
    time.sleep(0.05)
    sent: list[str] = []
    later = time.time() + 100
    done = reconcile(store, lambda j: sent.append(j.id), max_attempts=3, job_timeout_s=50, now=later)
    assert sorted(done.failed) == sorted([expired, never_taken]) and sent == []
    assert "timed out" in (store.get(expired).error or "")
    assert store.get(never_taken).state == "failed"
