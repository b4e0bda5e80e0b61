"""Duplicates: exact by sha256; near = a dHash/pHash candidate confirmed by thumbnail similarity.

Real photos (tests/data) and generated ones; the thresholds themselves were measured on labelled
pairs in bench/datasets/dedup.py (docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from core.datasets.schemas import IngestLimits
from dataset_store.dedup import Fingerprint, duplicate_groups, exact_groups, near_pairs
from dataset_store.validate import check_file
from tests.dataset_store.datasets_kit import cropped, exif_rotated, low_detail, reencoded
from tests.photos import HYMENOPTERA

LIMIT = 40_000_000
LIMITS = IngestLimits()
DISTANCE, SIMILARITY = LIMITS.near_duplicate_distance, LIMITS.near_duplicate_similarity


def _print(path: Path) -> Fingerprint:
    result = check_file(str(path), LIMIT, 32)
    assert result.problem is None and result.fingerprint is not None
    return result.fingerprint


def _groups(paths: list[Path]):  # type: ignore[no-untyped-def]
    prints = [_print(p) for p in paths]
    return duplicate_groups([str(i) for i in range(len(paths))], prints, DISTANCE, SIMILARITY)


def _bits(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_real_photos_and_their_copies_are_grouped_with_a_similarity(tmp_path: Path) -> None:
    """Re-encoded and resized, slightly cropped, EXIF-rotated: each copy joins its original."""
    photos = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:6]
    paths: list[Path] = []
    for i, src in enumerate(photos):
        data = src.read_bytes()
        paths.append(src)
        for kind, copy in (("re", reencoded(data, scale=0.5 + 0.08 * i, quality=55 + 6 * i)),
                           ("crop", cropped(data, 0.04)), ("exif", exif_rotated(data))):
            paths.append(tmp_path / f"{kind}{i}.jpg")
            paths[-1].write_bytes(copy)
    dups = _groups(paths)
    assert sorted(map(sorted, dups.near)) == [list(range(k, k + 4)) for k in range(0, 24, 4)]
    # every confirmed pair is listed (at least a spanning tree of each group), none across groups
    assert dups.exact == [] and len(dups.links) >= 18 and all(i // 4 == j // 4 for i, j, _ in dups.links)
    assert all(SIMILARITY <= sim <= 1.0 for _, _, sim in dups.links)
    by_pair = {(min(i, j), max(i, j)): sim for i, j, sim in dups.links}
    assert by_pair.get((0, 3), by_pair.get((1, 3), by_pair.get((2, 3), 0))) > 0.98  # EXIF-rotated: same pixels


def test_distinct_real_photos_do_not_match() -> None:
    photos = sorted((HYMENOPTERA / "val").glob("*/*.jpg"))  # 50 real photos, both classes
    dups = _groups(photos)
    assert dups.near == [] and dups.links == []


def test_low_detail_photos_that_share_a_hash_are_not_grouped(tmp_path: Path) -> None:
    """The CIFAR-10 false alarm in miniature: a dark shape on blue sky and one of the same outline on
    green grass have all but the same hashes (the same light/dark layout, which is all a hash sees);
    their pixels say they are different photos. Each one's re-encode still joins it, so this is the
    check working, not small photos being ignored."""
    plane = low_detail(sky=(110, 150, 215), blob=(40, 40, 50), shape=(14, 6))
    cat = low_detail(sky=(70, 140, 60), blob=(25, 20, 20), shape=(14, 6))
    paths = []
    for name, data in (("plane", plane), ("cat", cat), ("plane_q60", reencoded(plane, 1.0, 60)),
                       ("cat_q60", reencoded(cat, 1.0, 60))):
        paths.append(tmp_path / f"{name}.jpg")
        paths[-1].write_bytes(data)
    prints = [_print(p) for p in paths]
    assert _bits(prints[0].dhash, prints[1].dhash) <= 5  # the old rule (dHash within 5 bits) grouped them
    dups = duplicate_groups([str(i) for i in range(4)], prints, DISTANCE, SIMILARITY)
    assert sorted(map(sorted, dups.near)) == [[0, 2], [1, 3]]


def test_band_search_finds_exactly_what_brute_force_finds() -> None:
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(300)]
    for i in range(0, 60, 3):  # plant copies 0..12 bits away
        h = hashes[i]
        for bit in rng.sample(range(64), rng.randint(0, 12)):
            h ^= 1 << bit
        hashes.append(h)
    for distance in (0, 3, 5, 6, 10):
        brute = {(i, j) for i, j in itertools.combinations(range(len(hashes)), 2)
                 if _bits(hashes[i], hashes[j]) <= distance}
        assert near_pairs(hashes, distance) == brute
        assert distance == 0 or brute  # the planted copies are there to be found


def _fp(dhash: int, phash: int, grey: int) -> Fingerprint:
    return Fingerprint(dhash=dhash, phash=phash, thumb=bytes([grey]) * 192)


def test_groups_split_exact_from_near_and_need_both_hash_and_pixels() -> None:
    digests = ["a", "a", "b", "c", "d", "a", "e"]
    prints = [
        _fp(0b1111, 1, 100), _fp(0b1111, 1, 100),
        _fp(0b1110, 1 << 60, 101),  # dHash 1 bit away, pixels alike: near
        _fp(1 << 40, 0b1, 102),  # pHash equal to the first: near through the other hash
        _fp((1 << 64) - 1, (1 << 64) - 1, 100),  # no hash close: alone whatever its pixels
        _fp(0b1111, 1, 100),
        _fp(0b1111, 1, 200),  # both hashes equal, pixels far apart: not a duplicate
    ]
    dups = duplicate_groups(digests, prints, distance=2, min_similarity=0.94)
    assert exact_groups(digests) == dups.exact == [[0, 1, 5]]
    assert dups.near == [[0, 1, 2, 3, 5]]  # exact copies join their near relatives; 'd' and 'e' stand alone
    assert sorted((i, j) for i, j, _ in dups.links) == [(0, 2), (0, 3)]
    assert [round(s, 4) for _, _, s in sorted(dups.links)] == [round(1 - 1 / 255, 4), round(1 - 2 / 255, 4)]
    only_exact = duplicate_groups(["x", "x", "y"], [_fp(1, 1, 0), _fp(1, 1, 0), _fp(0xFF00, 0xFF00, 0)],
                                  distance=2, min_similarity=0.94)
    assert only_exact.exact == [[0, 1]] and only_exact.near == []


def test_many_identical_hashes_stay_fast() -> None:
    """A folder of blank frames: one hash value for 20,000 files, compared against one look-alike each."""
    prints = [_fp(0, 0, 10 + i % 3) for i in range(20_000)] + [_fp(1, 1, 12)]
    digests = [str(i) for i in range(len(prints))]
    dups = duplicate_groups(digests, prints, distance=5, min_similarity=0.94)  # all-pairs: 2e8 comparisons
    assert len(dups.near) == 1 and len(dups.near[0]) == len(prints)


def test_groups_are_components_of_confirmed_pairs_only() -> None:
    from dataset_store.dedup import components, group_edges

    # 0-1 and 1-2 confirmed: one group; 3-4 confirmed; 5 was only a candidate of 4: stays alone
    assert components(6, [(0, 1), (1, 2), (3, 4)]) == [[0, 1, 2], [3, 4], [5]]
    assert components(3, []) == [[0], [1], [2]] and components(0, []) == []
    assert group_edges([[2, 5, 7], [1, 3]]) == [(2, 5), (2, 7), (1, 3)]


def _objects(features: dict[int, list[float]], asked: list[list[int]]):  # type: ignore[no-untyped-def]
    """Features per file index (the paths are the indices as names); records which files were asked for."""
    import numpy as np

    from dataset_store.dedup import ObjectFeatures

    def embed(paths):  # type: ignore[no-untyped-def]
        asked.append([int(p.name) for p in paths])
        return np.array([features[int(p.name)] for p in paths], dtype=np.float32)

    return ObjectFeatures(model="test-model", embed=embed)


def test_thumbnail_pairs_are_confirmed_on_the_object_and_never_chained() -> None:
    """0-1-2-3 all pass the thumbnails; features say 0 and 1 are one object, 2 another, 3 a third thing
    alike to 2 only in part. Only confirmed pairs join: 2 is not chained to 0 through 1's thumbnail."""
    prints = [_fp(0b1111, 1, 100), _fp(0b1110, 1, 101), _fp(0b1101, 1, 100), _fp(0b1011, 1, 101),
              _fp((1 << 64) - 1, (1 << 63), 0)]  # 4: no candidate at all, never sent to the model
    asked: list[list[int]] = []
    objects = _objects({0: [1, 0, 0], 1: [0.99, 0.1, 0], 2: [0, 1, 0], 3: [0, 0.6, 0.8]}, asked)
    paths = [Path(str(i)) for i in range(len(prints))]
    by_thumb = duplicate_groups(list("abcde"), prints, distance=3, min_similarity=0.94)
    assert by_thumb.method == "thumbnail" and by_thumb.near == [[0, 1, 2, 3]]
    dups = duplicate_groups(list("abcde"), prints, 3, 0.94, objects, paths, min_cosine=0.7)
    assert dups.method == "features"
    assert dups.near == [[0, 1]]
    ((i, j, sim),) = dups.links
    assert (i, j) == (0, 1) and 0.99 < sim < 1.0  # the similarity is the features' cosine
    assert asked == [[0, 1, 2, 3]]  # one batch, only files in a thumbnail-confirmed pair


def test_the_cosine_threshold_decides() -> None:
    prints = [_fp(0b1111, 1, 100), _fp(0b1110, 1, 101)]
    paths = [Path("0"), Path("1")]
    objects = _objects({0: [1, 0], 1: [0.8, 0.6]}, [])  # cosine 0.8
    assert duplicate_groups(["a", "b"], prints, 3, 0.94, objects, paths, min_cosine=0.79).near == [[0, 1]]
    assert duplicate_groups(["a", "b"], prints, 3, 0.94, objects, paths, min_cosine=0.81).near == []
