"""Exact (sha256) and near (dHash) duplicate groups.

Near matching uses the pigeonhole trick: split the 64-bit hash into ``distance + 1`` bands; two
hashes within ``distance`` bits agree exactly on at least one band, so only hashes sharing a band
value are compared. That keeps it roughly linear instead of all-pairs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


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
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:], strict=False)]


def near_pairs(hashes: Sequence[int], distance: int) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most ``distance`` bits."""
    arr = np.array(hashes, dtype=np.uint64)
    pairs: set[tuple[int, int]] = set()
    for shift, mask in _bands(distance):
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            buckets[(h >> shift) & mask].append(i)
        for members in buckets.values():
            if len(members) > 1:
                pairs.update(_close(arr, members, distance))
    return pairs


def _close(arr: np.ndarray, members: list[int], distance: int) -> list[tuple[int, int]]:
    idx = np.array(members)
    found: list[tuple[int, int]] = []
    for k in range(len(idx) - 1):
        rest = idx[k + 1:]
        dist = np.bitwise_count(arr[rest] ^ arr[idx[k]])
        found.extend((int(idx[k]), int(j)) for j in rest[dist <= distance])
    return found


def duplicate_groups(digests: Sequence[str], hashes: Sequence[int | None], distance: int
                     ) -> tuple[list[list[int]], list[list[int]]]:
    """(exact groups, near groups). A near group joins files that look alike but are not all identical.

    ``hashes[i]`` is None for files without a perceptual hash (they only join exact groups).
    """
    exact = exact_groups(digests)
    uf = UnionFind(len(digests))
    for group in exact:
        for j in group[1:]:
            uf.union(group[0], j)
    # Equal hashes join at once; only distinct values go through the band search (a folder of
    # blank frames would otherwise make one huge bucket).
    first: dict[int, int] = {}
    for i, h in enumerate(hashes):
        if h is not None:
            uf.union(first.setdefault(h, i), i)
    values = list(first)
    for a, b in near_pairs(values, distance):
        uf.union(first[values[a]], first[values[b]])
    near = [g for g in uf.groups() if len({digests[i] for i in g}) > 1]
    return exact, near


def connected(n: int, groups: Sequence[Sequence[int]]) -> UnionFind:
    """Union-find over ``n`` items joined by ``groups``: the units a split must keep together."""
    uf = UnionFind(n)
    for group in groups:
        for j in group[1:]:
            uf.union(group[0], j)
    return uf
