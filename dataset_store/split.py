"""Stratified, seeded train/val/test split that keeps every duplicate group on one side.

Small classes get a larger validation share: a class's val count is raised towards
``min_val`` (core/weak_validation.MIN_PER_CLASS by default), but never past ``MAX_RAISED_SHARE``
of the class, so training keeps most of its images. :func:`split_reason` says what was done.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence

MAX_RAISED_SHARE = 0.3  # raising val for a small class stops at this share of the class


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def targets(n: int, val_fraction: float, test_fraction: float, min_val: int = 0) -> tuple[int, int]:
    """(val, test) image counts for a class of ``n``: at least one val image, test only when it fits,
    val raised towards ``min_val`` up to MAX_RAISED_SHARE of the class."""
    if n < 2 or val_fraction <= 0:
        return 0, 0
    n_val = max(1, _half_up(n * val_fraction))
    if min_val > n_val:
        n_val = max(n_val, min(min_val, math.floor(n * MAX_RAISED_SHARE)))
    n_test = _half_up(n * test_fraction) if n * test_fraction >= 1 else 0
    n_test = max(0, min(n_test, n - n_val - 1))  # always leave training images
    n_val = min(n_val, n - 1)
    return n_val, n_test


def make_split(labels: Sequence[str], units: Sequence[Sequence[int]], fractions: tuple[float, float, float],
               seed: int, min_val: int = 0) -> list[str]:
    """Return a split name per item. ``units`` partition the items; a unit never straddles splits.

    Each unit goes with the class of its first item; within a class, units are shuffled with a
    seed derived from ``seed`` and the class name, so adding a class does not reshuffle the others.
    """
    total = sum(fractions) or 1.0
    fv, ft = fractions[1] / total, fractions[2] / total
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for unit in sorted((sorted(u) for u in units), key=lambda u: u[0]):
        by_class[labels[unit[0]]].append(unit)
    split = ["train"] * len(labels)
    for label, class_units in by_class.items():
        rng = random.Random(f"{seed}:{label}")
        rng.shuffle(class_units)
        for name, unit in _assign(class_units, fv, ft, min_val):
            for i in unit:
                split[i] = name
    return split


def split_reason(class_sizes: Mapping[str, int], val_fraction: float, test_fraction: float, min_val: int,
                 chosen: bool) -> str:
    """What the made split does and why, for the dataset report."""
    who = "as asked" if chosen else "by default"
    text = f"made split: val {val_fraction:.0%}, test {test_fraction:.0%} of each class ({who})"
    raised = {c: targets(n, val_fraction, test_fraction, min_val)[0] for c, n in class_sizes.items()
              if targets(n, val_fraction, test_fraction, min_val)[0] > targets(n, val_fraction, test_fraction)[0]}
    if not raised:
        return text
    shown = ", ".join(f"{c} {n}" for c, n in sorted(raised.items())[:5]) + (" ..." if len(raised) > 5 else "")
    return (f"{text}; {len(raised)} small class(es) get more val images (towards {min_val} a class, at most "
            f"{MAX_RAISED_SHARE:.0%} of the class: {shown}) so that the stage, the epoch and the temperature "
            f"are not chosen on a handful of photos")


def _assign(units: list[list[int]], fv: float, ft: float, min_val: int) -> list[tuple[str, list[int]]]:
    n = sum(len(u) for u in units)
    n_val, n_test = targets(n, fv, ft, min_val)
    got = {"val": 0, "test": 0}
    placed: list[tuple[str, list[int]]] = []
    for unit in units:
        name = "train"
        if got["val"] + len(unit) <= n_val:
            name = "val"
        elif got["test"] + len(unit) <= n_test:
            name = "test"
        got[name] = got.get(name, 0) + len(unit)
        placed.append((name, unit))
    if n_val and not got["val"]:
        # Every unit was bigger than the val share: hold out the smallest training unit anyway,
        # as long as some training images stay.
        train = [p for p in placed if p[0] == "train"]
        if len(train) > 1:
            smallest = min(train, key=lambda p: len(p[1]))
            placed[placed.index(smallest)] = ("val", smallest[1])
    return placed
