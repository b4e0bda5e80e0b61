"""The story of a job, from the claimed lease to the announced model.

A train job: **claim** its lease (``ClaimedJob``: heartbeat, cancel flag, deadline, finish) →
**load data** once (``JobData``: the dataset's splits, decoded into the shared pixel cache) →
**train** (``fine_tune``: stages, early stopping, checkpoint/resume; it also **evaluates** on the
test split and **calibrates** the temperature on val) → **export** the checked ONNX file and
**register** it, not yet served → **gate** it against the active version on the held-out split →
**promote** and **announce** it to the API processes, or keep it as a candidate → finish the job.

A search job runs the same story with **search** in place of train: its claim prepares the shared
pixels and queues one trial task per slot (trainer/search/tasks.py, search_trial.py); the last trial
to end finalizes (trainer/search/finalize.py), publishing the best trial's model with
trainer/publish/publisher.py's ``publish`` exactly as a train job (and ``tuneserve train``, and ``bootstrap``) does.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from typing import Any

from core.settings import Settings, get_settings
from jobs import JobStore
from models import registry_for
from trainer.data.job_data import JobData
from trainer.lease import ClaimedJob, claim, owner_id
from trainer.progress.eta import COST_BOOK, CostBook
from trainer.progress.tracker import PUBLISH_STAGES, ProgressTracker

log = logging.getLogger(__name__)

PROGRESS_METRICS = ("epoch", "stage", "train_loss", "val_loss", "val_accuracy", "lr", "images_per_s", "elapsed_s")


class Stopped(Exception):
    """Cancelled, timed out or lease lost after the last batch: nothing gets registered."""


def run_train_job(job_id: str, settings: Settings | None = None) -> str:
    """Claim, train (resuming from the job's checkpoint), gate and publish; returns the end state."""
    settings = settings or get_settings()
    store = JobStore(settings.resolved_database_url, settings.db_auto_upgrade)
    job = claim(settings, store, job_id, owner_id(), settings.lease_seconds)
    if job is None:
        return "skipped"
    checkpoint = settings.job_checkpoint_dir(job_id)
    with job:
        try:
            result = train_and_publish(job)
        except Exception as exc:  # noqa: BLE001 - every failure ends the job with its reason
            state = job.end_after_error(exc)
            if state != "lost":  # a new owner resumes from the checkpoint
                shutil.rmtree(checkpoint, ignore_errors=True)
            return state
    if not job.finish("succeeded", result=result):
        log.warning("job %s: finished but lost its lease meanwhile; result not recorded", job_id)
        return "lost"
    shutil.rmtree(checkpoint, ignore_errors=True)
    return "succeeded"


def train_and_publish(job: ClaimedJob) -> dict[str, Any]:
    # Imported here: the worker process starts (and reconciles) without paying for torch.
    from dataset_store import datasets_for
    from trainer.progress import eta_plan
    from trainer.publish.publisher import Request, Trained, publish
    from trainer.run.engine import fine_tune
    from trainer.run.stages import plan_stages

    settings = job.settings
    spec = job.job.spec.train_spec()
    # Decoded pixels are shared by every job on the dataset (the search jobs use the same folder).
    data = JobData(datasets_for(settings).get_local(job.job.dataset_id),
                   settings.pixel_cache_dir(job.job.dataset_id))
    # Progress: every stage to the end (publishing too), written at most once a second; a resumed
    # run continues the stored progress (fraction, run time, measured speeds).
    tracker = ProgressTracker(lambda snap: job.record_progress(snap))
    tracker.restore(job.job.progress)
    tracker.elapsed_before += time.time() - job.claimed_at  # the worker's time before the tracker (imports)
    tracker.book = CostBook(settings.work_dir / COST_BOOK)
    tracker.plan([(name, 1) for name in PUBLISH_STAGES])
    work = eta_plan.workload(spec, plan_stages(spec), data.dataset)
    eta_plan.expect_publishing(tracker, work, tracker.book, eta_plan.book_key(spec))
    registry = registry_for(settings)
    with tracker.ticking():  # the stored progress follows the clock between batches too
        result = fine_tune(
            spec, data.dataset, on_progress=progress_writer(job, tracker), should_stop=job.should_stop,
            checkpoint_dir=settings.job_checkpoint_dir(job.id), registry=registry, cache_dir=data.cache_dir,
            progress=tracker,
        )
        if job.should_stop():  # cancelled after the last batch: still nothing is registered
            raise Stopped("stopped before publishing")
        request = Request(job.job.model, "job", job_id=job.id, replace_labels=job.job.spec.replace_labels)
        out = publish(Trained(result, data), registry, request, settings, tracker=tracker)
        eta_plan.learn(tracker, work, tracker.book, eta_plan.book_key(spec))
    tracker.finish()
    return out


def as_dict(metrics: Any) -> dict[str, Any]:
    if hasattr(metrics, "model_dump"):
        return dict(metrics.model_dump())
    if dataclasses.is_dataclass(metrics) and not isinstance(metrics, type):
        return dataclasses.asdict(metrics)
    return dict(vars(metrics))


def progress_writer(job: ClaimedJob, tracker: ProgressTracker | None = None) -> Callable[[Any], None]:
    """The engine's ``on_progress``: one metrics row per epoch, beside the tracker's progress."""

    def on_progress(metrics: Any) -> None:
        m = as_dict(metrics)
        if tracker is not None:
            with tracker.lock:
                progress = tracker.snapshot()
        else:
            epochs = max(int(m.get("epochs") or 1), 1)
            progress = {"epoch": m.get("epoch"), "epochs": epochs, "fraction": min(1.0, m["epoch"] / epochs),
                        "eta_s": m.get("eta_s"), "stage": m.get("stage")}
        job.record_progress(progress, {k: m.get(k) for k in PROGRESS_METRICS})

    return on_progress
