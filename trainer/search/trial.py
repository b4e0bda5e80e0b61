"""One trial of a search, in whichever worker took its message.

The task runs one Optuna trial (``study.optimize(n_trials=1)``: heartbeats on RDB storage), renews
the job's lease while it trains (so the cancel flag reaches it within a batch), reports every
epoch's validation accuracy to the pruner, and records the trial table in the job's progress. A
failing trial is recorded as failed and still counts. The best trial's model so far is kept on
disk for the finalizer.

Optuna, torch and the engine are imported inside the functions that use them: a worker process
starts (and reconciles) without paying for them; its first search job loads them.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from core.fsutil import atomic_write
from core.searchspec import SearchSpec
from core.settings import Settings, get_settings
from jobs import JobStore
from models import registry_for
from trainer.lease import ClaimedJob
from trainer.search.finalize import maybe_finalize
from trainer.search.job import QUEUE_GRACE_S, search_owner, split_spec, trial_spec, write_progress

if TYPE_CHECKING:
    import optuna

    from trainer.run.engine import TrainingResult

log = logging.getLogger(__name__)


def run_trial(job_id: str, slot: int, settings: Settings | None = None) -> str:
    """Run one trial of the search in this worker; finalize the search if it was the last."""
    from trainer.search import optuna_study

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
    study = optuna_study.load_study(settings, job_id, search_spec, slot)
    if slot in optuna_study.started_slots(study):
        log.info("search %s slot %d: already run (duplicate delivery); skipped", job_id, slot)
        return "skipped"
    n_trials = int(study.user_attrs["n_trials"])
    # Every task of the search shares its owner: this one joins the lease the search task claimed.
    with ClaimedJob(settings, store, job, owner) as held:
        runner = TrialRunner(held, study, slot, base_spec, search_spec, n_trials)
        study.optimize(runner, n_trials=1, catch=(Exception,))
    write_progress(store, job_id, study, n_trials, search_spec)
    state = maybe_finalize(job_id, settings)
    if state == "running" and len(optuna_study.started_slots(study)) < n_trials:
        # Trials still queued may wait behind other jobs: keep the search from looking abandoned.
        held.renew(max(settings.lease_seconds, QUEUE_GRACE_S))
    return state


class TrialRunner:
    """The Optuna objective of one slot: fine-tune with the suggested values, report every epoch."""

    def __init__(self, job: ClaimedJob, study: optuna.Study, slot: int, base_spec: dict[str, Any],
                 search_spec: SearchSpec, n_trials: int) -> None:
        self.job, self.study, self.slot = job, study, slot
        self.base_spec, self.search_spec, self.n_trials = base_spec, search_spec, n_trials

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from dataset_store import datasets_for
        from trainer.run.engine import Pruned, fine_tune
        from trainer.search import optuna_study

        settings = self.job.settings
        trial.set_user_attr("slot", self.slot)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        space, grid_space = optuna_study.study_space(self.study)
        params = optuna_study.suggest(trial, space, self.search_spec.method, grid_space)
        log.info("search %s trial %d (slot %d): %s", self.job.id, trial.number, self.slot, params)
        self._progress()
        try:
            dataset = datasets_for(settings).get_local(self.job.job.dataset_id)
            spec = trial_spec(self.base_spec, params, self.search_spec.max_epochs)
            reporter = optuna_study.EpochReporter(trial, spec.mode, self.search_spec.max_epochs, Pruned,
                                                  self._progress)
            result = fine_tune(
                spec, dataset, should_stop=self.job.should_stop,
                on_progress=reporter.on_progress, on_epoch_end=reporter.on_epoch_end,
                cache_dir=settings.pixel_cache_dir(dataset.id), registry=registry_for(settings),
            )
        except Pruned:
            raise optuna.TrialPruned() from None
        except Exception as exc:
            reason = "cancelled" if self.job.beat.cancelled.is_set() else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", reason[:500])
            raise
        value = optuna_study.score(float(result.metrics["val_accuracy"]), float(result.metrics["val_loss"]))
        trial.set_user_attr("final_val_accuracy", float(result.metrics["val_accuracy"]))
        trial.set_user_attr("spec", spec.model_dump(mode="json"))
        keep_if_best(settings, self.job.id, self.study, trial.number, value, result)
        return value

    def _progress(self) -> None:
        try:
            write_progress(self.job.store, self.job.id, self.study, self.n_trials, self.search_spec)
        except Exception as exc:  # noqa: BLE001 - progress is informative; never fail a trial for it
            log.warning("search %s: progress not recorded: %s", self.job.id, exc)


def keep_if_best(settings: Settings, job_id: str, study: optuna.Study, number: int, value: float,
                 result: TrainingResult) -> None:
    """Save this trial's trained model when it is the best so far; drop saved ones now beaten."""
    import torch
    from optuna.trial import TrialState

    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != number]
    best_other = max((float(t.value) for t in others if t.value is not None), default=None)
    if best_other is not None and value < best_other:
        return
    folder = settings.search_dir(job_id)
    atomic_write(folder / f"trial-{number}.pt", lambda fh: torch.save(result, fh))
    beaten = {t.number for t in others if t.value is not None and float(t.value) < value}
    for n in beaten:
        (folder / f"trial-{n}.pt").unlink(missing_ok=True)
