"""``time_budget_s``: fine-tuning shortened, or skipped for the probe's result, when it would not fit.

The budget counts the run's training time (setup, probe, fine-tuning; a resumed run counts what it
ran before). The probe always runs: it is cheap and it is the model kept when nothing else fits.
Before each fine-tuning stage, a budget already spent skips it. Otherwise the stage's cost is
estimated from its first timed batches (the progress tracker's mean batch time; validation is
taken as a forward pass, about a third of a training step per image): when its planned epochs do
not fit what is left, the stage is cut to the epochs that do (its LR schedule is not re-planned),
or, when not even its first epoch fits, stopped and the probe's weights kept. Every cut is
reported (``metrics.time_budget`` and a warning naming the stage, the estimate and the budget).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

ESTIMATE_BATCHES = 3  # timed batches behind an estimate (fewer when an epoch has fewer)
VAL_STEP_SHARE = 1 / 3  # a validation image costs about a third of a training image (forward only)


@dataclass
class Cut:
    stage: str
    action: str  # "skipped" | "shortened"
    planned_epochs: int
    kept_epochs: int
    estimated_s: float | None  # the stage's planned cost, as estimated (None: skipped before timing)
    remaining_s: float  # budget left when the estimate was made
    reason: str


class OverBudget(Exception):
    """A fine-tuning stage does not fit the budget at all: keep the best so far (the probe)."""

    def __init__(self, cut: Cut) -> None:
        super().__init__(cut.reason)
        self.cut = cut


def epochs_that_fit(remaining_s: float, spent_s: float, epoch_s: float, planned: int) -> int:
    """Whole epochs of ``epoch_s`` that fit in ``remaining_s`` plus what the first one already spent."""
    if epoch_s <= 0:
        return planned
    return max(0, min(planned, math.floor((remaining_s + spent_s) / epoch_s)))


class Budget:
    """The run's time budget; the engine asks it before each fine-tuning stage and after each batch."""

    def __init__(self, budget_s: float, elapsed: Callable[[], float]) -> None:
        self.budget_s, self.elapsed = budget_s, elapsed
        self.cuts: list[Cut] = []
        self.estimated: set[str] = set()

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def before_stage(self, stage: str, epochs: int) -> None:
        """Skip a fine-tuning stage when the budget is spent, or an earlier stage did not fit at all."""
        left = self.remaining()
        if any(c.action == "skipped" for c in self.cuts):
            why = "an earlier fine-tuning stage did not fit the time budget"
        elif left <= 0:
            why = f"the time budget ({self.budget_s:g} s) was spent before it started ({self.elapsed():.1f} s used)"
        else:
            return
        raise OverBudget(self._cut(Cut(stage, "skipped", epochs, 0, None, round(left, 3),
                                       f"{stage} skipped: {why}; the probe's result is kept")))

    def after_batch(self, stage: str, batches: int, done: int, batch_s: float | None, val_images: int,
                    batch_size: int, epochs: int) -> int | None:
        """Once per stage, after its first timed batches: the epochs that fit (None: all of them).

        Raises OverBudget when not even the current epoch fits.
        """
        if stage in self.estimated or batch_s is None or done < min(ESTIMATE_BATCHES, batches):
            return None
        self.estimated.add(stage)
        epoch_s = batch_s * (batches + VAL_STEP_SHARE * math.ceil(val_images / batch_size))
        left = self.remaining()
        fit = epochs_that_fit(left, batch_s * done, epoch_s, epochs)
        if fit >= epochs:
            return None
        estimate = round(epoch_s * epochs, 1)
        head = (f"{stage}'s {epochs} epoch(s) were estimated at {estimate} s from {done} timed batch(es) "
                f"({batch_s:.3f} s each), with {max(left, 0.0):.1f} s of the {self.budget_s:g} s budget left")
        if fit == 0:
            raise OverBudget(self._cut(Cut(stage, "skipped", epochs, 0, estimate, round(left, 3),
                                           f"{head}: not one epoch fits, so {stage} was stopped and the "
                                           "probe's result is kept")))
        self._cut(Cut(stage, "shortened", epochs, fit, estimate, round(left, 3),
                      f"{head}: shortened to {fit} epoch(s)"))
        return fit

    def _cut(self, cut: Cut) -> Cut:
        self.cuts.append(cut)
        return cut

    def report(self) -> dict[str, Any]:
        return {"time_budget_s": self.budget_s, "used_s": round(self.elapsed(), 3),
                "cuts": [asdict(c) for c in self.cuts]}

    def warnings(self) -> list[str]:
        return [f"time budget: {c.reason}" for c in self.cuts]
