"""Celery tasks: thin and idempotent. They take a job id, the job store says what to do.

A message can arrive twice (redelivery after a lost worker, a reconciler re-queue): only the
delivery that claims the job in the store runs it; the others return at once. A job that already
registered its model before its worker died finds that version again instead of adding another.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from core.settings import Settings, get_settings
from core.task_names import TASK_RECONCILE, TASK_TRAIN
from jobs import Job, JobStore, reconcile_once
from trainer.celery_app import app
from trainer.worker import Heartbeat, ReconcilerThread, owner_id

log = logging.getLogger(__name__)

_reconciler: ReconcilerThread | None = None


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    global _reconciler
    _reconciler = ReconcilerThread(get_settings())
    _reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stop()


@app.task(name=TASK_TRAIN, ignore_result=True)
def train(job_id: str) -> str:
    from trainer.search_tasks import run_search_if_search_job

    # The reconciler re-queues every kind of job under this name: a search goes to its own task.
    return run_search_if_search_job(job_id) or run_train_job(job_id)


@app.task(name=TASK_RECONCILE, ignore_result=True)
def reconcile_jobs() -> None:
    reconcile_once(get_settings())


def checkpoint_dir(settings: Settings, job_id: str) -> Path:
    return settings.work_dir / "jobs" / job_id


def run_train_job(job_id: str, settings: Settings | None = None) -> str:
    """Claim, train (resuming from the job's checkpoint), gate and publish; returns the end state."""
    settings = settings or get_settings()
    store = JobStore(settings.resolved_database_url)
    owner = owner_id()
    job = store.claim(job_id, owner, settings.lease_seconds, settings.job_max_attempts)
    if job is None:
        log.info("job %s: not claimable (taken, finished or retried too often); skipping", job_id)
        return "skipped"
    log.info("job %s: attempt %d on %s", job_id, job.attempts, owner)
    deadline = job.created_at + settings.job_timeout_s
    with Heartbeat(store, job_id, owner, settings.lease_seconds, deadline) as beat:
        try:
            result = _train_and_publish(job, settings, store, owner, beat)
        except Exception as exc:  # noqa: BLE001 - every failure ends the job with its reason
            return _end_after_error(job, settings, store, owner, beat, exc)
    if not store.finish(job_id, owner, "succeeded", result=result):
        log.warning("job %s: finished but lost its lease meanwhile; result not recorded", job_id)
        return "lost"
    shutil.rmtree(checkpoint_dir(settings, job_id), ignore_errors=True)
    return "succeeded"


def _end_after_error(
    job: Job, settings: Settings, store: JobStore, owner: str, beat: Heartbeat, exc: Exception
) -> str:
    if beat.lost.is_set():
        log.warning("job %s: lease lost; leaving it (and its checkpoint) to its new owner", job.id)
        return "lost"
    if beat.cancelled.is_set():
        state, error = "cancelled", "cancelled on request"
    elif beat.timed_out:
        state, error = "failed", f"timed out after {settings.job_timeout_s:.0f}s (job timeout)"
    else:
        log.exception("job %s failed", job.id)
        state, error = "failed", f"{type(exc).__name__}: {exc}"
    store.finish(job.id, owner, state, error=error)
    shutil.rmtree(checkpoint_dir(settings, job.id), ignore_errors=True)
    return state


def as_dict(metrics: Any) -> dict[str, Any]:
    if hasattr(metrics, "model_dump"):
        return dict(metrics.model_dump())
    if dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
        return dataclasses.asdict(metrics)
    return dict(vars(metrics))


def progress_writer(store: JobStore, job_id: str, owner: str) -> Any:
    def on_progress(metrics: Any) -> None:
        m = as_dict(metrics)
        epochs = max(int(m.get("epochs") or 1), 1)
        progress = {"epoch": m.get("epoch"), "epochs": epochs, "fraction": min(1.0, m["epoch"] / epochs),
                    "eta_s": m.get("eta_s"), "stage": m.get("stage")}
        keep = ("epoch", "stage", "train_loss", "val_loss", "val_accuracy", "lr", "images_per_s", "elapsed_s")
        store.record_progress(job_id, owner, progress, {k: m.get(k) for k in keep})

    return on_progress


class _Stopped(Exception):
    pass


def _train_and_publish(
    job: Job, settings: Settings, store: JobStore, owner: str, beat: Heartbeat
) -> dict[str, Any]:
    # Imported here: the worker process starts (and reconciles) without paying for torch.
    from core.jobspec import train_fields
    from dataset_store import DatasetStore
    from models import Registry
    from trainer.engine import fine_tune
    from trainer.promotion import publish_with_gate
    from trainer.spec import TrainSpec

    spec = TrainSpec.model_validate(train_fields(job.spec))
    # Any: core's Dataset satisfies the engine's DatasetLike protocol except that .root is read-only.
    dataset: Any = DatasetStore(settings.datasets_dir).get(job.dataset_id)
    store.record_progress(job.id, owner, {"epoch": 0, "epochs": spec.max_epochs, "fraction": 0.0,
                                          "eta_s": None, "stage": "starting"})
    registry = Registry(settings.models_dir)
    result = fine_tune(
        spec, dataset, on_progress=progress_writer(store, job.id, owner),
        should_stop=beat.should_stop, checkpoint_dir=checkpoint_dir(settings, job.id), registry=registry,
        # Decoded pixels are shared by every job on the dataset (the search jobs use the same folder).
        cache_dir=settings.work_dir / "cache" / job.dataset_id,
    )
    if beat.should_stop():  # cancelled after the last batch: still nothing is registered
        raise _Stopped("stopped before publishing")
    lineage = {"kind": "fine-tune", "job_id": job.id, "dataset_id": job.dataset_id, "base": spec.base,
               "spec": spec.model_dump(mode="json")}
    return publish_with_gate(result, registry, job.model, dataset, lineage, settings,
                             replace_labels=bool(job.spec.get("replace_labels")))
