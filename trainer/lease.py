"""Job leases: the claimed-job context every job runs in, its heartbeat, and the reconciler timer.

``Heartbeat`` renews the running job's lease and reads its cancel flag every half second, so a
cancel takes effect within one batch and a worker that dies stops renewing; the reconciler (every
worker runs one) then re-queues the job and it resumes from its checkpoint on a live worker.
``ClaimedJob`` bundles a held lease with its heartbeat and the one way to end the job; train jobs,
searches and a search's finalizer all run inside one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from core.settings import Settings
from jobs import Job, JobStore, reconcile_once

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Unique per task run: host, pid and a nonce (a redelivered message on the same pid is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    def __init__(self, store: JobStore, job_id: str, owner: str, lease_s: float, deadline: float) -> None:
        self.store = store
        self.job_id = job_id
        self.owner = owner
        self.lease_s = lease_s
        self.deadline = deadline  # UNIX time after which the job is stopped (job_timeout_s)
        self.interval = min(0.5, lease_s / 4)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def timed_out(self) -> bool:
        return time.time() > self.deadline

    def should_stop(self) -> bool:
        """Checked by the engine every batch."""
        return self.cancelled.is_set() or self.lost.is_set() or self.timed_out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                held, cancel = self.store.renew(self.job_id, self.owner, self.lease_s)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup: try again; the lease has slack
                log.warning("lease renewal for job %s failed: %s", self.job_id, exc)
                continue
            if not held:
                log.error("job %s: lease lost (re-queued elsewhere); stopping", self.job_id)
                self.lost.set()
                return
            if cancel:
                self.cancelled.set()


class ClaimedJob:
    """A job whose lease this task holds: heartbeat while inside ``with``, progress, and how it ends."""

    def __init__(self, settings: Settings, store: JobStore, job: Job, owner: str) -> None:
        self.settings, self.store, self.job, self.owner = settings, store, job, owner
        self.claimed_at = time.time()  # this attempt's start (the job's started_at is its first)
        self.beat = Heartbeat(store, job.id, owner, settings.lease_seconds, job.created_at + settings.job_timeout_s)

    def __enter__(self) -> ClaimedJob:
        self.beat.__enter__()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.beat.__exit__(*exc)

    @property
    def id(self) -> str:
        return self.job.id

    def should_stop(self) -> bool:
        return self.beat.should_stop()

    def record_progress(self, progress: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
        # monotone: progress never moves back, also across attempts (a resumed run re-runs lost batches)
        self.store.record_progress(self.job.id, self.owner, progress, metrics, monotone=True)

    def renew(self, lease_s: float) -> None:
        self.store.renew(self.job.id, self.owner, lease_s)

    def finish(self, state: str, result: dict[str, Any] | None = None, error: str | None = None) -> bool:
        """End the job; False when the lease was lost meanwhile (nothing is recorded then)."""
        return self.store.finish(self.job.id, self.owner, state, result=result, error=error)

    def end_after_error(self, exc: Exception, what: str = "") -> str:
        """End the job after ``exc``: cancelled, timed out or failed with its reason; "lost" writes nothing."""
        if self.beat.lost.is_set():
            log.warning("job %s: lease lost; leaving it (and its checkpoint) to its new owner", self.job.id)
            return "lost"
        if self.beat.cancelled.is_set():
            state, error = "cancelled", "cancelled on request"
        elif self.beat.timed_out:
            state, error = "failed", f"timed out after {self.settings.job_timeout_s:.0f}s (job timeout)"
        else:
            log.exception("job %s failed", self.job.id)
            state, error = "failed", f"{what}{type(exc).__name__}: {exc}"
        self.finish(state, error=error)
        return state


def claim(settings: Settings, store: JobStore, job_id: str, owner: str, lease_s: float) -> ClaimedJob | None:
    """Claim the job for ``owner`` (None: taken, finished or retried too often)."""
    job = store.claim(job_id, owner, lease_s, settings.job_max_attempts)
    if job is None:
        log.info("job %s: not claimable (taken, finished or retried too often); skipping", job_id)
        return None
    log.info("job %s: attempt %d on %s", job_id, job.attempts, owner)
    return ClaimedJob(settings, store, job, owner)


def take_over(settings: Settings, store: JobStore, job: Job, old_owner: str, new_owner: str) -> ClaimedJob | None:
    """Move the lease from ``old_owner`` to ``new_owner`` with one conditional update (None: someone else did)."""
    if not store.hand_over(job.id, old_owner, new_owner, settings.lease_seconds):
        return None
    return ClaimedJob(settings, store, job, new_owner)


class ReconcilerThread(threading.Thread):
    """Runs the reconciler every half lease (at most every 30 s) for as long as the worker lives."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="job-reconciler", daemon=True)
        self.settings = settings
        self.interval = max(0.5, min(settings.lease_seconds / 2, 30.0))
        self._stop = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reconcile_once(self.settings)
            except Exception:  # the timer must outlive a DB or broker outage
                log.exception("job reconciler pass failed")
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
