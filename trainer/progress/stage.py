"""One stage of a run as the progress tracker sees it: its plan, its position and what it cost so far.

The tracker (trainer/progress/tracker.py) keeps one per stage (probe, finetune, calibrate, export,
evaluate, register) and sums their time left; the cost models it applies per stage live in
trainer/progress/stage_cost.py (recent rates, steps), the expected epochs in trainer/progress/eta.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.progress.eta import expected_epochs_left, improve_probability
from trainer.progress.stage_cost import RecentRate, steps_left

# Priors of a stage's cost before it was measured (see trainer/progress/tracker.py for why they lean slow).
PRIOR_PROBE_BATCH_S = 0.02  # a step of the head on cached features
PLAN_UNITS = 2  # a stage's planned unit cost weighs as much as this many measured units (StageCost.unit_s)
PRIOR_STAGE_S = {"probe": 1.0, "finetune": 30.0, "calibrate": 2.0, "evaluate": 5.0, "export": 15.0,
                 "register": 1.0}


@dataclass
class StageCost:
    """One stage's plan, position and measured cost.

    Training stages count batches (``units`` = ``epochs`` x ``batches``); the others one unit.
    ``done`` is the position; ``timed``/``seconds`` the batches timed and their time (kept apart so a
    resumed run keeps its measured speed while its position comes from the checkpoint).
    """

    name: str
    units: int
    done: int = 0
    timed: int = 0
    seconds: float = 0.0
    setup_s: float = 0.0  # one-off time (decoding, feature extraction, LR range test)
    state: str = "pending"  # pending | running | done
    epochs: int = 0  # planned epochs (0: not a training stage)
    batches: int = 1  # batches per epoch
    epochs_done: int = 0
    epoch_extra_s: float = 0.0  # measured time of the epochs' validation, summed
    extra_n: int = 0  # epochs whose validation was timed
    patience: int = 0  # early stopping's; 0: the stage runs its epochs
    improved: list[bool] = field(default_factory=list)  # per epoch: did validation improve
    bad: int = 0  # epochs in a row without improvement
    prior_s: float | None = None  # expected seconds of a one-unit stage (cost book or rates)
    prior_batch_s: float | None = None  # expected seconds of a batch before one is timed
    prior_val_s: float = 0.0  # expected validation seconds per epoch before one is timed
    prior_epochs: float | None = None  # epochs earlier jobs' stage of this name ran before early stopping
    follows_speed: bool = False  # its expected cost scales with the machine's speed now (ProgressTracker.speed)
    setup_left_s: float = 0.0  # expected one-off work still to come (feature extraction)
    started_at: float | None = None  # perf_counter when it started running
    last_tick: float | None = None  # perf_counter of its last measured step (batch, feature batch, validation)
    rate: RecentRate = field(default_factory=RecentRate)  # recent seconds per unit (stage_cost.py)
    steps: list[tuple[str, float]] = field(default_factory=list)  # a one-off stage's steps: expected seconds
    steps_done: dict[str, float] = field(default_factory=dict)  # ... and the measured ones of those ended

    def measured_unit_s(self) -> float | None:
        """Seconds per unit as measured: the recent units of this run, else every unit timed (a resumed run's)."""
        return self.rate.per_unit() or (self.seconds / self.timed if self.timed else None)

    def unit_s(self) -> float | None:
        """Seconds per unit the ETA expects: the units measured in this run with the plan
        (``prior_batch_s``) counted as ``PLAN_UNITS`` more, so that one odd batch among a stage's first
        few does not swing it (a second fine-tuning batch ran 1.5x the later ones); the first unit alone
        carries the warm-up and only bounds the later ones from above."""
        measured = self.measured_unit_s()
        if measured is None or not self.prior_batch_s or not self.rate:
            return measured
        if not self.rate.window:
            return min(measured, self.prior_batch_s)
        n = len(self.rate.window)
        return (self.prior_batch_s * PLAN_UNITS + measured * n) / (PLAN_UNITS + n)

    def _epochs_left(self, expected: bool) -> float:
        left = max(0, self.epochs - self.epochs_done)
        if not expected or self.patience <= 0:
            return float(left)
        q = improve_probability(self.improved)
        model = expected_epochs_left(q, self.patience, self.bad, left)
        if self.prior_epochs is None:
            return model
        # Earlier jobs' stages ran about ``prior_epochs``: expect that many, but never fewer than the
        # epochs this one needs to stop (patience left), nor more than the run-length model says.
        return min(model, max(self.prior_epochs - self.epochs_done, float(self.patience - self.bad)))

    def remaining_s(self, now: float, expected: bool = True, speed: float = 1.0) -> float:
        """Seconds still to run: expected (early stopping modelled) or worst case (every planned epoch).
        ``speed``: how much slower the machine runs now than when the one-off costs were measured."""
        if self.state == "done":
            return 0.0
        if self.epochs == 0:
            scale = speed if self.follows_speed else 1.0
            prior = scale * (self.prior_s if self.prior_s is not None else PRIOR_STAGE_S.get(self.name, 1.0))
            running = now - self.started_at if self.state == "running" and self.started_at is not None else 0.0
            if self.steps and self.state == "running":  # the steps ended so far set the pace of the rest
                since = now - self.last_tick if self.last_tick is not None else running
                return steps_left([(n, scale * s) for n, s in self.steps], self.steps_done, since)
            # Near or past its estimate: a quarter of its time so far (it ends soon, not never).
            return max(prior - running, 0.25 * running)
        batch_s = self.unit_s() or self.prior_batch_s or PRIOR_PROBE_BATCH_S
        val_s = self.epoch_extra_s / self.extra_n if self.extra_n else self.prior_val_s
        epochs = self._epochs_left(expected)
        partial = max(0, self.done - self.epochs_done * self.batches)  # batches of the epoch under way
        # Before its first batch: the warm-up that batch will carry (first_ratio batches in one).
        warm_up = (self.rate.first_ratio - 1.0) * batch_s if not self.rate and epochs > 0 else 0.0
        total = self.setup_left_s + warm_up + max(0.0, epochs * self.batches - partial) * batch_s + epochs * val_s
        if self.state != "running" or self.last_tick is None:
            return total
        # The step under way since the last tick (a batch, a validation, feature extraction) counts
        # down with the clock, up to most of what it is expected to take.
        step = self.setup_left_s if self.setup_left_s > 0 else max(batch_s + warm_up, val_s)
        return max(0.0, total - min(now - self.last_tick, 0.9 * step))
