"""Exact (sha256) and near duplicate groups.

A near duplicate is found in two steps. **Candidates**: two files whose dHash *or* pHash (64-bit
perceptual hashes, computed by ``imagehash``) differ in at most ``distance`` bits. A hash match alone
is not a verdict: small low-detail photos (a dark blob on a pale sky) share hashes with unrelated
ones. **Confirmation**: the two files' 8x8 colour thumbnails must agree, pixel by pixel, to at least
``min_similarity`` (1 - mean absolute difference / 255); that number is the pair's similarity in
the report. Both thresholds and the precision and recall they give were measured on labelled pairs
(``bench/datasets/dedup.py``, docs/benchmarks.md "Near-duplicate detection").

**On the object**: a thumbnail cannot tell a hat from shorts shot on one wooden floor (the floor is most
of the 64 pixels). When the caller passes :class:`ObjectFeatures` (the API passes the ImageNet model's
pooled backbone features, computed with onnxruntime), a pair the thumbnails let through must also have
features at least ``min_cosine`` alike (cosine similarity), and that cosine is the pair's similarity.
Features are computed only for files in a thumbnail-confirmed pair, so the cost follows the candidates,
not the dataset. Without features the thumbnails decide, and :attr:`Duplicates.method` says so.

Candidate search uses the pigeonhole trick: split the 64-bit hash into ``distance + 1`` bands; two
hashes within ``distance`` bits agree exactly on at least one band, so only hashes sharing a band
value are compared (about (distance + 1) / 2**(64 / (distance + 1)) of all pairs: 1/5 at 10 bits).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

THUMB_SIDE = 8  # thumbnails are THUMB_SIDE x THUMB_SIDE RGB


@dataclass(frozen=True)
class Fingerprint:
    """What near-duplicate detection knows of one image (computed in ``validate.fingerprint``)."""

    dhash: int
    phash: int
    thumb: bytes  # THUMB_SIDE x THUMB_SIDE x 3 bytes, RGB


@dataclass(frozen=True)
class ObjectFeatures:
    """What confirms a pair on the object: the edge that has a model (the API) passes one in.

    ``embed`` maps image files to one feature row each, shape (n, d); rows need not be normalised.
    """

    model: str  # named in the report, e.g. "imagenet v1"
    embed: Callable[[Sequence[Path]], np.ndarray]


Method = Literal["features", "thumbnail"]


@dataclass
class Duplicates:
    exact: list[list[int]] = field(default_factory=list)  # indices of files with identical bytes
    near: list[list[int]] = field(default_factory=list)  # files that look alike, not all identical
    links: list[tuple[int, int, float]] = field(default_factory=list)  # confirmed pairs (i, j, similarity)
    method: Method = "thumbnail"  # what confirmed the near pairs (and what ``similarity`` measures)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - mean absolute difference / 255 of thumbnails along the last axis: 1.0 is identical."""
    diff: np.ndarray = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)
    return 1.0 - diff / 255.0


def components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components (scipy.sparse.csgraph) of ``n`` items over ``edges``, as sorted index lists,
    singletons included. Only the edges given join items: a group is never chained through a pair
    that was not itself an edge."""
    if n == 0:
        return []
    pairs = np.array(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    out: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(label.tolist()):
        out[c].append(i)
    return sorted(out.values(), key=lambda g: g[0])


def group_edges(groups: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Edges that join every member of each group to its first member."""
    return [(int(g[0]), int(j)) for g in groups for j in g[1:]]


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
                     min_similarity: float, objects: ObjectFeatures | None = None,
                     paths: Sequence[Path] = (), min_cosine: float = 0.0) -> Duplicates:
    """Exact groups, and near groups of files that look alike but are not all identical.

    ``prints[i]`` is None for files without a fingerprint (they only join exact groups). With
    ``objects`` (and ``paths[i]``, the file of ``prints[i]``) a thumbnail-confirmed pair must also have
    features at least ``min_cosine`` alike. Groups are the connected components of exact copies and
    confirmed pairs only: a pair that was not itself confirmed never joins two files.
    """
    exact = exact_groups(digests)
    copy_of = {j: g[0] for g in exact for j in g[1:]}
    # One file per exact group stands for it; its copies follow through the exact edges.
    reps = [i for i, p in enumerate(prints) if p is not None and i not in copy_of]
    matcher = _Matcher(reps, [prints[i] for i in reps], min_similarity)  # type: ignore[misc]
    for kind in ("dhash", "phash"):
        matcher.match(kind, distance)
    links = sorted(matcher.links.values(), key=lambda link: (link[0], link[1]))
    method: Method = "thumbnail"
    if objects is not None:
        links, method = on_the_object(links, [Path(p) for p in paths], objects, min_cosine), "features"
    groups = components(len(digests), group_edges(exact) + [(i, j) for i, j, _ in links])
    near = [g for g in groups if len(g) > 1 and len({digests[i] for i in g}) > 1]
    return Duplicates(exact=exact, near=near, links=links, method=method)


def cosine(features: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows ``a[k]`` and ``b[k]`` of ``features`` (not normalised)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    out: np.ndarray = np.clip(np.einsum("kd,kd->k", unit[a], unit[b]), -1.0, 1.0)
    return out


def on_the_object(links: Sequence[tuple[int, int, float]], paths: Sequence[Path], objects: ObjectFeatures,
                  min_cosine: float) -> list[tuple[int, int, float]]:
    """The thumbnail-confirmed ``links`` whose files' features are at least ``min_cosine`` alike, each with
    its cosine as the similarity. Features are computed once per file, for the linked files only."""
    if not links:
        return []
    files = sorted({i for i, j, _ in links} | {j for i, j, _ in links})
    row = {f: k for k, f in enumerate(files)}
    features = np.asarray(objects.embed([paths[f] for f in files]), dtype=np.float32)
    if features.shape[0] != len(files):
        raise ValueError(f"{objects.model} gave {features.shape[0]} feature rows for {len(files)} files")
    pairs = np.array([(row[i], row[j]) for i, j, _ in links], dtype=np.int64)
    sims = cosine(features.reshape(len(files), -1), pairs[:, 0], pairs[:, 1])
    return [(i, j, round(float(s), 6)) for (i, j, _), s in zip(links, sims, strict=True) if s >= min_cosine]


class _Matcher:
    """Confirms hash candidates by thumbnail similarity; ``links`` holds every confirmed pair."""

    def __init__(self, reps: list[int], prints: list[Fingerprint], min_similarity: float) -> None:
        self.reps, self.prints, self.min_similarity = reps, prints, min_similarity
        self.thumbs = np.frombuffer(b"".join(p.thumb for p in prints), np.uint8).reshape(len(prints), -1)
        self.links: dict[tuple[int, int], tuple[int, int, float]] = {}

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
        i, j = sorted((self.reps[a], self.reps[b]))
        if i != j and ((i, j) not in self.links or self.links[i, j][2] < sim):
            self.links[i, j] = (i, j, sim)
