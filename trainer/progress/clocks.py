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
    """The feature extraction's per-batch ``should_stop``: cancels, and times the images done so far.

    The rate is read off the recent batches, the first left out (it carries the warm-up) once there
    are others: on a shared machine the speed changes while the extraction runs. The time left is
    read at that rate with the plan's (``expected_s``, seconds per image before any was timed) counted
    as ``PLAN_IMAGES`` more images: single batches of one job varied 1.4-2.9 s where the extraction
    averaged 2.3 s, and the first two alone had made its time left jump from 16 s to 46 s and back.
    """

    RECENT = 4  # batches the time left is read off
    PLAN_IMAGES = 64  # the plan's rate weighs as much as this many measured images

    def __init__(self, tracker: ProgressTracker, check: Callable[[], None], passes: list[int],
                 batch: int = 64, on_rate: Callable[[], None] | None = None,
                 expected_s: float | None = None) -> None:
        """``passes``: the extraction's passes' sizes in order (train, mirrored train, val), so that a pass's
        last, partial batch counts its own images, not a full batch's (counted full, a 24-image batch read
        as a third of its time per image and made the extraction's last rate, and the forward pass the
        next job expects, 30 % too fast)."""
        self.tracker, self.check, self.batch = tracker, check, batch
        self.images = sum(passes)
        self.sizes = [min(batch, n - at) for n in passes for at in range(0, n, batch)]
        self.expected_s = expected_s
        self.on_rate = on_rate  # told when the machine's speed is measured anew (the stages to come follow it)
        self.marks: list[tuple[float, int]] = []  # (perf_counter, images done) at each batch boundary
        self.done = 0

    def __call__(self) -> None:
        self.check()
        now = time.perf_counter()
        if self.marks:  # a batch ended (the next starts now)
            ended = len(self.marks) - 1
            size = self.sizes[ended] if ended < len(self.sizes) else self.batch
            self.done = min(self.images, self.done + size)
        self.marks.append((now, self.done))
        rate = self.rate(recent=True)
        if rate is not None:
            if len(self.marks) > 2:  # past the warm-up: the machine's speed now (ProgressTracker.speed)
                self.tracker.observe_speed("features", rate)
                if self.on_rate is not None:
                    self.on_rate()
            self.tracker.setup_progress(self.done, self.images, self.expected_rate(rate) * self.done)

    def rate(self, recent: bool = False) -> float | None:
        """Seconds per image: over the batches after the first (the last ``RECENT`` when ``recent``), or
        the first alone while it is the only one; None before one ended."""
        if len(self.marks) < 2:
            return None
        start = max(1, len(self.marks) - 1 - self.RECENT) if recent else 1
        if len(self.marks) == 2:
            start = 0
        (t0, d0), (t1, d1) = self.marks[start], self.marks[-1]
        return (t1 - t0) / (d1 - d0) if d1 > d0 else None

    def expected_rate(self, measured: float) -> float:
        """Seconds per image for the images left: the recent ``measured`` rate, with the plan's counted
        as ``PLAN_IMAGES`` more images (its weight fades as the extraction measures more)."""
        if self.expected_s is None or self.expected_s <= 0:
            return measured
        timed = self.marks[-1][1] - self.marks[min(1, len(self.marks) - 2)][1]  # images after the first batch
        timed = max(timed, self.batch)  # the first batch alone still counts once
        return (self.expected_s * self.PLAN_IMAGES + measured * timed) / (self.PLAN_IMAGES + timed)

    def forward_s(self, seconds: float) -> float | None:
        """Seconds per image of the backbone's forward pass, measured after the first batch (None when
        the features came from a cache or fewer than two batches followed the first: too few to say)."""
        if len(self.marks) < 4:
            return None
        return self.rate()
