"""The promotion rule on its own (the full gate runs in tests/integration with real models)."""

from __future__ import annotations

from trainer.publish.promotion import decide

BIG = {"ants": 200, "bees": 200}  # enough images that one image moves accuracy by 0.0025 < tolerance


def test_candidate_within_tolerance_of_active_is_promoted() -> None:
    assert decide(0.950, 0.953, 2, tolerance=0.005).promote
    assert decide(0.960, 0.953, 2, tolerance=0.005).promote
    worse = decide(0.940, 0.953, 2, tolerance=0.005)
    assert not worse.promote and "kept as candidate" in worse.reason


def test_first_version_must_beat_chance_by_a_margin() -> None:
    assert decide(0.60, None, 2, tolerance=0.005).promote  # needs >= 0.55 with 2 classes
    assert not decide(0.52, None, 2, tolerance=0.005).promote
    assert decide(0.12, None, 100, tolerance=0.005).promote  # chance 0.01 -> needs >= 0.109
    assert not decide(0.05, None, 100, tolerance=0.005).promote


def test_first_version_must_be_clearly_above_chance_and_says_how_sure() -> None:
    # The case: 5 of 8 right on four classes "beat chance"; its interval does not.
    few = decide(5 / 8, None, 4, tolerance=0.005, per_class={"a": 2, "b": 2, "c": 2, "d": 2})
    assert not few.promote and "not clearly above chance" in few.reason
    assert few.accuracy_ci is not None and few.accuracy_ci[0] < 0.325 < 5 / 8 < few.accuracy_ci[1]
    assert "95% interval" in few.reason and "weak comparison" in few.reason and few.warning
    sure = decide(0.80, None, 4, tolerance=0.005, per_class={"a": 100, "b": 100, "c": 100, "d": 100})
    assert sure.promote and sure.accuracy_ci is not None and sure.accuracy_ci[0] > 0.75
    assert "95% interval" in sure.reason and sure.warning is None and "weak" not in sure.reason


def test_a_small_split_makes_the_comparison_weak_and_the_reason_says_so() -> None:
    small = decide(0.95, 0.90, 2, tolerance=0.005, per_class={"ants": 8, "bees": 8})
    assert small.promote and "weak comparison" in small.reason and "fewer than 10 images per class" in small.reason
    # 20 a class: 10 per class is met, but at accuracy 0.70 the interval is wider than +-0.10.
    wide = decide(0.70, 0.65, 2, tolerance=0.005, per_class={"ants": 20, "bees": 20})
    assert "interval of an accuracy on it is +-0.1" in wide.reason and "at accuracy 0.70" in wide.reason
    # The tolerance no longer makes every split under 1/tolerance images weak: 40 at 0.95 is strong.
    assert decide(0.95, 0.90, 2, tolerance=0.005, per_class={"ants": 20, "bees": 20}).warning is None
    assert "weak" not in decide(0.95, 0.90, 2, tolerance=0.005, per_class=BIG).reason
