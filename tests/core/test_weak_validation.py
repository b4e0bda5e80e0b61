"""The weak-split rule and its advice agree: following the advice makes the split strong."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from core.weak_validation import (
    MAX_HALF_WIDTH,
    MIN_PER_CLASS,
    half_width,
    needed_total,
    split_strength,
    weak_split_warning,
    wilson_interval,
)


def test_wilson_interval_is_scipys_and_matches_known_values() -> None:
    lo, hi = wilson_interval(5, 8)
    assert abs(lo - 0.3057) < 1e-3 and abs(hi - 0.8632) < 1e-3
    assert wilson_interval(0, 10)[0] == 0.0 and abs(wilson_interval(10, 10)[1] - 1.0) < 1e-9
    assert wilson_interval(3, 0) == (0.0, 1.0)


def test_the_issues_case_ten_per_class_gets_advice_above_ten() -> None:
    # Four classes of 10: the old advice said "add at least 10 per class" to a split that had 10.
    warning = weak_split_warning("val", {c: 10 for c in "abcd"})
    assert warning is not None
    target = int(re.search(r"at least (\d+) val images", warning).group(1))  # type: ignore[union-attr]
    assert target > 10 and "worst case accuracy 0.50" in warning
    assert weak_split_warning("val", {c: target for c in "abcd"}) is None


def test_a_large_split_is_not_flagged_whatever_the_tolerance_was() -> None:
    # Under the old rule (tolerance 0.005) any split under 200 images was weak.
    assert weak_split_warning("evaluation", {"a": 60, "b": 60}, accuracy=0.9) is None
    assert weak_split_warning("val", {"a": 15, "b": 15}, accuracy=0.95) is None
    assert "a (3)" in (weak_split_warning("val", {"a": 3, "b": 12}) or "")


def test_the_bar_is_the_interval_width() -> None:
    for acc in (None, 0.6, 0.9, 0.99):
        n = needed_total(acc)
        p = 0.5 if acc is None else acc
        assert half_width(p, n) <= MAX_HALF_WIDTH < half_width(p, n - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=2, max_size=12),
       st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_following_the_advice_makes_the_split_strong(counts: list[int], accuracy: float | None) -> None:
    per_class = {f"c{i}": n for i, n in enumerate(counts)}
    strength = split_strength(per_class, accuracy)
    warning = weak_split_warning("val", per_class, accuracy)
    assert (warning is not None) == (strength.weak and sum(counts) > 0)
    if warning is None:
        return
    target = int(re.search(r"at least (\d+) val images", warning).group(1))  # type: ignore[union-attr]
    assert target >= MIN_PER_CLASS
    followed = {name: max(n, target) for name, n in per_class.items()}
    assert weak_split_warning("val", followed, accuracy) is None
