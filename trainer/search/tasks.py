"""Celery tasks of a hyper-parameter search: the search task fans trials out, the last trial finalizes.

Nobody waits on anybody (no ``.get()`` in a task, no chord backend needed):

* ``tuneserve.search`` claims the job for the owner ``search:<job_id>`` (shared by all its tasks),
  prepares what every trial shares (decoded pixels in the shared pixel cache, the LR range test
  for ``lr: auto``), creates the Optuna study, and queues one ``tuneserve.trial`` per slot. It
  returns at once; the workers that serve the queue run the trials in parallel.
* each trial task runs one Optuna trial (trainer/search/trial.py).
* after its trial the task checks whether the search is over; the first to see it finalizes
  (trainer/search/finalize.py).

A re-delivered or re-queued search (its lease ran out: e.g. the worker of its last trial died)
claims the job again, fails trials left running by dead workers, queues the slots that never
started and finalizes when nothing is left to run.

Optuna, torch and the engine are imported inside the functions that use them: a worker process
starts (and reconciles) without paying for them; its first search job loads them.
"""

from __future__ import annotations

import logging
from typing import Any

from core.searchspec import Param
from core.settings import Settings, get_settings
from core.task_names import TASK_SEARCH, TASK_TRIAL
from jobs import JobStore
from models import registry_for
from trainer.celery_app import app
from trainer.data.job_data import JobData
from trainer.lease import ClaimedJob, claim
from trainer.search.finalize import fail_orphans, maybe_finalize
from trainer.search.job import QUEUE_GRACE_S, search_owner, split_spec, trial_spec, write_progress
from trainer.search.trial import run_trial
from transport.broker import send_task

log = logging.getLogger(__name__)


@app.task(name=TASK_SEARCH, ignore_result=True)
def search(job_id: str) -> str:
    return run_search_job(job_id)


@app.task(name=TASK_TRIAL, ignore_result=True)
def trial(job_id: str, slot: int) -> str:
    return run_trial(job_id, int(slot))


def run_search_job(job_id: str, settings: Settings | None = None) -> str:
    """Claim the search, prepare shared work, create the study and queue its trials."""
    settings = settings or get_settings()
    store = JobStore(settings.resolved_database_url)
    job = claim(settings, store, job_id, search_owner(job_id), max(settings.lease_seconds, QUEUE_GRACE_S))
    if job is None:
        return "skipped"
    with job:
        try:
            pending = _prepare(job)
        except Exception as exc:  # noqa: BLE001 - a search that cannot start ends with its reason
            return job.end_after_error(exc, "search could not start: ")
    # Trials may wait in the queue behind other jobs: hold the lease long enough for them to start.
    job.renew(max(settings.lease_seconds, QUEUE_GRACE_S))
    if not pending:
        return maybe_finalize(job_id, settings)
    for slot in pending:
        send_task(settings, TASK_TRIAL, [job_id, slot])
    log.info("search %s: queued %d trial(s)", job_id, len(pending))
    return "queued"


def _prepare(job: ClaimedJob) -> list[int]:
    """Create (or, on a re-run, reopen) the study; returns the slots that still need a trial."""
    from dataset_store import datasets_for
    from trainer.search import optuna_study

    settings = job.settings
    base_spec, search_spec = split_spec(job.job)
    data = JobData(datasets_for(settings).get_local(job.job.dataset_id),
                   settings.pixel_cache_dir(job.job.dataset_id))
    space = search_spec.effective_space()
    _warm_cache(base_spec, space, data)
    auto_lr = _auto_lr(base_spec, data, job) if any(p.auto for p in space.values()) else None
    space = optuna_study.resolve_space(space, auto_lr)
    study, n_trials = optuna_study.create_study(settings, job.id, search_spec, space)
    if auto_lr is not None and "auto_lr" not in study.user_attrs:
        study.set_user_attr("auto_lr", auto_lr)
    if job.job.attempts > 1:
        fail_orphans(study, "its worker was lost (the search was re-queued)")
    write_progress(job.store, job.id, study, n_trials, search_spec)
    started = optuna_study.started_slots(study)
    return [slot for slot in range(n_trials) if slot not in started]


def _auto_lr(base_spec: dict[str, Any], data: JobData, job: ClaimedJob) -> float:
    """The engine's LR range test (run by a one-epoch linear probe with ``lr: auto``)."""
    from trainer.run.engine import fine_tune

    spec = trial_spec(base_spec, {"lr": "auto", "mode": "linear", "ema": False}, 1)
    result = fine_tune(spec, data.dataset, should_stop=job.should_stop, cache_dir=data.cache_dir,
                       registry=registry_for(job.settings))
    lr = float(result.metrics["lr"])
    log.info("search: LR range test picked %.3g; lr is searched around it", lr)
    return lr


def _warm_cache(base_spec: dict[str, Any], space: dict[str, Param], data: JobData) -> None:
    """Decode every split once into the shared cache, before two workers could both start decoding."""
    from core.jobspec import TrainSpec
    from trainer.model_source import load_base

    bases = [base_spec.get("base") or TrainSpec().base]
    if "base" in space:
        bases = [str(v) for v in space["base"].values or []]
    for base in dict.fromkeys(bases):
        try:
            spec = trial_spec(base_spec, {"base": base}, 1)
            backbone, _ = load_base(spec.base, spec.registry_base(), data.classes, None)
        except Exception as exc:  # noqa: BLE001 - that base's trials will fail and say why
            log.warning("search: cannot prepare base %r: %s", base, exc)
            continue
        for split in ("train", "val", "test"):
            data.split(split, backbone.preprocessing, with_train=split == "train")
