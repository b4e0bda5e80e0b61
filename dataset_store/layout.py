"""Work out labels (and splits) from archive paths.

Accepted layouts, optionally wrapped in one top folder (``data/ants/x.jpg``):

* class folders: ``ants/x.jpg``, ``bees/y.jpg`` (deeper folders belong to the class above them);
* split folders: ``train/<class>/...``, ``val/`` (or ``valid/``, ``validation/``), optional ``test/``;
* ``labels.csv`` (``path,label`` and optionally ``split``) beside the images.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from core.datasets.errors import ArchiveUnsafe, DatasetInvalid
from core.datasets.schemas import Problem
from dataset_store.archive import Entry, safe_name

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
LABELS_FILE = "labels.csv"
NOT_IN_CLASS = "not inside a class folder; ignored (put each image in a folder named after its class)"


@dataclass
class Item:
    name: str  # path inside the archive
    local: Path
    label: str
    split: str | None = None  # from the archive; None = the service makes the split


@dataclass
class Layout:
    kind: str  # "class_folders" | "split_folders" | "labels_csv"
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _rest(name: str, prefix: str) -> str:
    return name[len(prefix):] if prefix else name


def find_root(names: list[str]) -> str:
    """The folder prefix (``""`` or ``"wrap/"``...) that the layout starts at.

    A single top folder is a wrapper when it holds folders (or labels.csv) rather than only images;
    a single folder of images is a (lone) class and is kept, so the error says "only one class".
    """
    prefix = ""
    while names:
        rests = [_rest(n, prefix) for n in names]
        if any("/" not in r for r in rests):
            return prefix  # files right here: this is the root
        tops = {r.split("/", 1)[0] for r in rests}
        if len(tops) != 1:
            return prefix
        top = tops.pop()
        if top.lower() in SPLIT_ALIASES:
            return prefix
        nested = any(r.count("/") >= 2 or r.lower() == f"{top.lower()}/{LABELS_FILE}" for r in rests)
        if not nested:
            return prefix
        prefix = f"{prefix}{top}/"
    return prefix


def resolve(entries: list[Entry]) -> Layout:
    """Label every entry (or report why not) according to the layout the archive uses."""
    problems: list[Problem] = []
    unique: dict[str, Entry] = {}
    for e in entries:
        if e.name in unique:
            problems.append(Problem(path=e.name, problem="appears twice in the archive; kept the first copy"))
        else:
            unique[e.name] = e
    files = list(unique.values())
    prefix = find_root([e.name for e in files])
    csv_entry = unique.get(f"{prefix}{LABELS_FILE}")
    if csv_entry is not None:
        layout = _labels_csv(files, prefix, csv_entry)
    elif any(_rest(e.name, prefix).split("/", 1)[0].lower() in SPLIT_ALIASES for e in files):
        layout = _split_folders(files, prefix)
    else:
        layout = _class_folders(files, prefix)
    layout.problems[:0] = problems
    return layout


def _class_folders(files: list[Entry], prefix: str) -> Layout:
    out = Layout("class_folders")
    for e in files:
        parts = _rest(e.name, prefix).split("/")
        if len(parts) < 2:
            out.problems.append(Problem(path=e.name, problem=NOT_IN_CLASS))
        else:
            out.items.append(Item(e.name, e.local, parts[0]))
    return out


def _split_folders(files: list[Entry], prefix: str) -> Layout:
    out = Layout("split_folders")
    for e in files:
        parts = _rest(e.name, prefix).split("/")
        split = SPLIT_ALIASES.get(parts[0].lower()) if len(parts) > 1 else None
        if len(parts) > 1 and split is None:
            out.problems.append(Problem(
                path=e.name,
                problem=f"folder {parts[0]!r} is not a split folder (train/, val/, test/); ignored"))
        elif len(parts) < 3:
            out.problems.append(Problem(path=e.name, problem=NOT_IN_CLASS))
        else:
            out.items.append(Item(e.name, e.local, parts[1], split))
    return out


def _labels_csv(files: list[Entry], prefix: str, csv_entry: Entry) -> Layout:
    out = Layout("labels_csv")
    rows = _read_labels(csv_entry, out.problems)
    by_name = {_rest(e.name, prefix): e for e in files if e is not csv_entry}
    for rel, (label, split) in rows.items():
        entry = by_name.pop(rel, None)
        if entry is None:
            out.problems.append(Problem(path=f"{prefix}{rel}",
                                        problem=f"listed in {LABELS_FILE} but not in the archive"))
        else:
            out.items.append(Item(entry.name, entry.local, label, split))
    for entry in by_name.values():
        out.problems.append(Problem(path=entry.name, problem=f"not listed in {LABELS_FILE}; ignored"))
    out.items.sort(key=lambda i: i.name)
    splits = {i.split is None for i in out.items}
    if len(splits) > 1:
        raise DatasetInvalid(
            f"{LABELS_FILE} gives a split for some rows but not others: fill the split column "
            "(train/val/test) on every row, or drop the column to let the service split")
    return out


def _read_labels(entry: Entry, problems: list[Problem]) -> dict[str, tuple[str, str | None]]:
    """``{relative path: (label, split or None)}`` from labels.csv; bad rows become problems."""
    try:
        text = entry.local.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetInvalid(
            f"{entry.name} is not UTF-8 text: save it as UTF-8 CSV with columns path,label") from exc
    rows: dict[str, tuple[str, str | None]] = {}
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or (line_no == 1 and [c.lower() for c in cells[:2]] == ["path", "label"]):
            continue
        where = f"{entry.name} line {line_no}"
        if len(cells) < 2 or not cells[0] or not cells[1]:
            problems.append(Problem(path=where, problem="expected 'path,label'; row ignored"))
            continue
        split = None
        if len(cells) > 2 and cells[2]:
            split = SPLIT_ALIASES.get(cells[2].lower())
            if split is None:
                problems.append(Problem(path=where,
                                        problem=f"unknown split {cells[2]!r} (use train, val or test)"))
                continue
        try:
            rel = safe_name(cells[0])
        except ArchiveUnsafe as exc:
            problems.append(Problem(path=where, problem=str(exc)))
            continue
        rows.setdefault(rel, (cells[1], split))
    return rows
