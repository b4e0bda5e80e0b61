"""Per-batch callbacks the engine runs: cancel checks that also time batches into the progress tracker."""

from __future__ import annotations

import time
from collections.abc import Callable

from trainer.progress.tracker import ProgressTracker


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


class FeatureClock:
    """The feature extraction's per-batch ``should_stop``: cancels, and times the images done so far."""

    def __init__(self, tracker: ProgressTracker, check: Callable[[], None], images: int, batch: int = 64) -> None:
        self.tracker, self.check, self.images, self.batch = tracker, check, images, batch
        self.first: float | None = None
        self.done = 0

    def __call__(self) -> None:
        self.check()
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            return
        self.done = min(self.images, self.done + self.batch)  # a batch ended (the next starts now)
        self.tracker.setup_progress(self.done, self.images, now - self.first)

    def forward_s(self, seconds: float) -> float | None:
        """Seconds per image of the whole extraction (None when it came from a cache: nothing timed)."""
        return seconds / self.images if self.first is not None and self.images else None
