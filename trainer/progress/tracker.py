"""What a run tells its caller after every epoch: EpochMetrics, and the ETA from measured epoch times."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from trainer.progress.eta import CostBook
from trainer.progress.stage import StageCost
from trainer.progress.stage_cost import speed_factor

if TYPE_CHECKING:
    from trainer.run.stages import Stage


@dataclass
class EpochMetrics:
    epoch: int
    epochs: int
    stage: str
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float
    images_per_s: float
    elapsed_s: float
    eta_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def remaining_seconds(stages: list[Stage], done: int, epoch_seconds: dict[str, list[float]], current: str) -> float:
    """Remaining planned epochs times the mean epoch time of their kind (early stopping may cut it)."""
    remaining = 0.0
    counted = 0
    for s in stages:
        for _ in range(s.epochs):
            counted += 1
            if counted <= done:
                continue
            times = epoch_seconds.get(s.name) or epoch_seconds.get(current, [0.0])
            remaining += sum(times) / len(times)
    return remaining


# Priors, used only until this run (or an earlier job on the backbone, trainer/progress/eta.py) has measured
# the cost. They lean slow (a busy 2-core CPU: EfficientNet-Lite0 at 224 px measured 0.074 s per
# image there, the export 10 s): the fraction never moves back, so a prior that is too fast would
# leave it ahead of the clock for good, while one too slow is caught up once measured (the stages'
# own: trainer/progress/stage.py).
PRIOR_FORWARD_S = 0.08
PRIOR_DECODE_S = 0.01  # decoding and resizing one photo
PUBLISH_STAGES = ("export", "evaluate", "register")  # in the order the worker runs them
TRAINING_STAGES = ("probe", "finetune")


def progress_name(stage: str) -> str:
    """The progress name of an engine stage: the linear probe is "probe", gradual steps "finetune"."""
    return "probe" if stage == "linear" else "finetune" if stage.startswith("gradual") else stage


class ProgressTracker:
    """Progress that follows the clock: ``fraction`` is elapsed / (elapsed + expected time left).

    Stages are named (probe, finetune, calibrate, export, evaluate, register). The time left is
    *expected*: training stages count the epochs early stopping will likely leave
    (trainer/progress/eta.py), at measured batch and validation times; the other stages their measured cost
    from earlier jobs on the backbone or, failing that, from this run's measured forward pass.
    ``eta_max_s`` is the worst case (every planned epoch). ``fraction`` never moves back (a resumed
    run starts from the stored one, :meth:`restore`); ``eta_s`` is null only until the run's
    first timed batch. ``epoch``/``epochs`` count the epochs of the training stage ``epochs_stage``;
    ``batch``/``batches`` move within an epoch.
    """

    def __init__(self, emit: Callable[[dict[str, Any]], object] | None = None, min_interval_s: float = 1.0) -> None:
        self.stages: dict[str, StageCost] = {}
        self.emit, self.min_interval_s = emit, min_interval_s
        self.current = ""
        self.fraction = 0.0
        self.epoch = self.epochs = self.batch = self.batches = 0
        self.epochs_stage = ""
        self.last_emit = -math.inf
        self.started = time.perf_counter()
        self.elapsed_before = 0.0  # run time of earlier attempts (a resumed job)
        self.measured = False  # a batch (or feature batch) has been timed in this job
        self.forward_s: float | None = None  # seconds per image of the feature extraction (a resumed run keeps it)
        # The machine's speed, in one unit throughout: the yardstick forward pass timed when the model is
        # built (trainer/progress/unit_cost.py), moved since by how this run's later measurements of one
        # kind (feature batches, a fine-tuning epoch's validation) changed against their first.
        self.yardstick_s: float | None = None
        self.drift: dict[str, tuple[float, float]] = {}  # kind -> (first, latest) seconds per image
        self.drift_kind: str | None = None  # the kind measured most recently
        self.warmed: set[str] = set()  # kinds measured once (the first is left out)
        self.speed_ref: float | None = None  # the forward pass the one-off stages' expected costs assume
        self.head_step_s: float | None = None  # a probe step as timed before the probe (trainer/progress/unit_cost.py)
        self.book = CostBook(None)  # costs measured by earlier jobs (the worker and the CLI keep one on disk)
        self.snapshots: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.lock = threading.RLock()  # the ticker thread (:meth:`ticking`) pushes while the run updates

    # ------------------------------------------------------------------ plan
    def plan(self, stages: list[tuple[str, int]]) -> None:
        """Stages still to come as (name, units); an existing name keeps its measurements."""
        with self.lock:
            for name, units in stages:
                cost = self.stages.setdefault(name, StageCost(name, max(1, units)))
                if cost.state != "done":
                    cost.units = max(cost.done, max(1, units))
                    if cost.epochs:
                        cost.epochs = max(cost.epochs_done, math.ceil(cost.units / cost.batches))

    def plan_training(self, name: str, epochs: int, batches: int, patience: int) -> None:
        """A training stage: ``epochs`` of ``batches``; early stopping after ``patience`` bad epochs."""
        with self.lock:
            cost = self.stages.setdefault(name, StageCost(name, max(1, epochs * batches)))
            cost.epochs, cost.batches, cost.patience = epochs, max(1, batches), patience
            cost.units = max(cost.done, max(1, epochs * batches))

    def expect(self, name: str, seconds: float | None = None, batch_s: float | None = None,
               val_s: float | None = None, setup_s: float | None = None,
               steps: list[tuple[str, float]] | None = None) -> None:
        """Expected costs not yet measured in this run (from the cost book or measured rates);
        ``steps``: a one-off stage's steps in order with their expected seconds (``seconds``: their sum)."""
        cost = self.stages.setdefault(name, StageCost(name, 1))
        if steps is not None and cost.state == "pending":
            cost.steps, seconds = list(steps), sum(s for _, s in steps)
        if seconds is not None:
            cost.prior_s = seconds
        if batch_s is not None:
            cost.prior_batch_s = batch_s
        if val_s is not None:
            cost.prior_val_s = val_s
        if setup_s is not None:
            cost.setup_left_s = setup_s
            if cost.state == "running":  # expected from now: not counted down by the time already spent
                cost.last_tick = time.perf_counter()

    # ------------------------------------------------------------------ events
    def start(self, name: str, units: int = 1) -> None:
        with self.lock:
            for cost in self.stages.values():  # earlier stages are over (early stopping ends them early)
                if cost.state == "running":
                    self._close(cost)
            cost = self.stages.setdefault(name, StageCost(name, max(1, units)))
            cost.units, cost.state = max(cost.done + 1, units, 1), "running"
            cost.started_at = cost.last_tick = time.perf_counter()
            self.current = name
            self.push(force=True)

    def _close(self, cost: StageCost) -> None:
        cost.state, cost.units = "done", max(cost.done, 1)
        if cost.done == 0:
            cost.done = 1

    def add_setup(self, seconds: float) -> None:
        """One-off time of the current stage (decoding, feature extraction): counted, not per unit."""
        cost = self.stages[self.current]
        cost.setup_s += seconds
        cost.setup_left_s = 0.0
        cost.last_tick = time.perf_counter()
        self.push()

    def setup_progress(self, done: int, total: int, seconds: float) -> None:
        """One-off work under way in the current stage (images of a feature extraction): its time left."""
        if done <= 0:
            return
        cost = self.stages[self.current]
        cost.setup_left_s, cost.last_tick = seconds / done * max(0, total - done), time.perf_counter()
        self.measured = True
        self.push()

    def add_time(self, seconds: float) -> None:
        """Time that belongs to the epoch just done (its validation)."""
        cost = self.stages[self.current]
        cost.epoch_extra_s += seconds
        cost.extra_n += 1
        cost.last_tick = time.perf_counter()

    def step_done(self, name: str) -> None:
        """A step of the current one-off stage ended (trainer/progress/steps.py): its time since the last one."""
        with self.lock:
            cost = self.stages[self.current]
            now = time.perf_counter()
            cost.steps_done[name] = cost.steps_done.get(name, 0.0) + now - (cost.last_tick or now)
            cost.last_tick = now
            self.measured = True
            self.push()

    def unit_done(self, seconds: float, force: bool = False) -> None:
        cost = self.stages[self.current]
        if cost.steps:  # what ran after the last reported step
            self.step_done("rest")
        cost.done += 1
        cost.timed += 1
        cost.seconds += seconds
        cost.rate.add(seconds)
        cost.units = max(cost.units, cost.done)
        cost.setup_left_s = 0.0
        cost.last_tick = time.perf_counter()
        self.measured = True
        self.push(force)

    def epoch_end(self, improved: bool, bad: int) -> None:
        """A training epoch of the current stage ended (validation included): the early-stopping model's input."""
        cost = self.stages[self.current]
        cost.epochs_done += 1
        cost.done = max(cost.done, cost.epochs_done * cost.batches)
        cost.improved.append(improved)
        cost.bad = bad
        self.push()

    def set_epoch(self, stage: str, epoch: int, epochs: int, batch: int = 0, batches: int = 0) -> None:
        self.epochs_stage, self.epoch, self.epochs, self.batch, self.batches = stage, epoch, epochs, batch, batches

    def resume_at(self, done_stages: list[str], name: str, epochs_done: int) -> None:
        """Position from a checkpoint: ``done_stages`` are over, ``name`` has ``epochs_done`` epochs behind it."""
        for done in done_stages:
            cost = self.stages.get(done)
            if cost is not None:
                cost.done, cost.epochs_done, cost.state = cost.units, cost.epochs, "done"
        cost = self.stages.get(name)
        if cost is not None:
            cost.epochs_done = epochs_done
            cost.done = epochs_done * cost.batches
        self.push(force=True)

    def finish(self) -> None:
        for cost in self.stages.values():
            if cost.state != "done":
                self._close(cost)
        self.fraction = 1.0
        self.current = "done"
        self.push(force=True, final=True)

    # ------------------------------------------------------------------ reading
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def observe_speed(self, kind: str, seconds_per_image: float) -> None:
        """A forward pass measured again (``kind``: "features", "validation"): compared only with the
        first of its kind in this run after its warm-up (batch sizes differ between kinds, and so does
        the cost per image; a first validation ran 1.5x slower than the next on a quiet machine)."""
        if seconds_per_image <= 0:
            return
        if kind not in self.warmed:  # the first of a kind carries one-off warm-up: it is no baseline
            self.warmed.add(kind)
            return
        first = self.drift[kind][0] if kind in self.drift else seconds_per_image
        self.drift[kind], self.drift_kind = (first, seconds_per_image), kind

    def speed_now(self) -> float | None:
        """The yardstick forward pass as it would time now (None before it was timed)."""
        if self.yardstick_s is None:
            return None
        if self.drift_kind is None:
            return self.yardstick_s
        first, latest = self.drift[self.drift_kind]
        return self.yardstick_s * latest / first

    def speed(self) -> float:
        """How much slower the machine runs now than the one-off costs assume: the yardstick now against
        theirs, damped (trainer/progress/stage_cost.py's speed_factor; 1 until both are known). A shared
        machine changes speed within a job; the export to come slows down with it."""
        now = self.speed_now()
        return speed_factor(now, self.speed_ref) if now is not None and self.speed_ref else 1.0

    def remaining(self, expected: bool = True) -> float:
        now, speed = time.perf_counter(), self.speed()
        return sum(c.remaining_s(now, expected, speed) for c in self.stages.values())

    def eta_s(self) -> float | None:
        if self.current == "done":
            return 0.0
        return self.remaining() if self.measured else None  # before anything is timed: no guess shown

    def snapshot(self) -> dict[str, Any]:
        now = time.perf_counter()
        elapsed = self.elapsed()
        left = self.remaining()
        if self.current != "done" and elapsed + left > 0:
            self.fraction = max(self.fraction, min(0.999, elapsed / (elapsed + left)))  # never moves back
        eta = 0.0 if self.current == "done" else left if self.measured else None  # eta_s(), at the same instant
        return {
            "stage": self.current, "fraction": round(self.fraction, 4),
            "eta_s": None if eta is None else round(eta, 1),
            "eta_max_s": None if eta is None else round(max(eta, self.remaining(expected=False)), 1),
            "epoch": self.epoch, "epochs": self.epochs, "epochs_stage": self.epochs_stage,
            "batch": self.batch, "batches": self.batches, "elapsed_s": round(elapsed, 3),
            "stages": [{"name": c.name, "state": c.state, "done": c.done, "units": c.units, "timed": c.timed,
                        "left_s": round(c.remaining_s(now, speed=self.speed()), 1),
                        "seconds": round(c.seconds, 3), "setup_s": round(c.setup_s, 3),
                        "epochs_done": c.epochs_done, "epoch_extra_s": round(c.epoch_extra_s, 3), "extra_n": c.extra_n}
                       for c in self.stages.values()],
            "notes": list(self.notes),
            "forward_s": self.forward_s,  # measured seconds per image of a forward pass (kept by a resumed run)
        }

    def restore(self, stored: dict[str, Any] | None) -> None:
        """Continue a job's stored progress: its fraction (never moves back), run time and measured speeds.

        Positions are not taken from it (the checkpoint says where the run resumes: :meth:`resume_at`).
        """
        with self.lock:
            if not stored:
                return
            self.fraction = max(self.fraction, float(stored.get("fraction") or 0.0))
            self.elapsed_before = float(stored.get("elapsed_s") or 0.0)
            self.forward_s = stored.get("forward_s") or self.forward_s
            for row in stored.get("stages") or []:
                cost = self.stages.setdefault(row["name"], StageCost(row["name"], max(1, int(row.get("units") or 1))))
                cost.timed, cost.seconds = int(row.get("timed") or 0), float(row.get("seconds") or 0.0)
                cost.epoch_extra_s, cost.extra_n = float(row.get("epoch_extra_s") or 0.0), int(row.get("extra_n") or 0)
            self.measured = any(c.timed for c in self.stages.values())

    def push(self, force: bool = False, final: bool = False) -> None:
        with self.lock:
            now = time.perf_counter()
            if not (force or final or now - self.last_emit >= self.min_interval_s):
                return
            self.last_emit = now
            snap = self.snapshot()
            self.snapshots.append(snap)
            if self.emit is not None:
                self.emit(snap)

    @contextmanager
    def ticking(self, interval_s: float = 1.0) -> Iterator[None]:
        """Push every ``interval_s`` from a thread while inside: between batches (a fine-tuning batch
        or the export can take many seconds) the stored fraction and ETA still follow the clock."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(interval_s):
                self.push()

        thread = threading.Thread(target=run, name="progress-ticker", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
