"""The capture policy's decision, the store's caps (oldest unlabelled first, labelled never) and the plan
that turns labelled captures into dataset additions. Real SQLite, real files."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from core.datasets.schemas import Dataset, FileEntry
from feedback import CapturePolicy, FeedbackFull, FeedbackNotFound, FeedbackStore, should_capture
from feedback.dataset import plan
from feedback.store import PHOTOS_DIR, LabelInvalid


def photo(n: int, size: int = 100) -> bytes:
    return n.to_bytes(4, "big") * (size // 4)


def add(store: FeedbackStore, n: int, size: int = 100, **kw: object) -> str | None:
    data = photo(n, size)
    return store.add(data, hashlib.sha256(data).hexdigest(), "jpg", source="capture", version=1,
                     answer={"predictions": []}, **kw)  # type: ignore[arg-type]


def test_each_policy_decides_on_its_own_signal() -> None:
    assert not should_capture(CapturePolicy(), 0.1, True)  # off by default
    assert should_capture(CapturePolicy(policy="all"), 0.99, False)
    unknown = CapturePolicy(policy="unknown")
    assert should_capture(unknown, 0.99, True) and not should_capture(unknown, 0.1, False)
    unsure = CapturePolicy(policy="unsure", min_confidence=0.7)
    assert should_capture(unsure, 0.69, False) and not should_capture(unsure, 0.7, True)


def test_sampling_keeps_about_its_share() -> None:
    half = CapturePolicy(policy="all", sample_rate=0.5)
    rng = random.Random(1)
    kept = sum(should_capture(half, 0.9, False, rng) for _ in range(2000))
    assert 900 < kept < 1100
    assert not any(should_capture(CapturePolicy(policy="all", sample_rate=0.0), 0.9, False) for _ in range(50))


def test_policy_values_out_of_range_are_refused() -> None:
    for bad in ({"policy": "sometimes"}, {"sample_rate": 1.5}, {"min_confidence": -0.1}, {"max_items": 0},
                {"extra": 1}):
        with pytest.raises(ValueError):
            CapturePolicy.model_validate(bad)


def test_the_item_cap_drops_the_oldest_unlabelled_never_the_labelled(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    store.set_policy(CapturePolicy(policy="all", max_items=3))
    first, second, third = (add(store, n) for n in range(3))
    assert first and second and third
    store.label(first, "ants")  # the oldest, but labelled: it stays
    fourth = add(store, 3)
    assert fourth is not None
    ids = {c.id for c in store.page(None, 10, 0)[0]}
    assert ids == {first, third, fourth}  # second was the oldest unlabelled
    assert len(list((tmp_path / "m" / PHOTOS_DIR).iterdir())) == 3  # its photo went with it
    assert store.page("labeled", 10, 0)[1] == 1 and store.page("unlabeled", 10, 0)[1] == 2


def test_a_store_full_of_labelled_photos_skips_captures_and_refuses_corrections(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    store.set_policy(CapturePolicy(policy="all", max_items=2))
    for n in range(2):
        store.label(add(store, n) or "", "bees")
    assert add(store, 9) is None  # a capture is skipped, nothing half-written
    with pytest.raises(FeedbackFull, match="max_items"):
        add(store, 10, label="ants", labeled=True)
    assert len(list((tmp_path / "m" / PHOTOS_DIR).iterdir())) == 2
    assert store.page(None, 10, 0)[1] == 2


def test_the_byte_cap_and_a_lowered_cap_apply_at_once(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    store.set_policy(CapturePolicy(policy="all", max_bytes=2500))
    ids = [add(store, n, size=1000) for n in range(3)]  # the third pushes out the first
    assert [c.id for c in store.page(None, 10, 0)[0]] == ids[1:]
    store.set_policy(CapturePolicy(policy="all", max_items=1))
    assert [c.id for c in store.page(None, 10, 0)[0]] == ids[2:]


def test_labels_none_of_these_and_errors(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    cid = add(store, 1) or ""
    assert store.label(cid, "  new class ").label == "new class"
    negative = store.label(cid, None)
    assert negative.labeled and negative.label is None and negative.view("m")["none_of_these"] is True
    for bad in ("", "a/b", "x" * 101, "..", "tab\there"):
        with pytest.raises(LabelInvalid):
            store.label(cid, bad)
    with pytest.raises(FeedbackNotFound, match="GET /v1/models/m/feedback"):
        store.label("0" * 32, "ants")
    with pytest.raises(FeedbackNotFound):
        store.get("../../etc")


def test_paging_is_oldest_first_and_complete(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    ids = [add(store, n) for n in range(5)]
    pages = [store.page("unlabeled", 2, offset)[0] for offset in (0, 2, 4)]
    assert [c.id for p in pages for c in p] == ids


def test_plan_skips_what_the_parent_holds_and_keeps_negatives_aside(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "m")
    known, fresh, twice, neg = (add(store, n) or "" for n in range(4))
    again = add(store, 2) or ""  # the same photo captured twice
    parent_sha = store.get(known).sha256
    parent = Dataset(id="p" * 16, name="p", created_at="", classes=["ants"], split_source="made", counts={},
                     files=[FileEntry(path="images/test/ants/a.jpg", original="a.jpg", label="ants", split="test",
                                      sha256=parent_sha, size=1, width=1, height=1)])
    store.label(known, "ants")
    store.label(fresh, "bees")
    store.label(twice, "ants")
    store.label(again, "wasps")  # the later label of the same bytes wins
    store.label(neg, None)
    chosen = plan(parent, store.labelled())
    assert chosen.already_in_parent == 1  # the parent's test photo is not added to train
    assert sorted((c.id, c.label) for c in chosen.added) == sorted([(fresh, "bees"), (again, "wasps")])
    assert [c.id for c in chosen.negatives] == [neg]
