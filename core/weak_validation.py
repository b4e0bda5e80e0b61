"""When a split is too small to tell models apart, how many images would do, and how sure an accuracy is.

Torch-free and shared: the dataset store warns at upload, the trainer warns in the job, and the
promotion gate says its comparison is weak and reports a Wilson interval on accuracy.

The rule (one rule, and the advice is computed from it, so following the advice always clears it):
a split is *strong* when every class has at least ``MIN_PER_CLASS`` images and the 95 % Wilson
interval of an accuracy measured on it is at most ``MAX_HALF_WIDTH`` either side. The interval's
width depends on the accuracy: where it is known (the gate, the end of a job) the rule uses it;
at upload it is not, and the rule takes the widest case, 0.5, and says so. The advice names the
per-class count that makes the same split strong under the same rule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.stats import binomtest

MIN_PER_CLASS = 10  # fewer images of a class than this: that class's accuracy moves in big steps
MAX_HALF_WIDTH = 0.10  # models closer than +-10 points cannot be told apart on a weaker split
UNKNOWN_ACCURACY = 0.5  # no accuracy yet (upload): the widest interval
CONFIDENCE = 0.95


def wilson_interval(correct: float, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``correct`` right out of ``total`` (scipy; sound at small n, near 0 or 1)."""
    if total <= 0:
        return 0.0, 1.0
    k = min(max(round(correct), 0), total)
    ci = binomtest(k, total).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def half_width(accuracy: float, total: int) -> float:
    lo, hi = wilson_interval(accuracy * total, total)
    return (hi - lo) / 2


@functools.lru_cache(maxsize=256)
def _needed_total(accuracy_pct: int) -> int:
    """Fewest images whose interval at ``accuracy_pct`` % is within MAX_HALF_WIDTH (the rule's bar)."""
    accuracy = accuracy_pct / 100
    n = 1
    while half_width(accuracy, n) > MAX_HALF_WIDTH:
        n += 1
    return n


def needed_total(accuracy: float | None) -> int:
    """Images the rule asks for at ``accuracy`` (rounded to a percent; None: the widest case)."""
    return _needed_total(round(100 * (UNKNOWN_ACCURACY if accuracy is None else accuracy)))


@dataclass(frozen=True)
class SplitStrength:
    """The rule's verdict on one split, and the count per class that would make it strong."""

    total: int
    small: tuple[str, ...]  # classes under MIN_PER_CLASS
    needed: int  # images in all the rule asks for
    per_class_target: int  # bring every class to at least this many and the split is strong
    half_width: float  # of the Wilson interval at the accuracy used
    accuracy: float  # the accuracy the interval was computed at
    assumed: bool  # True when the accuracy was not known (widest case)

    @property
    def weak(self) -> bool:
        return bool(self.small) or self.total < self.needed


def split_strength(per_class: Mapping[str, int], accuracy: float | None = None) -> SplitStrength:
    total = sum(per_class.values())
    needed = needed_total(accuracy)
    target = max(MIN_PER_CLASS, math.ceil(needed / max(len(per_class), 1)))
    used = UNKNOWN_ACCURACY if accuracy is None else round(accuracy, 2)
    return SplitStrength(total, tuple(sorted(n for n, c in per_class.items() if c < MIN_PER_CLASS)), needed,
                         target, half_width(used, total) if total else 1.0, used, accuracy is None)


def weak_split_warning(split: str, per_class: Mapping[str, int], accuracy: float | None = None) -> str | None:
    """A warning when ``split`` cannot tell close models apart (the rule above), else None."""
    s = split_strength(per_class, accuracy)
    if s.total == 0 or not s.weak:
        return None
    reasons = []
    if s.small:
        shown = ", ".join(f"{name} ({per_class[name]})" for name in s.small[:5]) + (" ..." if len(s.small) > 5 else "")
        reasons.append(f"fewer than {MIN_PER_CLASS} images per class: {shown}")
    if s.total < s.needed:
        at = f"at the worst case accuracy {s.accuracy:.2f}" if s.assumed else f"at accuracy {s.accuracy:.2f}"
        reasons.append(f"the 95% interval of an accuracy on it is +-{s.half_width:.3f} {at}, wider than "
                       f"+-{MAX_HALF_WIDTH} (models closer than that cannot be told apart)")
    return (f"weak {split} split ({s.total} images): {'; '.join(reasons)}. Bring every class to at least "
            f"{s.per_class_target} {split} images ({s.per_class_target * len(per_class)} in all) "
            f"for a comparison that means something")
