"""The made split: stratified, seeded, small classes keep a val image, groups stay together."""

from __future__ import annotations

from collections import Counter

import pytest

from dataset_store.split import make_split, targets

FRACTIONS = (0.8, 0.1, 0.1)


@pytest.mark.parametrize(("n", "expected"), [(2, (1, 0)), (5, (1, 0)), (9, (1, 0)), (10, (1, 1)),
                                              (100, (10, 10)), (245, (25, 25))])
def test_targets(n: int, expected: tuple[int, int]) -> None:
    assert targets(n, 0.1, 0.1) == expected


def _singletons(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]


def test_stratified_and_seeded() -> None:
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 5
    split = make_split(labels, _singletons(len(labels)), FRACTIONS, seed=0)
    counts = Counter(zip(labels, split, strict=True))
    assert (counts["a", "train"], counts["a", "val"], counts["a", "test"]) == (80, 10, 10)
    assert (counts["b", "train"], counts["b", "val"], counts["b", "test"]) == (40, 5, 5)
    assert (counts["c", "train"], counts["c", "val"], counts["c", "test"]) == (4, 1, 0)  # too small for three
    assert make_split(labels, _singletons(len(labels)), FRACTIONS, seed=0) == split
    assert make_split(labels, _singletons(len(labels)), FRACTIONS, seed=1) != split


def test_groups_never_straddle_and_val_is_still_filled() -> None:
    labels = ["a"] * 30 + ["b"] * 30
    units = [[i, i + 1, i + 2] for i in range(0, 60, 3)]  # every image has two near-copies
    for seed in range(5):
        split = make_split(labels, units, FRACTIONS, seed=seed)
        for unit in units:
            assert len({split[i] for i in unit}) == 1
        per = Counter(zip(labels, split, strict=True))
        assert per["a", "val"] == per["b", "val"] == 3 and per["a", "test"] == 3


def test_big_group_cannot_starve_val() -> None:
    labels = ["a"] * 12
    units = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11]]  # each bigger than the val share of 1
    split = make_split(labels, units, FRACTIONS, seed=0)
    assert Counter(split) == {"train": 7, "val": 5}


@pytest.mark.parametrize(("n", "expected"), [(20, (6, 2)), (34, (10, 3)), (100, (10, 10)), (5, (1, 0)),
                                              (200, (20, 20))])
def test_small_classes_get_a_larger_val_share(n: int, expected: tuple[int, int]) -> None:
    # towards 10 val images, at most 30 % of the class; big classes keep their 10 %
    assert targets(n, 0.1, 0.1, min_val=10) == expected


def test_split_reason_names_the_raised_classes() -> None:
    from dataset_store.split import split_reason

    text = split_reason({"a": 20, "b": 500}, 0.1, 0.1, 10, chosen=False)
    assert "1 small class(es) get more val images" in text and "a 6" in text and "b " not in text
    assert split_reason({"b": 500}, 0.2, 0.0, 10, chosen=True) == \
        "made split: val 20%, test 0% of each class (as asked)"
