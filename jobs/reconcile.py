"""The reconciler: no job stays ``running`` without a live worker, nor unfinished forever.

It runs in every worker (a timer thread) and once at API start. Each decision is a conditional
update, so any number of reconcilers may run at once: only one of them re-queues a given job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.settings import Settings
from core.task_names import TASK_SEARCH, TASK_TRAIN
from jobs.store import Job, JobStore
from transport.broker import broker_url, send_task

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def reconcile(
    store: JobStore,
    send: Callable[[Job], None],
    max_attempts: int,
    job_timeout_s: float,
    now: float | None = None,
) -> Reconciled:
    """Re-queue jobs whose worker died (``send`` queues the job's task again); fail hopeless ones."""
    now = time.time() if now is None else now
    done = Reconciled()
    for job in store.expired(now):
        if job.cancel_requested:
            if store.force_finish(job, "cancelled", "cancelled (its worker stopped before it could)"):
                done.cancelled.append(job.id)
        elif job.attempts >= max_attempts:
            error = f"worker lost {job.attempts} times (limit {max_attempts}); giving up"
            if store.force_finish(job, "failed", error):
                done.failed.append(job.id)
        elif now - job.created_at > job_timeout_s:
            if store.force_finish(job, "failed", f"timed out after {job_timeout_s:.0f}s"):
                done.failed.append(job.id)
        elif store.requeue(job, now):
            log.warning("job %s lost its worker (lease expired); re-queued to resume from its checkpoint",
                        job.id)
            try:
                send(job)
                done.requeued.append(job.id)
            except Exception as exc:  # noqa: BLE001 - broker down: the job stays queued, fail it clearly
                store.force_finish(store.get(job.id), "failed", f"could not re-queue: {exc}")
                done.failed.append(job.id)
    # Anything still unfinished long after its deadline (a hung worker that keeps renewing, a
    # queued job no worker ever took) is failed rather than left waiting forever.
    for job in store.unfinished_older_than(now - job_timeout_s * 1.5):
        if store.force_finish(job, "failed", f"not finished within {job_timeout_s:.0f}s (job timeout)"):
            done.failed.append(job.id)
    if done.requeued or done.failed or done.cancelled:
        log.info("reconciled jobs: %s", done)
    return done


def reconcile_once(settings: Settings) -> Reconciled | None:
    """One pass that re-queues through the configured broker; skipped (None) when there is none."""
    tasks = {"train": TASK_TRAIN, "search": TASK_SEARCH}
    if not broker_url(settings):
        log.info("no broker configured: job reconciliation skipped")
        return None
    return reconcile(
        JobStore(settings.resolved_database_url, settings.db_auto_upgrade),
        send=lambda job: send_task(settings, tasks.get(job.kind, TASK_TRAIN), [job.id]),
        max_attempts=settings.job_max_attempts,
        job_timeout_s=settings.job_timeout_s,
    )
