"""The evaluation report saved beside every trained version: JSON numbers plus PNG figures.

Every figure is drawn from the same numbers written to report.json, so they cannot disagree.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Figures without pyplot: no GUI backend to choose (workers have no display), no global state to close.
from matplotlib.figure import Figure

from trainer.calibrate.selective import selective_summary
from trainer.publish.evaluate import classification_metrics

if TYPE_CHECKING:
    from trainer.run.engine import TrainingResult

log = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "confusion_matrix.json", "confusion_matrix.png", "reliability.png",
                "curves.png", "misclassified.json", "risk_coverage.png")


def build_report(result: TrainingResult) -> dict[str, Any]:
    """Numbers for report.json: per split, with the fitted temperature applied, plus the history."""
    splits = {}
    for name, out in result.outputs.items():
        splits[name] = classification_metrics(out.logits, out.labels, result.labels, result.temperature, out.paths)
    val = result.outputs["val"]
    uncalibrated = classification_metrics(val.logits, val.labels, result.labels, 1.0, val.paths)
    held_name = "test" if "test" in result.outputs else "val"
    held_out = result.outputs[held_name]
    held_raw = classification_metrics(held_out.logits, held_out.labels, result.labels, 1.0, held_out.paths)
    selective, curves = selective_summary(result.outputs, result.temperature, result.spec.target_accuracy)
    return {
        "labels": result.labels,
        "metrics": result.metrics,
        "temperature": result.temperature,
        "splits": splits,
        "val_uncalibrated": {"ece": uncalibrated["ece"], "loss": uncalibrated["loss"],
                             "reliability": uncalibrated["reliability"]},
        # ECE before/after temperature scaling on held-out data (test when present): see metrics.ece_split
        "calibration": {"split": held_name, "ece_before": held_raw["ece"], "ece_after": splits[held_name]["ece"],
                        "applied": result.metrics.get("calibration_applied", False),
                        "reason": result.metrics.get("calibration_reason", "")},
        "history": [h.as_dict() for h in result.history],
        # Accuracy when answering only at or above each calibrated confidence: [coverage, accuracy, confidence]
        "risk_coverage": curves,
        "selective": {k: v for k, v in selective.items() if not k.endswith("risk_coverage")},
        "ood": result.ood.summary() if result.ood is not None else None,
        "spec": result.spec.model_dump(mode="json"),
        "base": result.base,
    }


def write_report(result: TrainingResult, folder: Path) -> list[str]:
    """Write the report files into ``folder``; returns their names (for Manifest.files)."""
    folder.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    misclassified = {name: split["misclassified"] for name, split in report["splits"].items()}
    confusion = {name: {"labels": result.labels, "matrix": split["confusion_matrix"]}
                 for name, split in report["splits"].items()}
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    (folder / "confusion_matrix.json").write_text(json.dumps(confusion, indent=1))
    (folder / "misclassified.json").write_text(json.dumps(misclassified, indent=1))
    plot_confusion(confusion, folder / "confusion_matrix.png")
    plot_reliability(report, folder / "reliability.png")
    plot_curves(report["history"], folder / "curves.png")
    plot_risk_coverage(report, folder / "risk_coverage.png")
    return list(REPORT_FILES)


def plot_confusion(confusion: dict[str, Any], path: Path) -> None:
    splits = list(confusion)
    labels = confusion[splits[0]]["labels"]
    size = min(14.0, 2.5 + 0.45 * len(labels))
    fig = Figure(figsize=(size * len(splits), size))
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, name in zip(axes[0], splits, strict=True):
        matrix = confusion[name]["matrix"]
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{name} (rows: true, columns: predicted)")
        ticks = range(len(labels))
        ax.set_xticks(list(ticks), labels, rotation=90 if len(labels) > 6 else 0)
        ax.set_yticks(list(ticks), labels)
        if len(labels) <= 30:
            top = max(max(row) for row in matrix) or 1
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    ax.text(j, i, str(value), ha="center", va="center",
                            color="white" if value > top / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    curves = [("before (T=1)", report["val_uncalibrated"]),
              (f"after (T={report['temperature']:.2f})", report["splits"]["val"])]
    for name, data in curves:
        bins = [b for b in data["reliability"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-",
                label=f"{name}, ECE {data['ece']:.3f}")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("validation reliability")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_risk_coverage(report: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for name, curve in report["risk_coverage"].items():
        ax.plot([row[0] for row in curve], [row[1] for row in curve], label=name)
    floor = report["selective"].get("val_at_min_confidence")
    if floor:
        ax.plot([floor["coverage"]], [floor["accuracy"]], "ko",
                label=f"min_confidence {report['selective']['min_confidence']:.2f}")
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("accuracy of the answers")
    ax.set_title("risk-coverage")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy", color="C2")
    for prev, cur in itertools.pairwise(history):
        if prev["stage"] != cur["stage"]:  # stage boundary, e.g. probe -> fine-tuning
            for ax in (loss_ax, acc_ax):
                ax.axvline(cur["epoch"] - 0.5, color="grey", linestyle=":", linewidth=1)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend()
    loss_ax.set_title("loss")
    acc_ax.set_title("validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
