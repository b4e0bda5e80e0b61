"""How much a stage's remaining work costs, from what this job measured most recently.

Two cost models the progress tracker (trainer/progress/tracker.py) applies per stage:

* :class:`RecentRate` - seconds per unit (a batch, a feature batch) over the stage's recent units
  (at least ``MIN_UNITS`` and ``MIN_SPAN_S`` seconds of them), the stage's first unit left out. Not
  the mean since the start: the first batches of a stage carry
  one-off warm-up (allocations, kernel selection, loader workers starting; a 2 ms step of the probe's
  head measured 0.1 s in its first batches, which made 60 epochs look like minutes), and a machine
  shared with other jobs changes speed while a stage runs; what the last batches cost is the best
  guess of what the next ones cost. The span keeps the rate of tiny units (a 5 ms head step, which a
  busy machine's scheduler stretches ten-fold now and then) from jumping with every one.
* :func:`steps_left` - a one-off stage made of named steps (the export: ONNX trace, checks, report,
  weights, registry copy). Each step's expected seconds come from an earlier job on the backbone
  (the cost book, trainer/progress/eta.py) or a prior split; once a step has run, the steps still to come are
  scaled by how this run's steps compared with their expectation (``pace``, damped: a loaded machine
  that made the trace four times as slow made the report slower too, but measured only about twice).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

MIN_UNITS, MIN_SPAN_S = 8, 5.0  # the rate is read off at least this many recent units and seconds
KEEP = 4096  # units kept (a span of tiny units needs many)
PACE_MIN, PACE_MAX = 0.5, 2.0  # how far this run's steps may move the expected ones
# The export's steps in the order they run (trainer/publish/export.py, trainer/publish/publisher.py) and each one's
# share of the export before one has been timed on the backbone: the mean of two 2-core CPUs'
# (EfficientNet-Lite0; a busy AVX2 EPYC: trace 24 s, check 4.5 s, report 2.4 s, the rest under 0.3 s;
# a quiet VNNI EPYC: trace 7.2 s, check 0.39 s, report 0.34 s, weights 0.017 s, the rest 0.04 s).
EXPORT_STEPS: tuple[tuple[str, float], ...] = (
    ("trace", 0.83), ("check", 0.095), ("report", 0.06), ("weights", 0.006), ("variants", 0.0), ("rest", 0.009))
# Before the export was ever timed on a backbone: EXPORT_PRIOR_S at a yardstick forward pass
# (trainer/progress/unit_cost.py) of EXPORT_PRIOR_FORWARD_S a photo, scaled by the square root of this
# run's against it (see speed_factor). Measured on a shared 2-core CPU, EfficientNet-Lite0: 11 s quiet,
# 31 s at 0.082 s a feature-extraction forward pass (load 7), 30 s at 0.18 s (load 10.5); 14-16 s at
# 0.028-0.046 (load 1-2). A feature-extraction image costs about 1.5 yardstick images.
EXPORT_PRIOR_S, EXPORT_PRIOR_FORWARD_S = 25.0, 0.055


def speed_factor(now_s: float, then_s: float) -> float:
    """How much longer a one-off stage takes now than when it was measured, from the forward pass
    measured now and then: the square root of their ratio, within [0.5, 2]. Not the ratio itself: the
    forward pass runs on every core and suffers most when others take them, while the export's trace is
    one thread of Python (a forward pass 2.2 times slower came with the same export time)."""
    if now_s <= 0 or then_s <= 0:
        return 1.0
    return min(PACE_MAX, max(PACE_MIN, math.sqrt(now_s / then_s)))


@dataclass
class RecentRate:
    """Seconds per unit over a stage's recent units (its first unit, the warm-up, left out
    once there is another)."""

    window: deque[float] = field(default_factory=lambda: deque(maxlen=KEEP))
    first: float | None = None  # the stage's first unit: used only until a second one is timed
    # How much longer the first unit runs than the ones after it (its warm-up), as an earlier job
    # measured it (trainer/progress/eta_plan.py); the first alone stands for first / first_ratio.
    first_ratio: float = 1.0

    def add(self, seconds: float) -> None:
        if self.first is None and not self.window:
            self.first = seconds
            return
        self.window.append(seconds)

    def per_unit(self) -> float | None:
        if not self.window:
            return None if self.first is None else self.first / self.first_ratio
        total, count = 0.0, 0
        for seconds in reversed(self.window):
            total, count = total + seconds, count + 1
            if count >= MIN_UNITS and total >= MIN_SPAN_S:
                break
        return total / count

    def warmup_ratio(self) -> float | None:
        """The first unit against the recent ones after it (None before both exist)."""
        recent = self.per_unit() if self.window else None
        return self.first / recent if self.first is not None and recent else None

    def __len__(self) -> int:
        return len(self.window) + (self.first is not None)


def pace(expected: list[tuple[str, float]], measured: dict[str, float]) -> float:
    """This run's steps so far against their expectation (1 before any step with an expectation ended)."""
    want = sum(s for name, s in expected if name in measured and s > 0)
    have = sum(measured[name] for name, s in expected if name in measured and s > 0)
    if want <= 0 or have <= 0:
        return 1.0
    return min(PACE_MAX, max(PACE_MIN, math.sqrt(have / want)))


def steps_left(expected: list[tuple[str, float]], measured: dict[str, float], running_s: float) -> float:
    """Seconds left of a stage of steps: the steps not yet ended at their expected cost times the
    run's pace, less the time the step under way has run (at most 90 % of its own expectation; past
    it, a tenth of the expectation, and a quarter of the overrun once that is larger: it ends soon,
    not never, and the estimate moves continuously; a quarter of the whole running time had made a
    trace 5 % over its expectation look 2 s from its end when it was 0.2 s away)."""
    factor = pace(expected, measured)
    left = [factor * s for name, s in expected if name not in measured]
    if not left:
        return 0.25 * running_s
    # The step under way: the first not yet ended that costs anything (zero-cost steps may never run).
    current = next((cost for cost in left if cost > 0), 0.0)
    rest = sum(left) - current
    under_way = max(current - running_s, 0.1 * current, 0.25 * (running_s - current))
    return rest + under_way
