"""Optuna side of a hyper-parameter search: storage, study, samplers, pruner, space -> suggestions.

Every process that runs a trial rebuilds the same study object from the job's search spec (Optuna
keeps the trials in its storage, not the sampler or pruner), so trials run on any worker:

* storage: PostgreSQL configured -> Optuna's RDB storage with heartbeats (a dead worker's trial is
  marked failed by the next trial that starts); otherwise a journal file under
  ``<home>/work/optuna/<job_id>.log`` (Optuna advises against SQLite for parallel trials);
* grid: ``GridSampler`` over the space with each range cut into a few points (trial ``n`` takes grid
  point ``n``, so parallel trials never collide); random and ASHA: ``RandomSampler`` seeded per
  trial slot (two workers seeded alike would otherwise draw the same values);
* ASHA: ``SuccessiveHalvingPruner`` with ``min_resource=min_epochs`` (asynchronous successive halving:
  a trial continues past a rung only when it is in the top ``1/reduction_factor`` of the trials that
  reached that rung so far; ``effective_bootstrap_count`` trials must reach a rung before any passes it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from core.searchspec import AUTO_SPAN, Param, SearchSpec
from core.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 10  # RDB heartbeat; a trial silent for GRACE_S is failed by the next trial to start
GRACE_S = 60
STATE_NAMES = {
    TrialState.RUNNING: "running", TrialState.WAITING: "queued", TrialState.PRUNED: "pruned",
    TrialState.COMPLETE: "complete", TrialState.FAIL: "failed",
}


def study_name(job_id: str) -> str:
    return f"tuneserve-{job_id}"


def uses_rdb(settings: Settings) -> bool:
    url = settings.database_url
    return url is not None and url.startswith("postgresql")


def storage(settings: Settings, job_id: str) -> BaseStorage:
    """RDB storage with heartbeats on PostgreSQL, else a per-job journal file (one machine)."""
    # Every study goes through here: Optuna's per-trial INFO lines would drown the worker's log.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if uses_rdb(settings):
        return _rdb(str(settings.database_url))
    path = settings.optuna_journal(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


# One RDB storage (engine pool) per URL per process; public so that a test can drop them between schemas.
STORAGES: dict[str, RDBStorage] = {}


def _rdb(url: str) -> RDBStorage:
    """One RDB storage (engine pool) per URL per process."""
    if url not in STORAGES:
        # Heartbeats are how a dead worker's trial gets failed: chosen knowingly, "experimental" or not.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            STORAGES[url] = RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                   engine_kwargs={"pool_pre_ping": True})
    return STORAGES[url]


# ---------------------------------------------------------------------------- space
def resolve_space(space: dict[str, Param], auto_lr: float | None) -> dict[str, Param]:
    """Replace ``lr: auto`` by concrete bounds centred (geometrically) on the LR range test's pick."""
    out = {}
    for key, param in space.items():
        if param.auto:
            if auto_lr is None:
                raise ValueError("lr 'auto' needs the LR range test's result")
            low, high = auto_lr / AUTO_SPAN, min(auto_lr * AUTO_SPAN, 10.0)
            param = Param(distribution="loguniform", low=low, high=high, grid_points=param.grid_points)
        out[key] = param
    return out


def grid_points(param: Param, points: int) -> list[Any]:
    """A range cut into ``points`` values (log-spaced for loguniform); a choice's own values."""
    if param.distribution == "choice":
        return list(param.values or [])
    n = param.grid_points or points
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if n == 1 or low == high:
        values = [low if param.distribution == "uniform" else math.sqrt(low * high) if low > 0 else low]
    elif param.distribution == "loguniform":
        values = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
    else:
        values = [low + (high - low) * i / (n - 1) for i in range(n)]
    if param.distribution == "int":
        step = param.step or 1
        values = sorted({int(low + round((v - low) / step) * step) for v in values})
    else:
        values = [float(f"{v:.6g}") for v in values]
    return values


def grid(space: dict[str, Param], trials: int) -> dict[str, list[Any]]:
    """The smallest grid with at least ``trials`` points: each range gets the same number of points."""
    ranges = [k for k, p in space.items() if p.distribution != "choice" and p.grid_points is None]
    fixed = math.prod(len(grid_points(p, 1)) for k, p in space.items() if k not in ranges)
    points = 1
    if ranges:
        points = max(2, math.ceil((trials / max(fixed, 1)) ** (1 / len(ranges)) - 1e-9))
    return {key: grid_points(param, points) for key, param in space.items()}


def grid_size(search_space: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in search_space.values())


def suggest(trial: optuna.Trial, space: dict[str, Param], method: str,
            grid_space: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """Ask the trial for one value of every searched hyper-parameter."""
    params: dict[str, Any] = {}
    for key, p in space.items():
        if method == "grid" and grid_space is not None:
            params[key] = trial.suggest_categorical(key, grid_space[key])
        elif p.distribution == "choice":
            params[key] = trial.suggest_categorical(key, list(p.values or []))
        elif p.distribution == "int":
            params[key] = trial.suggest_int(key, int(p.low or 0), int(p.high or 0), step=p.step or 1)
        else:
            params[key] = trial.suggest_float(key, float(p.low or 0.0), float(p.high or 0.0),
                                              log=p.distribution == "loguniform")
    return params


# ---------------------------------------------------------------------------- study
def space_to_json(space: dict[str, Param]) -> str:
    return json.dumps({k: p.model_dump(mode="json", exclude_none=True) for k, p in space.items()},
                      sort_keys=True)


def space_from_json(text: str) -> dict[str, Param]:
    return {k: Param.model_validate(v) for k, v in json.loads(text).items()}


def sampler_for(search: SearchSpec, grid_space: dict[str, list[Any]] | None, slot: int) -> optuna.samplers.BaseSampler:
    if search.method == "grid":
        assert grid_space is not None
        return optuna.samplers.GridSampler(grid_space, seed=search.seed)
    # Distinct per slot: each process builds its own sampler, and equal seeds would draw equal values.
    return optuna.samplers.RandomSampler(seed=search.seed * 100_003 + slot)


def pruner_for(search: SearchSpec) -> optuna.pruners.BasePruner:
    if search.method == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=search.min_epochs, reduction_factor=search.reduction_factor,
            min_early_stopping_rate=0, bootstrap_count=search.effective_bootstrap_count(),
        )
    return optuna.pruners.NopPruner()


def create_study(settings: Settings, job_id: str, search: SearchSpec, space: dict[str, Param]) -> tuple[
        optuna.Study, int]:
    """Create (or find, on a re-run) the job's study; returns it and the number of trials to run.

    The resolved space and trial count are stored as study attributes, so every trial sees exactly
    what the search task decided (e.g. the learning rate range picked by the LR range test).
    """
    grid_space = grid(space, search.trials) if search.method == "grid" else None
    n_trials = min(search.trials, grid_size(grid_space)) if grid_space is not None else search.trials
    study = optuna.create_study(
        storage=storage(settings, job_id), study_name=study_name(job_id), direction="maximize",
        sampler=sampler_for(search, grid_space, 0), pruner=pruner_for(search), load_if_exists=True,
    )
    if "space" not in study.user_attrs:
        study.set_user_attr("space", space_to_json(space))
        study.set_user_attr("grid", json.dumps(grid_space) if grid_space is not None else None)
        study.set_user_attr("n_trials", n_trials)
    return study, int(study.user_attrs["n_trials"])


def load_study(settings: Settings, job_id: str, search: SearchSpec, slot: int = 0) -> optuna.Study:
    grid_text = optuna.load_study(study_name=study_name(job_id), storage=storage(settings, job_id)).user_attrs.get(
        "grid")
    grid_space = json.loads(grid_text) if grid_text else None
    return optuna.load_study(
        study_name=study_name(job_id), storage=storage(settings, job_id),
        sampler=sampler_for(search, grid_space, slot), pruner=pruner_for(search),
    )


def study_space(study: optuna.Study) -> tuple[dict[str, Param], dict[str, list[Any]] | None]:
    grid_text = study.user_attrs.get("grid")
    return space_from_json(study.user_attrs["space"]), (json.loads(grid_text) if grid_text else None)


def delete_study(settings: Settings, job_id: str) -> None:
    """Drop the study once the search is over (its summary lives in the job's result)."""
    if uses_rdb(settings):
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=study_name(job_id), storage=storage(settings, job_id))
    else:
        settings.optuna_journal(job_id).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- reporting
TIE_BREAK = 1e-4  # validation loss weight in the score: far below one image of accuracy


def score(val_accuracy: float, val_loss: float) -> float:
    """What the pruner and the sampler compare: accuracy, ties broken by the lower validation loss.

    On a small validation set many trials tie on accuracy; successive halving promotes every tied
    trial, so without the tie-break it would prune little.
    """
    loss = val_loss if math.isfinite(val_loss) else 10.0
    return float(val_accuracy) - TIE_BREAK * min(max(loss, 0.0), 10.0)


class EpochReporter:
    """``on_progress`` + ``on_epoch_end`` for ``fine_tune``: report each search epoch, prune (ASHA).

    A search epoch is an epoch of the run's main stage; the linear probe that initialises the head
    before fine-tuning is skipped (it costs milliseconds). The last epoch never prunes: the trial is
    complete by then. Each search epoch's wall time (from the previous one, or from the trial's
    start: loading, the probe) is kept in ``epoch_s``: the search's ETA is made of these.
    """

    def __init__(self, trial: optuna.Trial, mode: str, max_epochs: int, pruned: type[Exception],
                 after_report: Any = None) -> None:
        self.trial, self.mode, self.max_epochs, self.pruned = trial, mode, max_epochs, pruned
        self.after_report = after_report
        self.stage, self.val_loss, self.steps = "", math.inf, 0
        self.accuracies: list[float] = []
        self.seconds: list[float] = []
        self.last = time.perf_counter()

    def on_progress(self, metrics: Any) -> None:  # called just before on_epoch_end
        self.stage, self.val_loss = str(metrics.stage), float(metrics.val_loss)

    def on_epoch_end(self, _epoch: int, val_accuracy: float) -> None:
        if self.stage == "linear" and self.mode != "linear":
            return
        self.steps += 1
        now = time.perf_counter()
        self.seconds.append(round(now - self.last, 3))
        self.last = now
        self.accuracies.append(float(val_accuracy))
        self.trial.set_user_attr("val_accuracy", self.accuracies)
        self.trial.set_user_attr("epoch_s", self.seconds)
        self.trial.report(score(val_accuracy, self.val_loss), self.steps)
        if self.after_report is not None:
            self.after_report()
        if self.steps < self.max_epochs and self.trial.should_prune():
            log.info("trial %d pruned after epoch %d (val accuracy %.4f)", self.trial.number, self.steps,
                     val_accuracy)
            raise self.pruned(f"pruned after epoch {self.steps}")


# ---------------------------------------------------------------------------- summaries
def summarize(trial: FrozenTrial) -> dict[str, Any]:
    """What ``GET /v1/jobs/{id}`` shows of one trial (``value``: the score of its final model;
    ``seconds``: the measured wall time of its search epochs)."""
    accuracies = [float(v) for v in trial.user_attrs.get("val_accuracy", [])]
    seconds = [float(v) for v in trial.user_attrs.get("epoch_s", [])]
    out: dict[str, Any] = {
        "number": trial.number,
        "params": dict(trial.params),
        "state": STATE_NAMES.get(trial.state, trial.state.name.lower()),
        "epochs": len(trial.intermediate_values),
        "best_val_accuracy": max(accuracies) if accuracies else None,
        "value": trial.value,
        "seconds": round(sum(seconds), 3),
        "timed_epochs": len(seconds),
    }
    if "error" in trial.user_attrs:
        out["error"] = trial.user_attrs["error"]
    return out


def summaries(study: optuna.Study) -> list[dict[str, Any]]:
    return [summarize(t) for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]


def finished_slots(study: optuna.Study) -> set[int]:
    return {int(t.user_attrs["slot"]) for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and "slot" in t.user_attrs}


def started_slots(study: optuna.Study) -> set[int]:
    return {int(t.user_attrs["slot"]) for t in study.get_trials(deepcopy=False) if "slot" in t.user_attrs}


def running_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
