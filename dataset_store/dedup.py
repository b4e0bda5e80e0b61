"""Exact (sha256) and near duplicate groups.

A near duplicate is found in two steps. **Candidates**: two files whose dHash *or* pHash (64-bit
perceptual hashes, computed by ``imagehash``) differ in at most ``distance`` bits. A hash match alone
is not a verdict: small low-detail photos (a dark blob on a pale sky) share hashes with unrelated
ones. **Confirmation**: the two files' 8x8 colour thumbnails must agree, pixel by pixel, to at least
``min_similarity`` (1 - mean absolute difference / 255); that number is the pair's similarity in
the report. Both thresholds and the precision and recall they give were measured on labelled pairs
(``bench/dedup.py``, docs/benchmarks.md "Near-duplicate detection").

Candidate search uses the pigeonhole trick: split the 64-bit hash into ``distance + 1`` bands; two
hashes within ``distance`` bits agree exactly on at least one band, so only hashes sharing a band
value are compared (about (distance + 1) / 2**(64 / (distance + 1)) of all pairs: 1/5 at 10 bits).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

THUMB_SIDE = 8  # thumbnails are THUMB_SIDE x THUMB_SIDE RGB


@dataclass(frozen=True)
class Fingerprint:
    """What near-duplicate detection knows of one image (computed in ``validate.fingerprint``)."""

    dhash: int
    phash: int
    thumb: bytes  # THUMB_SIDE x THUMB_SIDE x 3 bytes, RGB


@dataclass
class Duplicates:
    exact: list[list[int]] = field(default_factory=list)  # indices of files with identical bytes
    near: list[list[int]] = field(default_factory=list)  # files that look alike, not all identical
    links: list[tuple[int, int, float]] = field(default_factory=list)  # confirmed pairs (i, j, similarity)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - mean absolute difference / 255 of thumbnails along the last axis: 1.0 is identical."""
    diff: np.ndarray = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)
    return 1.0 - diff / 255.0


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return [g for g in out.values() if len(g) > 1]


def exact_groups(digests: Sequence[str]) -> list[list[int]]:
    """Indices of files with identical bytes, grouped (groups of 2+ only)."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    return [g for g in by_digest.values() if len(g) > 1]


def _bands(distance: int) -> list[tuple[int, int]]:
    """(shift, mask) pairs covering the 64 bits in ``distance + 1`` nearly equal bands."""
    count = min(distance + 1, 64)
    edges = [round(64 * k / count) for k in range(count + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]


def near_pairs(hashes: Sequence[int], distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most ``distance`` bits."""
    arr = np.array(hashes, dtype=np.uint64)
    found: list[np.ndarray] = []
    for shift, mask in _bands(distance):
        keys = (arr >> np.uint64(shift)) & np.uint64(mask)
        order = np.argsort(keys, kind="stable")  # members of one bucket end up side by side
        for members in np.split(order, np.flatnonzero(np.diff(keys[order])) + 1):
            if len(members) > 1:
                found.append(_close(arr, members, distance))
    if not found:
        return set()
    return {(int(i), int(j)) for i, j in np.concatenate(found)}


def _close(arr: np.ndarray, members: np.ndarray, distance: int, cells: int = 1 << 22) -> np.ndarray:
    """Pairs (i < j) of ``members`` within ``distance`` bits, compared a block of rows at a time."""
    idx = np.sort(members)
    vals = arr[idx]
    block = max(1, cells // len(idx))
    out = []
    for r0 in range(0, len(idx), block):
        dist = np.bitwise_count(vals[r0:r0 + block, None] ^ vals[None, r0:])
        rows, cols = np.nonzero(dist <= distance)
        keep = cols > rows  # column k is member r0 + k: later members only, each pair once
        out.append(np.stack([idx[r0 + rows[keep]], idx[r0 + cols[keep]]], axis=1))
    return np.concatenate(out)


def duplicate_groups(digests: Sequence[str], prints: Sequence[Fingerprint | None], distance: int,
                     min_similarity: float) -> Duplicates:
    """Exact groups, and near groups of files that look alike but are not all identical.

    ``prints[i]`` is None for files without a fingerprint (they only join exact groups).
    """
    exact = exact_groups(digests)
    uf = UnionFind(len(digests))
    for group in exact:
        for j in group[1:]:
            uf.union(group[0], j)
    # One file per exact group stands for it; its copies follow through the union above.
    reps = [i for i, p in enumerate(prints) if p is not None and uf.find(i) == i]
    matcher = _Matcher(uf, reps, [prints[i] for i in reps], min_similarity)  # type: ignore[misc]
    for kind in ("dhash", "phash"):
        matcher.match(kind, distance)
    near = [g for g in uf.groups() if len({digests[i] for i in g}) > 1]
    return Duplicates(exact=exact, near=near, links=matcher.links)


class _Matcher:
    """Confirms hash candidates by thumbnail similarity and joins the confirmed pairs."""

    def __init__(self, uf: UnionFind, reps: list[int], prints: list[Fingerprint], min_similarity: float) -> None:
        self.uf, self.reps, self.prints, self.min_similarity = uf, reps, prints, min_similarity
        self.thumbs = np.frombuffer(b"".join(p.thumb for p in prints), np.uint8).reshape(len(prints), -1)
        self.links: list[tuple[int, int, float]] = []

    def match(self, kind: str, distance: int) -> None:
        """Candidates by one hash. Files sharing a hash value are first sorted into look-alike
        clusters (a folder of blank frames is one big value); clusters stand for their value."""
        by_value: dict[int, list[int]] = defaultdict(list)
        for pos, p in enumerate(self.prints):
            by_value[getattr(p, kind)].append(pos)
        values = list(by_value)
        leaders = [self._cluster(by_value[v]) for v in values]
        pairs = [(a, b) for i, j in near_pairs(values, distance) for a in leaders[i] for b in leaders[j]]
        self._confirm(np.array(pairs, dtype=np.int64).reshape(-1, 2))

    def _cluster(self, members: list[int]) -> list[int]:
        """Greedy: each member joins the most similar leader so far if alike enough, else leads."""
        leaders = members[:1]
        for m in members[1:]:
            sims = similarity(self.thumbs[leaders], self.thumbs[m])
            best = int(np.argmax(sims))
            if sims[best] >= self.min_similarity:
                self._link(leaders[best], m, float(sims[best]))
            else:
                leaders.append(m)
        return leaders

    def _confirm(self, pairs: np.ndarray, chunk: int = 65536) -> None:
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            sims = similarity(self.thumbs[part[:, 0]], self.thumbs[part[:, 1]])
            for (a, b), sim in zip(part[sims >= self.min_similarity], sims[sims >= self.min_similarity],
                                   strict=True):
                self._link(int(a), int(b), float(sim))

    def _link(self, a: int, b: int, sim: float) -> None:
        i, j = self.reps[a], self.reps[b]
        if self.uf.find(i) != self.uf.find(j):
            self.uf.union(i, j)
            self.links.append((i, j, sim))


def connected(n: int, groups: Sequence[Sequence[int]]) -> UnionFind:
    """Union-find over ``n`` items joined by ``groups``: the units a split must keep together."""
    uf = UnionFind(n)
    for group in groups:
        for j in group[1:]:
            uf.union(group[0], j)
    return uf
