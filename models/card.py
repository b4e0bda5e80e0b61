"""A version's model card: what it was trained on, how it was trained, how good it is (with intervals),
how calibrated, and what it must not be trusted with, in one JSON document.

Built from what every version already stores (its manifest and its report.json) and, when the caller
has it, the dataset's report; torch-free, so the trainer writes ``card.json`` when it publishes and
the API builds the same card on demand for a version published before cards existed. Every
limitation is stated from the numbers in the card, never written by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.weak_validation import CONFIDENCE, weak_split_warning, wilson_interval
from models.manifest import Manifest

CARD_FILE = "card.json"
CARD_FORMAT = 1
# A class whose held-out recall is below this is named a limitation: one photo in five of it is missed.
RECALL_FLOOR = 0.8
# A true class whose photos go to one other class this often (share of its held-out photos) is "confused with" it.
CONFUSION_SHARE = 0.1
# Calibration error (ECE) above this: the shown probabilities are off by more than 5 points on average.
ECE_CAVEAT = 0.05
# Risk-coverage rows shown: the accuracy when answering only the most confident share of photos.
COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.5)


def model_card(manifest: Manifest, report: Mapping[str, Any] | None, dataset: Mapping[str, Any] | None = None,
               recall_floor: float = RECALL_FLOOR) -> dict[str, Any]:
    """The card of one version. ``report`` is its report.json (None: a version without one, e.g. the
    pretrained model); ``dataset`` the dataset's report (``Dataset.report()``; None: not at hand)."""
    evaluation = _evaluation(manifest, report or {})
    card = {
        "card_format": CARD_FORMAT,
        # version and sha256 are None in a card written before the registry numbered the version
        # (trainer/publish/publisher.py); the API fills them from the stored manifest (with_version)
        "model": {"name": manifest.name, "version": manifest.version or None, "created_at": manifest.created_at,
                  "backbone": manifest.backbone, "labels": len(manifest.labels), "sha256": manifest.sha256 or None,
                  "kind": manifest.source.get("kind", "")},
        "data": _data(manifest, report or {}, dataset),
        "training": _training(manifest, report or {}),
        "evaluation": evaluation,
    }
    card["limitations"] = limitations(card, recall_floor)
    return card


def with_version(card: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """A stored card with the registry's number and checksum of its version (set after the card was written)."""
    return {**card, "model": {**card["model"], "version": manifest.version, "sha256": manifest.sha256}}


# ----------------------------------------------------------------------------------------------- data
def _data(manifest: Manifest, report: Mapping[str, Any], dataset: Mapping[str, Any] | None) -> dict[str, Any]:
    source = manifest.source
    lineage = {k: source[k] for k in ("kind", "via", "job_id", "dataset_id", "dataset_name", "search")
               if source.get(k) is not None}
    base = source.get("base")
    lineage["base"] = base if isinstance(base, dict) else report.get("base", base)
    if dataset is None:  # counts from the report: val/test per class, train in all
        counts = {name: {c: v.get("support", 0) for c, v in split.get("per_class", {}).items()}
                  for name, split in report.get("splits", {}).items()}
        totals = {name: sum(c.values()) for name, c in counts.items()}
        if "train_images" in manifest.metrics:
            totals = {"train": int(manifest.metrics["train_images"]), **totals}
        return {"dataset_id": source.get("dataset_id"), "dataset_name": source.get("dataset_name") or None,
                "classes": list(manifest.labels), "counts": counts, "totals": totals, "duplicates": None,
                "warnings": [], "split_reason": "", "lineage": lineage}
    counts = {split: dict(per_class) for split, per_class in dataset.get("counts", {}).items()}
    groups = dataset.get("duplicates", [])
    parent = dataset.get("parent") or dataset.get("lineage")
    if parent:
        lineage["dataset_parent"] = parent
    return {
        "dataset_id": dataset.get("id"), "dataset_name": dataset.get("name"),
        "classes": list(dataset.get("classes", manifest.labels)), "counts": counts,
        "totals": {split: sum(c.values()) for split, c in counts.items()},
        "duplicates": {"exact_groups": sum(1 for g in groups if g.get("kind") == "exact"),
                       "near_groups": sum(1 for g in groups if g.get("kind") == "near"),
                       "files": sum(len(g.get("paths", [])) for g in groups)},
        "warnings": list(dataset.get("warnings", [])), "split_reason": dataset.get("split_reason", ""),
        "lineage": lineage,
    }


# ------------------------------------------------------------------------------------------- training
def _training(manifest: Manifest, report: Mapping[str, Any]) -> dict[str, Any]:
    m = manifest.metrics
    history = report.get("history", [])
    epochs: dict[str, int] = {}
    for row in history:
        epochs[row.get("stage", "")] = epochs.get(row.get("stage", ""), 0) + 1
    stages = [{"stage": r.get("stage"), "kept": r.get("kept"), "epochs": epochs.get(r.get("stage", ""), 0),
               "best_epoch": r.get("best_epoch"), "best_val_accuracy": r.get("best_val_accuracy"),
               "reason": r.get("reason", "")} for r in m.get("stages", [])]
    return {
        "spec": report.get("spec") or manifest.source.get("spec"),
        "stages": stages, "chosen_stage": m.get("best_stage"), "chosen_reason": m.get("best_stage_reason"),
        "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epochs_run", len(history) or None),
        "wall_s": m.get("wall_s"), "train_images": m.get("train_images"), "images_per_s": m.get("images_per_s"),
        "warnings": list(m.get("warnings", [])),
    }


# ----------------------------------------------------------------------------------------- evaluation
def _evaluation(manifest: Manifest, report: Mapping[str, Any]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for name, s in report.get("splits", {}).items():
        if not s.get("images"):
            continue
        lo, hi = wilson_interval(s["accuracy"] * s["images"], s["images"])
        splits[name] = {"images": s["images"], "accuracy": s["accuracy"], "accuracy_ci95": [lo, hi],
                        "macro_f1": s.get("macro_f1"), "loss": s.get("loss"), "ece": s.get("ece")}
    if not splits:  # no report (e.g. the pretrained model): what the manifest measured, if anything
        for name in ("val", "test"):
            acc, n = manifest.metrics.get(f"{name}_accuracy"), manifest.metrics.get(f"{name}_images")
            if isinstance(acc, int | float) and isinstance(n, int) and n > 0:
                splits[name] = {"images": n, "accuracy": acc, "accuracy_ci95": list(wilson_interval(acc * n, n)),
                                "macro_f1": None, "loss": None, "ece": None}
    held = "test" if "test" in splits else ("val" if "val" in splits else None)
    held_split = report.get("splits", {}).get(held or "", {})
    calibration = report.get("calibration")
    return {
        "confidence_level": CONFIDENCE,
        "held_out": held, "splits": splits,
        "per_class": held_split.get("per_class"),
        "confusion": {"split": held, "labels": report.get("labels", manifest.labels),
                      "matrix": held_split["confusion_matrix"]} if "confusion_matrix" in held_split else None,
        "calibration": None if calibration is None else {
            "split": calibration.get("split"), "temperature": report.get("temperature", manifest.temperature),
            "ece_before": calibration.get("ece_before"), "ece_after": calibration.get("ece_after"),
            "applied": calibration.get("applied"), "reason": calibration.get("reason", "")},
        "risk_coverage": _risk_coverage(manifest, report),
        "selective": None if manifest.selective is None else {
            k: manifest.selective.get(k) for k in ("target_accuracy", "min_confidence", "reachable")},
        "ood": manifest.ood,
    }


def _risk_coverage(manifest: Manifest, report: Mapping[str, Any]) -> dict[str, Any] | None:
    """A few rows of the curve: the accuracy when answering only the most confident ``coverage`` share."""
    curves = report.get("risk_coverage") or {}
    split = "test" if curves.get("test") else "val"
    curve = curves.get(split) or (manifest.selective or {}).get("risk_coverage")
    if not curve:
        return None
    if not curves.get(split):
        split = "val"  # the manifest's curve is the validation one
    rows: list[dict[str, float]] = []
    for target in COVERAGES:
        # rows run from full coverage down: the last row still answering at least ``target`` of the photos
        fits = [row for row in curve if row[0] >= target - 1e-9]
        if fits:
            cov, acc, conf = fits[-1]
            if not rows or rows[-1]["coverage"] != cov:
                rows.append({"coverage": cov, "accuracy": acc, "min_confidence": conf})
    return {"split": split, "points": rows}


# ---------------------------------------------------------------------------------------- limitations
def limitations(card: Mapping[str, Any], recall_floor: float = RECALL_FLOOR) -> list[dict[str, str]]:
    """What the version must not be trusted with, each stated from the card's own numbers."""
    out: list[dict[str, str]] = []
    ev, data = card["evaluation"], card["data"]
    held = ev["held_out"]
    if held is None:
        out.append({"kind": "unmeasured", "text": "no held-out evaluation is stored for this version: its accuracy "
                                                  "on your photos is unknown"})
    elif held == "val":
        out.append({"kind": "no_test_split", "text": "no test split: the accuracy is measured on the validation "
                                                     "photos that also chose the best epoch and stage (optimistic)"})
    out += _weak_splits(card)
    if ev["per_class"]:
        for name, c in ev["per_class"].items():
            if c.get("support") and c["recall"] < recall_floor:
                found = round(c["recall"] * c["support"])
                out.append({"kind": "low_recall", "text": f"class {name!r}: recall {c['recall']:.2f} on {held} "
                            f"({found} of {c['support']} found), below {recall_floor:.2f}"})
    if ev["confusion"]:
        labels, matrix = ev["confusion"]["labels"], ev["confusion"]["matrix"]
        for i, row in enumerate(matrix):
            total = sum(row)
            for j, count in enumerate(row):
                if i != j and count and total and count / total >= CONFUSION_SHARE:
                    out.append({"kind": "confused", "text": f"{labels[i]!r} photos taken for {labels[j]!r}: "
                                f"{count} of {total} ({count / total:.0%}) on {held}"})
    out += _calibration_and_answers(ev)
    out.append(_ood_caveat(ev["ood"], card["model"]["labels"]))
    dup = data.get("duplicates")
    if dup and (dup["exact_groups"] or dup["near_groups"]):
        out.append({"kind": "duplicates", "text": f"the dataset held {dup['exact_groups']} exact and "
                    f"{dup['near_groups']} near-duplicate groups ({dup['files']} files): kept within one split, "
                    "but a near copy the check missed would flatter the held-out numbers"})
    return out


def _weak_splits(card: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    counts = card["data"]["counts"]
    for name, s in card["evaluation"]["splits"].items():
        per_class = counts.get(name) or {}
        warning = weak_split_warning(name, per_class, s["accuracy"]) if per_class else None
        if warning:
            chose = " (the best epoch and stage were chosen on it)" if name == "val" else ""
            out.append({"kind": "weak_validation", "text": warning + chose})
    return out


def _calibration_and_answers(ev: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    cal = ev["calibration"]
    if cal and cal.get("ece_after") is not None and cal["ece_after"] > ECE_CAVEAT:
        out.append({"kind": "calibration", "text": f"probabilities are off by {cal['ece_after']:.3f} on average "
                    f"(ECE on {cal['split']}, after calibration): read them as rough"})
    if cal and cal.get("applied") is False and cal.get("reason"):
        out.append({"kind": "calibration", "text": f"calibration not applied: {cal['reason']}"})
    sel = ev["selective"]
    if sel and sel.get("target_accuracy") is not None and sel.get("min_confidence") is None:
        out.append({"kind": "selective", "text": f"target accuracy {sel['target_accuracy']} is not reached on "
                                                 "validation at any confidence: there is no default confidence floor"})
    return out


def _ood_caveat(ood: Mapping[str, Any] | None, labels: int) -> dict[str, str]:
    if not ood:
        return {"kind": "ood", "text": f"no 'none of these' score: every photo is answered with one of its {labels} "
                                       "classes, however unlike the training photos it is"}
    measured = f"; on test it keeps {ood['test_recall']:.2f}" if ood.get("test_recall") is not None else ""
    return {"kind": "ood", "text": f"'none of these' flags photos unlike its {ood.get('fitted_on', 'training photos')}"
            f"; its threshold keeps {ood.get('val_recall', 0):.2f} of validation photos (target "
            f"{ood.get('target_recall', 0):.2f}){measured}. How many unfamiliar photos it catches was not measured "
            "on this dataset: a photo close to a known class (a similar object or scene) can still get a class"}
