"""When a validation split is too small to tell models apart, and how sure an accuracy is.

Torch-free and shared: the dataset store warns at upload, the trainer warns in the job, and the
promotion gate says its comparison is weak and reports a Wilson interval on accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

MIN_PER_CLASS = 10  # fewer validation images of a class than this: accuracy moves in big steps
Z95 = 1.959964  # two-sided 95 %


def wilson_interval(correct: float, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound at small n and near 0 or 1)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def weak_split_warning(split: str, per_class: Mapping[str, int], tolerance: float | None = None) -> str | None:
    """A warning when ``split`` cannot tell close candidates apart, else None."""
    total = sum(per_class.values())
    if total == 0:
        return None
    small = sorted(name for name, n in per_class.items() if n < MIN_PER_CLASS)
    step = 1.0 / total
    reasons = []
    if small:
        shown = ", ".join(f"{name} ({per_class[name]})" for name in small[:5]) + (" ..." if len(small) > 5 else "")
        reasons.append(f"fewer than {MIN_PER_CLASS} images per class: {shown}")
    if tolerance is not None and step > tolerance:
        reasons.append(f"one image moves accuracy by {step:.3f}, more than the promotion tolerance {tolerance}")
    if not reasons:
        return None
    return (f"weak {split} split ({total} images): {'; '.join(reasons)}. Comparisons of models on it are weak; "
            f"add {split} images (at least {MIN_PER_CLASS} per class) for a decision that means something")
