"""Dataset-level checks (refuse with 422 and say what to fix) and warnings (stored in the report)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from core.datasets.errors import DatasetInvalid
from core.datasets.schemas import SPLITS, DuplicateGroup, Problem
from dataset_store.layout import Item

IMBALANCE_RATIO = 10.0
MAX_NAMED = 5  # files named in one message before "... and N more"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" ... and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


def require_usable(items: Sequence[Item], problems: Sequence[Problem], min_per_class: int) -> None:
    """Raise :class:`DatasetInvalid` unless the valid ``items`` make a trainable dataset."""
    if not items:
        rejected = _names([f"{p.path} ({p.problem})" for p in problems])
        raise DatasetInvalid(
            "no valid images left: put images in one folder per class (ants/x.jpg, bees/y.jpg), in "
            "train/ and val/ folders of class folders, or list them in labels.csv"
            + (f"; rejected: {rejected}" if rejected else ""))
    counts = Counter(i.label for i in items)
    # Rejected files often explain a missing class, so the message names them too.
    rejected = f" ({len(problems)} file(s) rejected: {_names([p.path for p in problems])})" if problems else ""
    if len(counts) < 2:
        raise DatasetInvalid(
            f"found only one class ({next(iter(counts))!r}); a classifier needs at least 2: "
            f"add a folder of images for each other class{rejected}")
    small = sorted(label for label, n in counts.items() if n < min_per_class)
    if small:
        detail = ", ".join(f"{label!r} has {counts[label]}" for label in small)
        raise DatasetInvalid(
            f"each class needs at least {min_per_class} valid images, but {detail}: "
            f"add images to those classes or remove their folders{rejected}")


def require_matching_splits(items: Sequence[Item]) -> None:
    """An archive's own split must show the model every class it will be scored on."""
    present: dict[str, set[str]] = defaultdict(set)
    for i in items:
        present[i.split or "train"].add(i.label)
    if "val" in present and "train" not in present:
        raise DatasetInvalid("the archive has val/ but no train/ folder: add train/<class>/ folders, or "
                             "put class folders at the top and let the service split")
    train, val = present.get("train", set()), present.get("val", set())
    if val and train != val:
        raise DatasetInvalid(
            f"train and val hold different classes (only in train: {sorted(train - val)}, only in val: "
            f"{sorted(val - train)}): give every class images in both train/ and val/")
    unseen = present.get("test", set()) - train
    if unseen:
        raise DatasetInvalid(f"test/ has classes missing from train/: {sorted(unseen)}; add them to train/")


def counts(labels: Sequence[str], splits: Sequence[str], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    out = {s: dict.fromkeys(classes, 0) for s in SPLITS}
    for label, split in zip(labels, splits, strict=True):
        out[split][label] += 1
    return {s: c for s, c in out.items() if any(c.values()) or s in ("train", "val")}


def imbalance_warnings(per_split: dict[str, dict[str, int]]) -> list[str]:
    totals: Counter[str] = Counter()
    for c in per_split.values():
        totals.update(c)
    largest, smallest = max(totals.items(), key=lambda kv: kv[1]), min(totals.items(), key=lambda kv: kv[1])
    if smallest[1] and largest[1] / smallest[1] > IMBALANCE_RATIO:
        return [f"class imbalance: {largest[0]!r} has {largest[1]} images, {largest[1] / smallest[1]:.0f}x "
                f"{smallest[0]!r} ({smallest[1]}); add images to small classes or expect a biased model"]
    return []


def weak_validation_warnings(per_split: dict[str, dict[str, int]]) -> list[str]:
    """The val split (the one models are selected and compared on when there is no test split)."""
    from core.weak_validation import weak_split_warning

    warning = weak_split_warning("val", per_split.get("val", {}))
    return [warning] if warning else []


def missing_split_warnings(per_split: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for split in ("val", "test"):
        empty = sorted(k for k, v in per_split.get(split, {}).items() if v == 0)
        if split in per_split and any(per_split[split].values()) and empty:
            out.append(f"{split} has no images of {empty}: those classes are not measured on {split}")
    return out


def duplicate_warnings(groups: Sequence[Sequence[int]], reports: Sequence[DuplicateGroup], items: Sequence[Item],
                       splits: Sequence[str], archive_split: bool) -> list[str]:
    out = []
    for group, report in zip(groups, reports, strict=True):
        names = [items[i].name for i in group]
        labels = sorted({items[i].label for i in group})
        what = "exact duplicates" if report.kind == "exact" else f"near duplicates (similarity {report.similarity:.2f})"
        if len(labels) > 1:
            out.append(f"{what} with different labels {labels}: {_names(names)}; fix the labels")
        sides = sorted({splits[i] for i in group})
        if len(sides) > 1 and archive_split:
            out.append(f"{what} across splits {sides} (leaks into evaluation): {_names(names)}")
    return out


def legacy_name_warnings(names: Sequence[str]) -> list[str]:
    if not names:
        return []
    return [f"{len(names)} name(s) in the archive are not UTF-8 and were read as cp437 (zip) or latin-1 (tar), "
            f"so accented class or file names may look wrong: {_names(sorted(names))}; re-create the archive "
            "with UTF-8 names (any current zip or tar tool) to keep them as typed"]


def format_warnings(items: Sequence[Item], formats: Sequence[str], sizes: Sequence[tuple[int, int]]
                    ) -> list[str]:
    """Files that stand out: a format few others share (placeholders, screenshots), extreme shapes."""
    out = []
    seen = Counter(formats)
    main, main_n = seen.most_common(1)[0]
    if main_n >= 0.9 * len(formats):
        for fmt, n in sorted(seen.items()):
            if fmt != main:
                odd = [items[i].name for i, f in enumerate(formats) if f == fmt]
                out.append(f"{n} {fmt} file(s) among {main_n} {main} images (placeholder or graphic?): "
                           f"{_names(odd)}")
    wide = [items[i].name for i, (w, h) in enumerate(sizes) if max(w, h) > 3 * min(w, h)]
    if wide:
        out.append(f"{len(wide)} image(s) with an aspect ratio over 3:1 (heavily cropped when resized): "
                   f"{_names(wide)}")
    return out
