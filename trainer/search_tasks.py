"""Celery tasks of a hyper-parameter search: the search task fans trials out, the last trial finalizes.

Nobody waits on anybody (no ``.get()`` in a task, no chord backend needed):

* ``tuneserve.search`` claims the job for the owner ``search:<job_id>`` (shared by all its tasks),
  prepares what every trial shares (decoded pixels in ``<home>/work/cache/<dataset_id>``, the LR
  range test for ``lr: auto``), creates the Optuna study, and queues one ``tuneserve.trial`` per
  slot. It returns at once; the workers that serve the queue run the trials in parallel.
* each trial task runs one Optuna trial (``study.optimize(n_trials=1)``: heartbeats on RDB storage),
  renews the job's lease while it trains (so the cancel flag reaches it within a batch), reports
  every epoch's validation accuracy to the pruner, and records the trial table in the job's
  progress. A failing trial is recorded as failed and still counts.
* after its trial the task checks, in the study, whether every slot is finished (or the job was
  cancelled and nothing runs any more); the first to see it takes the job's lease over with one
  conditional UPDATE (so exactly one finalizes) and publishes the best trial's model through the
  same export, report and promotion gate as a single job.

A re-delivered or re-queued search (its lease ran out: e.g. the worker of its last trial died)
claims the job again, fails trials left running by dead workers, queues the slots that never
started and finalizes when nothing is left to run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from core.fsutil import atomic_write
from core.jobspec import train_fields
from core.searchspec import SearchSpec, best_of
from core.settings import Settings, get_settings
from core.task_names import TASK_SEARCH, TASK_TRIAL
from jobs import Job, JobStore
from trainer.celery_app import app
from trainer.worker import Heartbeat, owner_id
from transport.broker import send_task

log = logging.getLogger(__name__)

QUEUE_GRACE_S = 300.0  # lease the search holds while its trials wait in the queue to start


def search_owner(job_id: str) -> str:
    """The lease owner every task of one search shares (any of them may renew or write progress)."""
    return f"search:{job_id}"


def is_search_job(job: Job) -> bool:
    return job.kind == "search" or "search" in job.spec


def split_spec(job: Job) -> tuple[dict[str, Any], SearchSpec]:
    """The job's spec is a train spec plus ``search``: return both halves."""
    base = train_fields(job.spec)
    return base, SearchSpec.model_validate(job.spec["search"])


def work_folder(settings: Settings, job_id: str) -> Path:
    """Saved models of the best trials so far (the finalizer publishes the best one)."""
    return settings.work_dir / "search" / job_id


def shared_cache_dir(settings: Settings, dataset_id: str) -> Path:
    return settings.work_dir / "cache" / dataset_id


def _deadline(job: Job, settings: Settings) -> float:
    return job.created_at + settings.job_timeout_s


@app.task(name=TASK_SEARCH, ignore_result=True)
def search(job_id: str) -> str:
    return run_search_job(job_id)


@app.task(name=TASK_TRIAL, ignore_result=True)
def trial(job_id: str, slot: int) -> str:
    return run_trial(job_id, int(slot))


# ------------------------------------------------------------------------------ search task
def run_search_if_search_job(job_id: str, settings: Settings | None = None) -> str | None:
    """For ``tuneserve.train`` messages (the reconciler re-queues every job under that name)."""
    from jobs import JobNotFound

    settings = settings or get_settings()
    try:
        job = JobStore(settings.resolved_database_url).get(job_id)
    except JobNotFound:
        return None
    return run_search_job(job_id, settings) if is_search_job(job) else None


def run_search_job(job_id: str, settings: Settings | None = None) -> str:
    """Claim the search, prepare shared work, create the study and queue its trials."""
    settings = settings or get_settings()
    store = JobStore(settings.resolved_database_url)
    owner = search_owner(job_id)
    job = store.claim(job_id, owner, max(settings.lease_seconds, QUEUE_GRACE_S), settings.job_max_attempts)
    if job is None:
        log.info("search %s: not claimable (running, finished or retried too often); skipping", job_id)
        return "skipped"
    log.info("search %s: attempt %d", job_id, job.attempts)
    with Heartbeat(store, job_id, owner, settings.lease_seconds, _deadline(job, settings)) as beat:
        try:
            pending = _prepare(job, settings, store, owner, beat)
        except Exception as exc:  # noqa: BLE001 - a search that cannot start ends with its reason
            log.exception("search %s could not start", job_id)
            store.finish(job_id, owner, "cancelled" if beat.cancelled.is_set() else "failed",
                         error=f"search could not start: {type(exc).__name__}: {exc}")
            return "failed"
    # Trials may wait in the queue behind other jobs: hold the lease long enough for them to start.
    store.renew(job_id, owner, max(settings.lease_seconds, QUEUE_GRACE_S))
    if not pending:
        return maybe_finalize(job_id, settings)
    for slot in pending:
        send_task(settings, TASK_TRIAL, [job_id, slot])
    log.info("search %s: queued %d trial(s)", job_id, len(pending))
    return "queued"


def _prepare(job: Job, settings: Settings, store: JobStore, owner: str, beat: Heartbeat) -> list[int]:
    """Create (or, on a re-run, reopen) the study; returns the slots that still need a trial."""
    from dataset_store import DatasetStore
    from trainer import search as opt

    base_spec, search_spec = split_spec(job)
    dataset = DatasetStore(settings.datasets_dir).get(job.dataset_id)
    space = search_spec.effective_space()
    _warm_cache(base_spec, space, dataset, settings)
    auto_lr = _auto_lr(base_spec, dataset, settings, beat) if any(p.auto for p in space.values()) else None
    space = opt.resolve_space(space, auto_lr)
    study, n_trials = opt.create_study(settings, job.id, search_spec, space)
    if auto_lr is not None and "auto_lr" not in study.user_attrs:
        study.set_user_attr("auto_lr", auto_lr)
    if job.attempts > 1:
        _fail_orphans(study, "its worker was lost (the search was re-queued)")
    write_progress(store, job.id, owner, study, n_trials, search_spec)
    started = opt.started_slots(study)
    return [slot for slot in range(n_trials) if slot not in started]


def trial_spec(base_spec: dict[str, Any], params: dict[str, Any], max_epochs: int) -> Any:
    """A trial's spec: the job's hyper-parameters, the trial's values, the search's epoch budget.

    A search epoch is an epoch of the run's main stage: fine-tuning in ``finetune``/``gradual``/
    ``auto`` (the linear probe before it costs milliseconds), the probe itself in ``linear`` mode.
    """
    from trainer.spec import TrainSpec

    fields = {**base_spec, **params, "max_epochs": max_epochs}
    if fields.get("mode") == "linear":
        fields["probe_epochs"] = max_epochs
    return TrainSpec.model_validate(fields)


def _auto_lr(base_spec: dict[str, Any], dataset: Any, settings: Settings, beat: Heartbeat) -> float:
    """The engine's LR range test (run by a one-epoch linear probe with ``lr: auto``)."""
    from trainer.engine import fine_tune

    spec = trial_spec(base_spec, {"lr": "auto", "mode": "linear", "ema": False}, 1)
    result = fine_tune(spec, dataset, should_stop=beat.should_stop,
                       cache_dir=shared_cache_dir(settings, dataset.id))
    lr = float(result.metrics["lr"])
    log.info("search: LR range test picked %.3g; lr is searched around it", lr)
    return lr


def _warm_cache(base_spec: dict[str, Any], space: dict[str, Any], dataset: Any, settings: Settings) -> None:
    """Decode every split once into the shared cache, before two workers could both start decoding."""
    from trainer.data import load_split
    from trainer.model_source import load_base
    from trainer.spec import TrainSpec

    bases = [base_spec.get("base") or TrainSpec().base]
    if "base" in space:
        bases = [str(v) for v in space["base"].values or []]
    for base in dict.fromkeys(bases):
        try:
            spec = trial_spec(base_spec, {"base": base}, 1)
            backbone, _ = load_base(spec.base, spec.registry_base(), list(dataset.classes), None)
        except Exception as exc:  # noqa: BLE001 - that base's trials will fail and say why
            log.warning("search: cannot prepare base %r: %s", base, exc)
            continue
        for split in ("train", "val", "test"):
            load_split(dataset, split, backbone.preprocessing, with_train=split == "train",
                       cache_dir=shared_cache_dir(settings, dataset.id))


# ------------------------------------------------------------------------------ trial task
def run_trial(job_id: str, slot: int, settings: Settings | None = None) -> str:
    """Run one trial of the search in this worker; finalize the search if it was the last."""
    from trainer import search as opt

    settings = settings or get_settings()
    store = JobStore(settings.resolved_database_url)
    owner = search_owner(job_id)
    job = store.get(job_id)
    if job.state != "running" or job.lease_owner != owner or job.cancel_requested:
        log.info("search %s slot %d: job is %s%s; trial skipped", job_id, slot, job.state,
                 " (cancel requested)" if job.cancel_requested else "")
        maybe_finalize(job_id, settings)
        return "skipped"
    base_spec, search_spec = split_spec(job)
    study = opt.load_study(settings, job_id, search_spec, slot)
    if slot in opt.started_slots(study):
        log.info("search %s slot %d: already run (duplicate delivery); skipped", job_id, slot)
        return "skipped"
    n_trials = int(study.user_attrs["n_trials"])
    with Heartbeat(store, job_id, owner, settings.lease_seconds, _deadline(job, settings)) as beat:
        runner = TrialRunner(settings, store, job, study, slot, base_spec, search_spec, beat, n_trials)
        study.optimize(runner, n_trials=1, catch=(Exception,))
    write_progress(store, job_id, owner, study, n_trials, search_spec)
    state = maybe_finalize(job_id, settings)
    if state == "running" and len(opt.started_slots(study)) < n_trials:
        # Trials still queued may wait behind other jobs: keep the search from looking abandoned.
        store.renew(job_id, owner, max(settings.lease_seconds, QUEUE_GRACE_S))
    return state


class TrialRunner:
    """The Optuna objective of one slot: fine-tune with the suggested values, report every epoch."""

    def __init__(self, settings: Settings, store: JobStore, job: Job, study: Any, slot: int,
                 base_spec: dict[str, Any], search_spec: SearchSpec, beat: Heartbeat, n_trials: int) -> None:
        self.settings, self.store, self.job, self.study = settings, store, job, study
        self.slot, self.base_spec, self.search_spec = slot, base_spec, search_spec
        self.beat, self.n_trials = beat, n_trials

    def __call__(self, trial: Any) -> float:
        import optuna

        from dataset_store import DatasetStore
        from trainer import search as opt
        from trainer.engine import Pruned, fine_tune

        trial.set_user_attr("slot", self.slot)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        space, grid_space = opt.study_space(self.study)
        params = opt.suggest(trial, space, self.search_spec.method, grid_space)
        log.info("search %s trial %d (slot %d): %s", self.job.id, trial.number, self.slot, params)
        self._progress()
        try:
            dataset: Any = DatasetStore(self.settings.datasets_dir).get(self.job.dataset_id)
            spec = trial_spec(self.base_spec, params, self.search_spec.max_epochs)
            reporter = opt.EpochReporter(trial, spec.mode, self.search_spec.max_epochs, Pruned, self._progress)
            result = fine_tune(
                spec, dataset, should_stop=self.beat.should_stop,
                on_progress=reporter.on_progress, on_epoch_end=reporter.on_epoch_end,
                cache_dir=shared_cache_dir(self.settings, dataset.id),
            )
        except Pruned:
            raise optuna.TrialPruned() from None
        except Exception as exc:
            reason = "cancelled" if self.beat.cancelled.is_set() else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", reason[:500])
            raise
        value = opt.score(float(result.metrics["val_accuracy"]), float(result.metrics["val_loss"]))
        trial.set_user_attr("final_val_accuracy", float(result.metrics["val_accuracy"]))
        trial.set_user_attr("spec", spec.model_dump(mode="json"))
        keep_if_best(self.settings, self.job.id, self.study, trial.number, value, result)
        return value

    def _progress(self) -> None:
        try:
            write_progress(self.store, self.job.id, search_owner(self.job.id), self.study, self.n_trials,
                           self.search_spec)
        except Exception as exc:  # noqa: BLE001 - progress is informative; never fail a trial for it
            log.warning("search %s: progress not recorded: %s", self.job.id, exc)


def keep_if_best(settings: Settings, job_id: str, study: Any, number: int, value: float, result: Any) -> None:
    """Save this trial's trained model when it is the best so far; drop saved ones now beaten."""
    import torch
    from optuna.trial import TrialState

    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != number]
    best_other = max((float(t.value) for t in others if t.value is not None), default=None)
    if best_other is not None and value < best_other:
        return
    folder = work_folder(settings, job_id)
    atomic_write(folder / f"trial-{number}.pt", lambda fh: torch.save(result, fh))
    beaten = {t.number for t in others if t.value is not None and float(t.value) < value}
    for n in beaten:
        (folder / f"trial-{n}.pt").unlink(missing_ok=True)


# ------------------------------------------------------------------------------ progress
def write_progress(store: JobStore, job_id: str, owner: str, study: Any, n_trials: int,
                   search_spec: SearchSpec) -> None:
    """The trial table (rebuilt from the study, so concurrent writers never lose a trial)."""
    from trainer import search as opt

    trials = opt.summaries(study)
    done = sum(1 for t in trials if t["state"] in ("complete", "pruned", "failed"))
    progress = {
        "stage": "search", "method": search_spec.method, "trials_total": n_trials, "trials_done": done,
        "fraction": min(1.0, done / max(n_trials, 1)), "epoch": sum(t["epochs"] for t in trials),
        "epochs": n_trials * search_spec.max_epochs, "eta_s": None,
        "trials": trials, "best_trial": best_of(trials),
    }
    store.record_progress(job_id, owner, progress)


# ------------------------------------------------------------------------------ finalize
def _fail_orphans(study: Any, reason: str) -> None:
    """Fail every trial still ``running`` when a search is re-claimed.

    The search is re-claimed only after its lease ran out, i.e. no trial task renewed it for a whole
    lease: whatever the study still shows as running has no live worker.
    """
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("trial %d (%s) failed: %s", t.number, t.user_attrs.get("worker", "unknown worker"), reason)
        _fail(study, t, reason)


def _fail(study: Any, frozen: Any, reason: str) -> None:
    from optuna.trial import TrialState

    study._storage.set_trial_user_attr(frozen._trial_id, "error", reason)  # noqa: SLF001 - no public API
    study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)


def _fail_dead_local(study: Any) -> None:
    """On one machine: fail running trials whose worker process no longer exists."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        name, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            dead.append(t)
    for t in dead:
        log.warning("trial %d: its worker (pid %s) died; marked failed", t.number, t.user_attrs.get("worker"))
        _fail(study, t, "its worker died")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def maybe_finalize(job_id: str, settings: Settings) -> str:
    """If the search is over (all slots finished, or cancelled with nothing running), end it once."""
    from trainer import search as opt

    store = JobStore(settings.resolved_database_url)
    owner = search_owner(job_id)
    job = store.get(job_id)
    if job.state != "running" or job.lease_owner != owner:
        return "not-ours"
    _, search_spec = split_spec(job)
    study = opt.load_study(settings, job_id, search_spec)
    if not opt.uses_rdb(settings):
        _fail_dead_local(study)
    n_trials = int(study.user_attrs["n_trials"])
    all_done = len(opt.finished_slots(study)) >= n_trials
    if not (all_done or (job.cancel_requested and not opt.running_trials(study))):
        return "running"
    finalizer = owner_id()
    if not store.hand_over(job_id, owner, finalizer, settings.lease_seconds):
        return "not-ours"  # another task is finalizing
    with Heartbeat(store, job_id, finalizer, settings.lease_seconds, _deadline(job, settings)) as beat:
        state, result, error = _final_outcome(job, settings, study, n_trials, search_spec, beat)
    if store.finish(job_id, finalizer, state, result=result, error=error):
        log.info("search %s: %s", job_id, state if error is None else f"{state}: {error}")
        shutil.rmtree(work_folder(settings, job_id), ignore_errors=True)
        opt.delete_study(settings, job_id)
    return state


def _final_outcome(job: Job, settings: Settings, study: Any, n_trials: int, search_spec: SearchSpec,
                   beat: Heartbeat) -> tuple[str, dict[str, Any], str | None]:
    from trainer import search as opt

    trials = opt.summaries(study)
    best = best_of(trials)
    result: dict[str, Any] = {
        "method": search_spec.method, "trials_total": n_trials, "trials": trials, "best_trial": best,
        "epochs_run": sum(t["epochs"] for t in trials),
        "space": json.loads(study.user_attrs["space"]), "auto_lr": study.user_attrs.get("auto_lr"),
    }
    if job.cancel_requested:
        return "cancelled", result, "cancelled on request"
    if best is None:
        first = next((t.get("error") for t in trials if t.get("error")), None)
        error = f"no trial completed ({len(trials)} run)" + (f"; first error: {first}" if first else "")
        return "failed", result, error
    try:
        published = _publish_best(job, settings, best, search_spec)
    except Exception as exc:  # noqa: BLE001 - the search ends with the reason
        log.exception("search %s: publishing the best trial failed", job.id)
        return "failed", result, f"publishing trial {best['number']} failed: {type(exc).__name__}: {exc}"
    if beat.should_stop():
        return "cancelled", result, "cancelled on request"
    return "succeeded", {**result, **published}, None


def _publish_best(job: Job, settings: Settings, best: dict[str, Any], search_spec: SearchSpec) -> dict[str, Any]:
    """The best trial's saved model -> ONNX, report, registry, promotion gate (as a single job)."""
    import torch

    from dataset_store import DatasetStore
    from models import Registry
    from trainer.promotion import publish_with_gate

    path = work_folder(settings, job.id) / f"trial-{best['number']}.pt"
    result = torch.load(path, map_location="cpu", weights_only=False)
    dataset = DatasetStore(settings.datasets_dir).get(job.dataset_id)
    spec = result.spec.model_dump(mode="json") if hasattr(result.spec, "model_dump") else result.spec
    lineage = {
        "kind": "search", "job_id": job.id, "dataset_id": job.dataset_id, "base": spec.get("base"),
        "spec": spec, "search": {**search_spec.model_dump(mode="json"), "best_trial": best["number"],
                                 "params": best["params"]},
    }
    return publish_with_gate(result, Registry(settings.models_dir), job.model, dataset, lineage, settings,
                             replace_labels=bool(job.spec.get("replace_labels")))
