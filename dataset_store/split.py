"""Stratified, seeded train/val/test split that keeps every duplicate group on one side."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def targets(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) image counts for a class of ``n``: at least one val image, test only when it fits."""
    if n < 2 or val_fraction <= 0:
        return 0, 0
    n_val = max(1, _half_up(n * val_fraction))
    n_test = _half_up(n * test_fraction) if n * test_fraction >= 1 else 0
    n_test = max(0, min(n_test, n - n_val - 1))  # always leave training images
    n_val = min(n_val, n - 1)
    return n_val, n_test


def make_split(labels: Sequence[str], units: Sequence[Sequence[int]], fractions: tuple[float, float, float],
               seed: int) -> list[str]:
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
        for name, unit in _assign(class_units, fv, ft):
            for i in unit:
                split[i] = name
    return split


def _assign(units: list[list[int]], fv: float, ft: float) -> list[tuple[str, list[int]]]:
    n = sum(len(u) for u in units)
    n_val, n_test = targets(n, fv, ft)
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
