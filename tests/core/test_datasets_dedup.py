"""Duplicates: exact by sha256, near by dHash; the threshold is checked on real photos."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from core.datasets.schemas import IngestLimits
from dataset_store.dedup import duplicate_groups, exact_groups, near_pairs
from dataset_store.validate import check_file
from tests.core.datasets_kit import reencoded
from tests.photos import HYMENOPTERA

LIMIT = 40_000_000
DISTANCE = IngestLimits().near_duplicate_distance


def _hash(path: Path) -> int:
    result = check_file(str(path), LIMIT, 32)
    assert result.problem is None
    return result.dhash


def _bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_reencoded_and_resized_copies_match(tmp_path: Path) -> None:
    photos = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:12]
    for i, src in enumerate(photos):
        copy = tmp_path / f"copy{i}.jpg"
        copy.write_bytes(reencoded(src.read_bytes(), scale=0.5 + 0.04 * i, quality=55 + 3 * i))
        assert _bits(_hash(src), _hash(copy)) <= DISTANCE, src.name


def test_distinct_real_photos_do_not_match() -> None:
    photos = sorted((HYMENOPTERA / "val").glob("*/*.jpg"))[::2]  # 77 real photos, both classes
    hashes = [_hash(p) for p in photos]
    closest = min(_bits(a, b) for a, b in itertools.combinations(hashes, 2))
    assert closest > DISTANCE
    assert near_pairs(hashes, DISTANCE) == set()


def test_band_search_finds_exactly_what_brute_force_finds() -> None:
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(300)]
    for i in range(0, 60, 3):  # plant copies 0..8 bits away
        h = hashes[i]
        for bit in rng.sample(range(64), rng.randint(0, 8)):
            h ^= 1 << bit
        hashes.append(h)
    for distance in (0, 3, 5, 6):
        brute = {(i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
                 if _bits(hashes[i], hashes[j]) <= distance}
        assert near_pairs(hashes, distance) == brute
        assert distance == 0 or brute  # the planted copies are there to be found


def test_groups_split_exact_from_near() -> None:
    digests = ["a", "a", "b", "c", "d", "a"]
    hashes = [0b1111, 0b1111, 0b1110, 1 << 40 | 0b1111, (1 << 64) - 1, 0b1111]
    exact, near = duplicate_groups(digests, hashes, distance=2)
    assert exact_groups(digests) == exact == [[0, 1, 5]]
    assert near == [[0, 1, 2, 3, 5]]  # exact copies join their near relatives; 'd' stands alone
    only_exact, no_near = duplicate_groups(["x", "x", "y"], [1, 1, 0xFF00], distance=2)
    assert only_exact == [[0, 1]] and no_near == []


def test_many_identical_hashes_stay_fast() -> None:
    hashes = [0] * 20_000 + [1]  # e.g. a folder of blank frames
    digests = [str(i) for i in range(len(hashes))]
    _, near = duplicate_groups(digests, hashes, distance=5)
    assert len(near) == 1 and len(near[0]) == len(hashes)
