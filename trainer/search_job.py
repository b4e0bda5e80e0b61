"""What every task of one search shares: the lease owner, the spec's halves, a trial's spec, the trial table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.jobspec import TrainSpec, train_fields
from core.searchspec import SearchSpec, best_of
from jobs import Job, JobStore

if TYPE_CHECKING:
    import optuna

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


def trial_spec(base_spec: dict[str, Any], params: dict[str, Any], max_epochs: int) -> TrainSpec:
    """A trial's spec: the job's hyper-parameters, the trial's values, the search's epoch budget.

    A search epoch is an epoch of the run's main stage: fine-tuning in ``finetune``/``gradual``/
    ``auto`` (the linear probe before it costs milliseconds), the probe itself in ``linear`` mode.
    """
    fields = {**base_spec, **params, "max_epochs": max_epochs}
    if fields.get("mode") == "linear":
        fields["probe_epochs"] = max_epochs
    return TrainSpec.model_validate(fields)


def write_progress(store: JobStore, job_id: str, study: optuna.Study, n_trials: int,
                   search_spec: SearchSpec) -> None:
    """The trial table (rebuilt from the study, so concurrent writers never lose a trial)."""
    from trainer import optuna_study

    trials = optuna_study.summaries(study)
    done = sum(1 for t in trials if t["state"] in ("complete", "pruned", "failed"))
    progress = {
        "stage": "search", "method": search_spec.method, "trials_total": n_trials, "trials_done": done,
        "fraction": min(1.0, done / max(n_trials, 1)), "epoch": sum(t["epochs"] for t in trials),
        "epochs": n_trials * search_spec.max_epochs, "eta_s": None,
        "trials": trials, "best_trial": best_of(trials),
    }
    store.record_progress(job_id, search_owner(job_id), progress)
