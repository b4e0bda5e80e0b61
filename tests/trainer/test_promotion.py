"""The promotion rule on its own (the full gate runs in tests/integration with real models)."""

from __future__ import annotations

from trainer.promotion import decide


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
