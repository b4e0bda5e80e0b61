"""The end of a search: fail trials without a live worker, and once nothing is left to run, end the job once.

After its trial each task checks, in the study, whether every slot is finished (or the job was
cancelled and nothing runs any more); the first to see it takes the job's lease over with one
conditional UPDATE (so exactly one finalizes) and publishes the best trial's model through the
same export, gate and promotion as a train job (trainer/pipeline.py).

Optuna, torch and the engine are imported inside the functions that use them: a worker process
starts (and reconciles) without paying for them; its first search job loads them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from typing import TYPE_CHECKING, Any

from core.searchspec import SearchSpec, best_of
from core.settings import Settings
from jobs import Job, JobStore
from trainer.lease import ClaimedJob, owner_id, take_over
from trainer.search.job import search_owner, split_spec, write_progress

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)


def maybe_finalize(job_id: str, settings: Settings) -> str:
    """If the search is over (all slots finished, or cancelled with nothing running), end it once."""
    from trainer.search import optuna_study

    store = JobStore(settings.resolved_database_url)
    owner = search_owner(job_id)
    job = store.get(job_id)
    if job.state != "running" or job.lease_owner != owner:
        return "not-ours"
    _, search_spec = split_spec(job)
    study = optuna_study.load_study(settings, job_id, search_spec)
    if not optuna_study.uses_rdb(settings):
        fail_dead_local(study)
    n_trials = int(study.user_attrs["n_trials"])
    all_done = len(optuna_study.finished_slots(study)) >= n_trials
    if not (all_done or (job.cancel_requested and not optuna_study.running_trials(study))):
        return "running"
    finalizer = take_over(settings, store, job, owner, owner_id())
    if finalizer is None:
        return "not-ours"  # another task is finalizing
    with finalizer:
        write_progress(store, job_id, study, n_trials, search_spec, finalizer.owner, "publish")
        state, result, error = _final_outcome(finalizer, study, n_trials, search_spec)
        write_progress(store, job_id, study, n_trials, search_spec, finalizer.owner,
                       "done" if state == "succeeded" else state)
    if finalizer.finish(state, result=result, error=error):
        log.info("search %s: %s", job_id, state if error is None else f"{state}: {error}")
        shutil.rmtree(settings.search_dir(job_id), ignore_errors=True)
        optuna_study.delete_study(settings, job_id)
    return state


def _final_outcome(job: ClaimedJob, study: optuna.Study, n_trials: int,
                   search_spec: SearchSpec) -> tuple[str, dict[str, Any], str | None]:
    from trainer.search import optuna_study

    trials = optuna_study.summaries(study)
    best = best_of(trials)
    result: dict[str, Any] = {
        "method": search_spec.method, "trials_total": n_trials, "trials": trials, "best_trial": best,
        "epochs_run": sum(t["epochs"] for t in trials),
        "space": json.loads(study.user_attrs["space"]), "auto_lr": study.user_attrs.get("auto_lr"),
    }
    if job.job.cancel_requested:
        return "cancelled", result, "cancelled on request"
    if best is None:
        first = next((t.get("error") for t in trials if t.get("error")), None)
        error = f"no trial completed ({len(trials)} run)" + (f"; first error: {first}" if first else "")
        return "failed", result, error
    try:
        published = _publish_best(job.job, job.settings, best, search_spec)
    except Exception as exc:  # the search ends with the reason
        log.exception("search %s: publishing the best trial failed", job.id)
        return "failed", result, f"publishing trial {best['number']} failed: {type(exc).__name__}: {exc}"
    if job.should_stop():
        return "cancelled", result, "cancelled on request"
    return "succeeded", {**result, **published}, None


def _publish_best(job: Job, settings: Settings, best: dict[str, Any], search_spec: SearchSpec) -> dict[str, Any]:
    """The best trial's saved model -> ONNX, report, registry, promotion gate (as a train job)."""
    import torch

    from dataset_store import datasets_for
    from models import registry_for
    from trainer.data.job_data import JobData
    from trainer.publish.publisher import Request, Trained, publish

    path = settings.search_dir(job.id) / f"trial-{best['number']}.pt"
    result = torch.load(path, map_location="cpu", weights_only=False)
    data = JobData(datasets_for(settings).get_local(job.dataset_id), settings.pixel_cache_dir(job.dataset_id))
    lineage = {"kind": "search", "search": {**search_spec.model_dump(mode="json"), "best_trial": best["number"],
                                            "params": best["params"]}}
    request = Request(job.model, "search", job_id=job.id, replace_labels=job.spec.replace_labels, lineage=lineage)
    return publish(Trained(result, data), registry_for(settings), request, settings)


# ------------------------------------------------------------------------------ trials without a worker
def fail_orphans(study: optuna.Study, reason: str) -> None:
    """Fail every trial still ``running`` when a search is re-claimed.

    The search is re-claimed only after its lease ran out, i.e. no trial task renewed it for a whole
    lease: whatever the study still shows as running has no live worker.
    """
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("trial %d (%s) failed: %s", t.number, t.user_attrs.get("worker", "unknown worker"), reason)
        _fail(study, t, reason)


def _fail(study: optuna.Study, frozen: FrozenTrial, reason: str) -> None:
    from optuna.trial import TrialState

    study._storage.set_trial_user_attr(frozen._trial_id, "error", reason)  # Optuna has no public API for this
    study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)


def fail_dead_local(study: optuna.Study) -> None:
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
