"""What a run tells its caller after every epoch: EpochMetrics, and the ETA from measured epoch times."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.stages import Stage


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


# Seconds per unit before a stage is measured, on a 2-core CPU (issue 16's run: export ~37 s): they
# only weight the fraction until the stage's own time is measured; the ETA never uses them.
PRIOR_UNIT_S = {"probe": 0.05, "finetune": 3.0, "calibrate": 0.5, "evaluate": 10.0, "export": 40.0,
                "register": 2.0}
PUBLISH_STAGES = ("export", "evaluate", "register")  # in the order the worker runs them


def progress_name(stage: str) -> str:
    """The progress name of an engine stage: the linear probe is "probe", gradual steps "finetune"."""
    return "probe" if stage == "linear" else "finetune" if stage.startswith("gradual") else stage


@dataclass
class StageCost:
    name: str
    units: int  # batches for training stages (epochs x batches), 1 for the others
    done: int = 0
    seconds: float = 0.0  # measured time of the units done
    setup_s: float = 0.0  # one-off time (decoding, feature extraction), not spread over units
    state: str = "pending"  # pending | running | done

    def unit_s(self) -> float | None:
        return self.seconds / self.done if self.done else None

    def remaining_s(self) -> float:
        measured = self.unit_s()
        return (self.units - self.done) * (measured if measured is not None else PRIOR_UNIT_S[self.name])


class ProgressTracker:
    """Stage-weighted, monotone progress with an ETA from measured unit times.

    Stages are named (probe, finetune, calibrate, evaluate, export, register) and weighted by their
    cost: measured seconds per unit once a unit is done, a prior until then. ``epoch``/``epochs``
    count the epochs of the current training stage (``epochs_stage`` names it); ``batch``/``batches``
    move within an epoch. ``eta_s`` is null until the current stage has a measured unit.
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
        self.snapshots: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def plan(self, stages: list[tuple[str, int]]) -> None:
        """Stages still to come as (name, units); an existing name keeps its measurements."""
        for name, units in stages:
            cost = self.stages.setdefault(name, StageCost(name, max(1, units)))
            if cost.state != "done":
                cost.units = max(cost.done, max(1, units))

    def start(self, name: str, units: int = 1) -> None:
        for cost in self.stages.values():  # earlier stages are over (early stopping ends them early)
            if cost.state == "running":
                self._close(cost)
        cost = self.stages.setdefault(name, StageCost(name, max(1, units)))
        cost.units, cost.state = max(cost.done + 1, units, 1), "running"
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
        self.push()

    def add_time(self, seconds: float) -> None:
        """Time that belongs to the units done (e.g. each epoch's validation)."""
        self.stages[self.current].seconds += seconds

    def unit_done(self, seconds: float, force: bool = False) -> None:
        cost = self.stages[self.current]
        cost.done += 1
        cost.seconds += seconds
        cost.units = max(cost.units, cost.done)
        self.push(force)

    def set_epoch(self, stage: str, epoch: int, epochs: int, batch: int = 0, batches: int = 0) -> None:
        self.epochs_stage, self.epoch, self.epochs, self.batch, self.batches = stage, epoch, epochs, batch, batches

    def finish(self) -> None:
        for cost in self.stages.values():
            if cost.state != "done":
                self._close(cost)
        self.fraction = 1.0
        self.current = "done"
        self.push(force=True, final=True)

    def eta_s(self) -> float | None:
        cost = self.stages.get(self.current)
        if cost is None or cost.unit_s() is None:
            return None  # nothing measured for this stage yet: no guess
        return sum(c.remaining_s() for c in self.stages.values() if c.state != "done")

    def snapshot(self) -> dict[str, Any]:
        total = sum(c.setup_s + c.seconds + (c.remaining_s() if c.state != "done" else 0.0)
                    for c in self.stages.values())
        done = sum(c.setup_s + c.seconds for c in self.stages.values())
        if self.current != "done" and total > 0:
            self.fraction = max(self.fraction, min(0.999, done / total))  # never moves back
        return {
            "stage": self.current, "fraction": round(self.fraction, 4), "eta_s": self.eta_s(),
            "epoch": self.epoch, "epochs": self.epochs, "epochs_stage": self.epochs_stage,
            "batch": self.batch, "batches": self.batches,
            "elapsed_s": round(time.perf_counter() - self.started, 3),
            "stages": [{"name": c.name, "state": c.state, "done": c.done, "units": c.units,
                        "seconds": round(c.seconds, 3)} for c in self.stages.values()],
            "notes": list(self.notes),
        }

    def push(self, force: bool = False, final: bool = False) -> None:
        now = time.perf_counter()
        if not (force or final or now - self.last_emit >= self.min_interval_s):
            return
        self.last_emit = now
        snap = self.snapshot()
        self.snapshots.append(snap)
        if self.emit is not None:
            self.emit(snap)


class BatchClock:
    """The engine's per-batch ``check``: cancels, and times each batch into the progress tracker."""

    def __init__(self, tracker: ProgressTracker, check: Callable[[], None], stage: str, epoch: int, epochs: int,
                 batches: int) -> None:
        self.tracker, self.check = tracker, check  # check: replaceable (the engine adds the budget's)
        self.stage, self.epoch, self.epochs, self.batches = stage, epoch, epochs, batches
        self.last: float | None = None
        self.seconds: list[float] = []  # each batch's time
        self.batch = 0

    def tick(self) -> None:
        """A batch ended (the next starts now)."""
        now = time.perf_counter()
        if self.last is not None:
            self.seconds.append(now - self.last)
            self.batch += 1
            self.tracker.set_epoch(self.stage, self.epoch + 1, self.epochs, self.batch, self.batches)
            self.tracker.unit_done(now - self.last)
        self.last = now

    def __call__(self) -> None:
        self.tick()
        self.check()

    def mean_batch_s(self) -> float | None:
        """Mean time of this epoch's batches so far, the first left out once there are others (it
        carries one-off warm-up: allocations, kernel selection); None before one is done."""
        timed = self.seconds[1:] or self.seconds
        return sum(timed) / len(timed) if timed else None

    def since_last(self) -> float:
        return time.perf_counter() - self.last if self.last is not None else 0.0


def planned_units(stages: list[Stage], n_train: int, spec: Any) -> dict[str, int]:
    """Batches each progress stage plans to run (early stopping may end it sooner)."""
    flip = 2 if spec.augment in ("standard", "strong") else 1  # the probe trains on mirrored features too
    planned: dict[str, int] = {}
    for s in stages:
        per_epoch = math.ceil(n_train * (flip if s.on_features else 1) / spec.batch_size)
        planned[progress_name(s.name)] = planned.get(progress_name(s.name), 0) + s.epochs * max(1, per_epoch)
    return planned
