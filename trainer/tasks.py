"""Celery tasks: thin and idempotent. They take a job id, the job store says what to do.

A message can arrive twice (redelivery after a lost worker, a reconciler re-queue): only the
delivery that claims the job in the store runs it; the others return at once. A job that already
registered its model before its worker died finds that version again instead of adding another.
The job itself is told in trainer/pipeline.py.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from core.logs import log_fields
from core.settings import get_settings
from core.task_names import TASK_TRAIN
from trainer.celery_app import app
from trainer.lease import ReconcilerThread
from trainer.pipeline import run_train_job

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
    # A search job has its own task (the API and the reconciler send each kind to its task).
    with log_fields(job_id=job_id):  # every line of this job names it (a JSON key with log_format=json)
        return run_train_job(job_id)
