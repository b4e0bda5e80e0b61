"""Labelled captures back into training: the parent dataset plus the reviewed photos, as a new dataset.

The parent's photos keep their split. The new photos are split train/val by the same seeded, stratified
rules as an upload (dataset_store/split.py) with no test share: the test split the gate and the reports
compare against stays the parent's, so a photo that came back from the field never scores the model that
learnt it. Photos whose bytes are already in the parent (sha256) are skipped; "none of these" answers are
not a class and are listed in the lineage as negatives. The result goes through the ordinary folder
ingest (validation, duplicates, report), with ``lineage.parent`` naming the parent.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.datasets.errors import DatasetInvalid
from core.datasets.schemas import Dataset, IngestLimits, Lineage, NegativePhoto
from dataset_store import DatasetStore
from dataset_store.dedup import ObjectFeatures
from dataset_store.layout import LABELS_FILE
from dataset_store.split import make_split
from feedback.store import Capture, FeedbackStore

NOTE = ("feedback photos are placed in train and val only; the test split is the parent's, so no captured "
        "photo is scored in the split a model is compared on")


@dataclass(frozen=True)
class Plan:
    """Which labelled captures join the parent, and which are only kept as negatives."""

    added: list[Capture]
    already_in_parent: int
    negatives: list[Capture]


def plan(parent: Dataset, labelled: list[Capture]) -> Plan:
    """Latest label wins for a photo sent twice; photos the parent already holds are skipped."""
    in_parent = {f.sha256 for f in parent.files}
    latest: dict[str, Capture] = {}
    for c in sorted(labelled, key=lambda c: (c.labeled_at or 0.0, c.id)):
        latest[c.sha256] = c
    added, negatives, skipped = [], [], 0
    for c in sorted(latest.values(), key=lambda c: c.id):
        if c.label is None:
            negatives.append(c)
        elif c.sha256 in in_parent:
            skipped += 1
        else:
            added.append(c)
    return Plan(added, skipped, negatives)


def build_feedback_dataset(datasets: DatasetStore, parent: Dataset, store: FeedbackStore, model: str,
                           version: int | None, limits: IngestLimits, work_dir: Path,
                           objects: ObjectFeatures | None = None) -> tuple[Dataset, bool]:
    """The new dataset version and whether it was created (False: the same content is already stored)."""
    chosen = plan(parent, store.labelled())
    if not chosen.added:
        raise DatasetInvalid(
            f"no labelled captures of {model!r} that its dataset {parent.id} lacks "
            f"({chosen.already_in_parent} already in it, {len(chosen.negatives)} 'none of these'): label some "
            f"with POST /v1/models/{model}/feedback/{{id}} first")
    labels = [c.label or "" for c in chosen.added]
    no_test = dataclasses.replace(limits, test_fraction=0.0)
    splits = make_split(labels, [[i] for i in range(len(labels))], no_test.split, limits.seed,
                        limits.min_val_per_class)
    lineage = Lineage(parent=parent.id, model=model, model_version=version,
                      added={label: labels.count(label) for label in sorted(set(labels))},
                      already_in_parent=chosen.already_in_parent,
                      negatives=[NegativePhoto(capture_id=c.id, sha256=c.sha256) for c in chosen.negatives],
                      note=NOTE)
    work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="feedback-", dir=work_dir))
    try:
        rows: list[tuple[str, str, str]] = [(f.path, f.label, f.split) for f in parent.files]
        for f in parent.files:
            _link(parent.root / f.path, folder / f.path)
        for c, split in zip(chosen.added, splits, strict=True):
            rel = f"feedback/{c.file}"
            _link(store.photo(c), folder / rel)
            rows.append((rel, c.label or "", split))
        with (folder / LABELS_FILE).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "split"])
            writer.writerows(rows)
        name = f"{parent.name} + feedback"
        try:
            return datasets.ingest_folder(folder, name, limits, objects, lineage=lineage)
        except DatasetInvalid as exc:  # the ingest speaks of folders; here the user's lever is labelling
            raise DatasetInvalid(f"dataset {parent.id} plus the labelled feedback is not usable: {exc} (here: "
                                 "label more captures of that class, or send corrections)") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link(src: Path, dest: Path) -> None:
    """A hard link where the filesystem allows (the ingest copies anyway), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
