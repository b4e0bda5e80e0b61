"""What every task of one search shares: the lease owner, the spec's halves, a trial's spec, the trial table.

Optuna, torch and the engine are imported inside the functions that use them: a worker process
starts (and reconciles) without paying for them; its first search job loads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.jobspec import JOB_KEYS, TrainSpec
from core.searchspec import SearchSpec, best_of
from jobs import Job, JobStore

if TYPE_CHECKING:
    import optuna

QUEUE_GRACE_S = 300.0  # lease the search holds while its trials wait in the queue to start


def search_owner(job_id: str) -> str:
    """The lease owner every task of one search shares (any of them may renew or write progress)."""
    return f"search:{job_id}"


def split_spec(job: Job) -> tuple[dict[str, Any], SearchSpec]:
    """The job's spec is a train spec plus ``search``: return both halves."""
    base = job.spec.model_dump(mode="json", exclude_unset=True, exclude=set(JOB_KEYS))
    return base, SearchSpec.model_validate(job.spec.search)


def trial_spec(base_spec: dict[str, Any], params: dict[str, Any], max_epochs: int) -> TrainSpec:
    """A trial's spec: the job's hyper-parameters, the trial's values, the search's epoch budget.

    A search epoch is an epoch of the run's main stage: fine-tuning in ``finetune``/``gradual``/
    ``auto`` (the linear probe before it costs milliseconds), the probe itself in ``linear`` mode.
    """
    fields = {**base_spec, **params, "max_epochs": max_epochs}
    if fields.get("mode") == "linear":
        fields["probe_epochs"] = max_epochs
    return TrainSpec.model_validate(fields)


# Until the search is over (the best trial still to publish) the fraction stops short of 1.0.
BEFORE_END = 0.99
TRIAL_STATES = ("complete", "pruned", "failed", "running", "queued")


def search_progress(trials: list[dict[str, Any]], n_trials: int, max_epochs: int) -> dict[str, Any]:
    """Trial counts, fraction and ETA of a search from its trial table (trainer/optuna_study.summaries).

    ``trial_counts`` add up to ``n_trials`` (slots not started yet count as queued). The fraction
    counts a finished trial (complete, pruned, failed) as 1 and a running one by its search epochs
    done. ``eta_s`` is the search epochs still planned (a queued trial's ``max_epochs``, a running
    one's remainder; pruning may cut them) times the mean measured search epoch, shared by the
    trials running now; null until a search epoch has been measured.
    """
    counts = dict.fromkeys(TRIAL_STATES, 0)
    for t in trials:
        counts[t["state"] if t["state"] in counts else "running"] += 1
    counts["queued"] += max(0, n_trials - len(trials))
    finished = counts["complete"] + counts["pruned"] + counts["failed"]
    running = [t for t in trials if t["state"] == "running"]
    work = finished + sum(min(1.0, t["epochs"] / max_epochs) for t in running)
    timed = sum(int(t.get("timed_epochs") or 0) for t in trials)
    eta: float | None = None
    if timed:
        per_epoch = sum(float(t.get("seconds") or 0.0) for t in trials) / timed
        remaining = counts["queued"] * max_epochs + sum(max(0, max_epochs - t["epochs"]) for t in running)
        eta = round(remaining * per_epoch / max(1, len(running)), 1)
    return {
        "trials_total": n_trials, "trials_done": finished, "trial_counts": counts,
        "fraction": round(min(BEFORE_END, work / max(n_trials, 1)), 4), "eta_s": eta,
        "epoch": sum(t["epochs"] for t in trials), "epochs": n_trials * max_epochs, "epochs_stage": "search",
    }


def write_progress(store: JobStore, job_id: str, study: optuna.Study, n_trials: int,
                   search_spec: SearchSpec, owner: str | None = None, stage: str = "search") -> bool:
    """The trial table and counts (rebuilt from the study, so concurrent writers never lose a trial).

    ``stage`` is ``search`` while trials run; ``publish`` while the finalizer (``owner``) exports
    the best trial, and ``done`` (fraction 1.0), ``failed`` or ``cancelled`` at the end; past
    ``search`` the ETA is null (publishing is not measured) or 0.0 when done.
    """
    from trainer.search import optuna_study

    trials = optuna_study.summaries(study)
    progress = {"stage": stage, "method": search_spec.method,
                **search_progress(trials, n_trials, search_spec.max_epochs),
                "trials": trials, "best_trial": best_of(trials)}
    if stage == "done":
        progress.update(fraction=1.0, eta_s=0.0)
    elif stage != "search":
        progress["eta_s"] = None
    return store.record_progress(job_id, owner or search_owner(job_id), progress, monotone=True)
