"""From unpacked entries to a complete dataset folder: label, validate, dedupe, split, place, report."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.datasets.schemas import (
    IMAGES_DIR,
    Dataset,
    DuplicateCheck,
    DuplicateGroup,
    FileEntry,
    IngestLimits,
    Problem,
    SimilarPair,
)
from dataset_store import checks
from dataset_store.archive import Entry
from dataset_store.dedup import Duplicates, ObjectFeatures, components, duplicate_groups, group_edges
from dataset_store.layout import Item, resolve
from dataset_store.split import make_split, split_reason
from dataset_store.validate import Checked, FileChecker

log = logging.getLogger(__name__)

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")
MAX_PAIRS = 20  # similar pairs listed per duplicate group (the weakest ones)


@dataclass
class Source:
    """What an archive or folder gave us: files to label, plus what was already skipped or refused."""

    entries: list[Entry]
    skipped: int = 0
    problems: list[Problem] | None = None
    owned: bool = True  # entries live in our temp folder and may be moved (else copied)
    legacy_names: list[str] | None = None  # names that were not UTF-8 (see archive.decode_name)


def build(source: Source, folder: Path, limits: IngestLimits, name: str, checker: FileChecker | None = None,
          objects: ObjectFeatures | None = None) -> Dataset:
    """Validate everything and place the images under ``folder/images``; returns the index (no id yet).

    ``checker`` may already be checking the files (started while unpacking); else they are checked here.
    ``objects``: the feature model that confirms near duplicates on the object (else the thumbnails do).
    """
    started = time.perf_counter()
    layout = resolve(source.entries)
    own = checker is None
    checker = checker or FileChecker(limits.max_image_pixels, limits.min_image_side, limits.worker_count)
    try:
        items, good, problems = _validate(layout.items, list(source.problems or []) + layout.problems, checker)
    finally:
        if own:
            checker.close()
    checks.require_usable(items, problems, limits.min_images_per_class)
    archive_split = all(i.split for i in items) and any(i.split == "val" for i in items)
    if any(i.split for i in items):
        checks.require_matching_splits(items)
    dups = duplicate_groups([c.sha256 for c in good], [c.fingerprint for c in good],
                            limits.near_duplicate_distance, limits.near_duplicate_similarity, objects,
                            [Path(c.local) for c in good], limits.near_duplicate_cosine)
    groups = _groups(dups, items)
    made = None if archive_split else _made_split(items, dups.exact + dups.near, limits)
    splits = made or [i.split or "train" for i in items]
    classes = sorted({i.label for i in items})
    per_split = checks.counts([i.label for i in items], splits, classes)
    warnings = (checks.legacy_name_warnings(source.legacy_names or [])
                + _warnings(items, good, splits, per_split, dups, groups, archive_split))
    files = _place(items, good, splits, folder, move=source.owned)
    log.info("validated %d files (%d usable) in %.1fs", len(layout.items), len(items),
             time.perf_counter() - started)
    return Dataset(
        id="", name=name, created_at=datetime.now(UTC).isoformat(timespec="seconds"), classes=classes,
        split_source="archive" if archive_split else "made", layout=layout.kind, files=files,
        counts=per_split, problems=problems, duplicates=sorted(groups, key=lambda g: g.paths[0]), warnings=warnings,
        duplicate_check=duplicate_check(objects, limits),
        skipped=source.skipped, split_reason=_split_reason(items, limits) if made else "",
    )


def duplicate_check(objects: ObjectFeatures | None, limits: IngestLimits) -> DuplicateCheck:
    """What the report says about how near duplicates were confirmed."""
    if objects is not None:
        return DuplicateCheck(method="features", model=objects.model, min_similarity=limits.near_duplicate_cosine)
    return DuplicateCheck(
        method="thumbnail", min_similarity=limits.near_duplicate_similarity,
        note="no feature model was available (the API uses the active 'imagenet' version; run `tuneserve "
             "bootstrap` to register it): pairs were confirmed on 8x8 thumbnails, which cannot tell different "
             "objects shot on one background apart")


def _validate(candidates: list[Item], problems: list[Problem], checker: FileChecker
              ) -> tuple[list[Item], list[Checked], list[Problem]]:
    """Check every file (in worker processes); split into usable items and per-file problems."""
    checked = checker.results([i.local for i in candidates])
    items: list[Item] = []
    good: list[Checked] = []
    for item, result in zip(candidates, checked, strict=True):
        if result.problem:
            problems.append(Problem(path=item.name, problem=result.problem))
        else:
            items.append(item)
            good.append(result)
    return items, good, sorted(problems, key=lambda p: p.path)


def _warnings(items: list[Item], good: list[Checked], splits: list[str], per_split: dict[str, dict[str, int]],
              dups: Duplicates, groups: list[DuplicateGroup], archive_split: bool) -> list[str]:
    return (checks.imbalance_warnings(per_split) + checks.missing_split_warnings(per_split)
            + checks.weak_validation_warnings(per_split)
            + checks.duplicate_warnings(dups.exact + dups.near, groups, items, splits, archive_split)
            + checks.format_warnings(items, [c.format for c in good], [(c.width, c.height) for c in good]))


def _made_split(items: list[Item], groups: list[list[int]], limits: IngestLimits) -> list[str]:
    """Split what has no split yet; an archive's own test/ (without val/) is kept as the test set."""
    fixed_test = [i for i, item in enumerate(items) if item.split == "test"]
    if not fixed_test:
        units = components(len(items), group_edges(groups))
        return make_split([i.label for i in items], units, limits.split, limits.seed, limits.min_val_per_class)
    pool = [i for i, item in enumerate(items) if item.split != "test"]
    where = {old: new for new, old in enumerate(pool)}
    sub_groups = [[where[i] for i in g if i in where] for g in groups]
    sub = _made_split([items[i] for i in pool], [g for g in sub_groups if len(g) > 1],
                      dataclasses.replace(limits, test_fraction=0.0))
    out = ["test"] * len(items)
    for new, old in enumerate(pool):
        out[old] = sub[new]
    return out


def _split_reason(items: list[Item], limits: IngestLimits) -> str:
    pool = Counter(i.label for i in items if i.split != "test")  # an archive's own test/ stays as it is
    fixed_test = any(i.split == "test" for i in items)
    reason = split_reason(pool, limits.val_fraction, 0.0 if fixed_test else limits.test_fraction,
                          limits.min_val_per_class, limits.chosen_split)
    return reason + ("; the archive's test/ folder is the test split" if fixed_test else "")


def _groups(dups: Duplicates, items: list[Item]) -> list[DuplicateGroup]:
    """Report entries, in the order of ``dups.exact + dups.near``."""
    out = [DuplicateGroup(kind="exact", paths=sorted(items[i].name for i in g)) for g in dups.exact]
    group_of = {i: k for k, g in enumerate(dups.near) for i in g}
    links: dict[int, list[tuple[int, int, float]]] = {}
    for i, j, sim in dups.links:
        if i in group_of:
            links.setdefault(group_of[i], []).append((i, j, sim))
    for k, g in enumerate(dups.near):
        weakest = sorted(links.get(k, []), key=lambda link: link[2])
        pairs = [SimilarPair(paths=(items[i].name, items[j].name), similarity=round(sim, 3))
                 for i, j, sim in weakest[:MAX_PAIRS]]
        out.append(DuplicateGroup(kind="near", paths=sorted(items[i].name for i in g),
                                  similarity=pairs[0].similarity if pairs else 1.0, pairs=pairs))
    return out


def safe_component(text: str, fallback: str) -> str:
    """A file or folder name that is valid anywhere: odd characters become '_', no leading dot."""
    cleaned = _UNSAFE_CHARS.sub("_", text).strip().lstrip(".")[:120]
    return cleaned or fallback


def _class_dirs(labels: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for label in sorted(set(labels)):
        base = safe_component(label, "class")
        name, n = base, 1
        while name.lower() in used:  # case-insensitive filesystems would merge "Ants" and "ants"
            n += 1
            name = f"{base}-{n}"
        used.add(name.lower())
        out[label] = name
    return out


def _place(items: list[Item], checked: list[Checked], splits: list[str], folder: Path, *, move: bool
           ) -> list[FileEntry]:
    dirs = _class_dirs([i.label for i in items])
    taken: set[str] = set()
    files = []
    for item, result, split in zip(items, checked, splits, strict=True):
        rel = _free_name(f"{IMAGES_DIR}/{split}/{dirs[item.label]}", item.name, result.sha256, taken)
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.rename(item.local, dest)
        else:
            shutil.copyfile(item.local, dest)
        files.append(FileEntry(
            path=rel, original=item.name, label=item.label, split=split,  # type: ignore[arg-type]
            sha256=result.sha256, size=result.size, width=result.width, height=result.height))
    return files


def _free_name(directory: str, original: str, sha256: str, taken: set[str]) -> str:
    base = safe_component(original.rsplit("/", 1)[-1], "image")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    candidates = itertools.chain([base, f"{stem}-{sha256[:8]}{dot}{ext}"],
                                 (f"{stem}-{sha256[:8]}-{n}{dot}{ext}" for n in range(2, 10_000)))
    for name in candidates:
        rel = f"{directory}/{name}"
        if rel.lower() not in taken:
            taken.add(rel.lower())
            return rel
    raise RuntimeError(f"no free file name for {original!r}")  # 10,000 same-named copies: give up
