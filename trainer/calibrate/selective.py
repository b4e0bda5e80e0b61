"""Selective answers: how accurate the model is when it answers only above a confidence (risk-coverage).

Geifman and El-Yaniv, "Selective Classification for Deep Neural Networks", 2017: sort the photos by
the calibrated top probability; answering only those at or above a confidence ``c`` covers a share of
them (coverage) at some accuracy. The curve is measured on validation (and test when there is one);
when the user states a target accuracy, the version's default confidence floor is the lowest ``c``
from which the validation accuracy stays at or above the target for every stricter floor too (a
floor that only reaches the target by a lucky dip would not hold on new photos).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

CURVE_POINTS = 50  # the manifest keeps at most this many points (the full curve is in report.json)


def confidences(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(top probability after temperature scaling, whether the top class is right) per photo."""
    probs = (logits.float() / temperature).softmax(1)
    conf, pred = probs.max(1)
    return conf.numpy().astype(np.float64), (pred == labels).numpy()


def full_curve(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Rows ``[coverage, accuracy, confidence]``, one per distinct confidence, coverage falling.

    A row's accuracy is over the photos with confidence >= its confidence (ties answered together).
    """
    n = len(conf)
    if n == 0:
        return np.zeros((0, 3))
    order = np.argsort(-conf, kind="stable")
    conf_sorted, right = conf[order], correct[order].astype(np.float64)
    answered = np.arange(1, n + 1)
    accuracy = np.cumsum(right) / answered
    last_of_tie = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]  # the prefix ends after a whole tie
    rows = np.stack([answered / n, accuracy, conf_sorted], axis=1)[last_of_tie]
    return rows[::-1]


def thin(curve: np.ndarray, points: int = CURVE_POINTS) -> list[list[float]]:
    """At most ``points`` rows, evenly spread, keeping the first (full coverage) and the last."""
    if len(curve) > points:
        curve = curve[np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))]
    return [[round(float(c), 6) for c in row] for row in curve]


def floor_for(curve: np.ndarray, target: float) -> np.ndarray | None:
    """The row of the lowest confidence from which accuracy stays >= ``target``; None when none does."""
    if len(curve) == 0:
        return None
    # curve runs from full coverage (lowest confidence) to the most confident photos: a row holds
    # when it and every row after it (stricter floors) reach the target.
    holds = np.minimum.accumulate(curve[::-1, 1] >= target - 1e-12)[::-1]
    return curve[int(np.argmax(holds))] if holds.any() else None


def at_floor(conf: np.ndarray, correct: np.ndarray, floor: float) -> dict[str, float | None]:
    answered = conf >= floor
    return {"coverage": float(answered.mean()) if len(conf) else None,
            "accuracy": float(correct[answered].mean()) if answered.any() else None}


def selective_summary(outputs: dict[str, Any], temperature: float,
                      target_accuracy: float | None) -> tuple[dict[str, Any], dict[str, list[list[float]]]]:
    """(the manifest's ``selective`` key, the full curve per split for the report).

    ``outputs`` maps a split name to an object with ``logits`` and ``labels`` (trainer/run/result.py).
    """
    curves: dict[str, list[list[float]]] = {}
    measured: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in ("val", "test"):
        if name in outputs and len(outputs[name].labels):
            conf, correct = confidences(outputs[name].logits, outputs[name].labels, temperature)
            curve = full_curve(conf, correct)
            measured[name] = (conf, correct, curve)
            curves[name] = [[float(c) for c in row] for row in curve]
    summary: dict[str, Any] = {
        "risk_coverage": thin(measured["val"][2]) if "val" in measured else [],
        "split": "val", "images": len(measured["val"][0]) if "val" in measured else 0,
        "target_accuracy": target_accuracy, "min_confidence": None,
    }
    if "test" in measured:
        summary["test_risk_coverage"] = thin(measured["test"][2])
    if target_accuracy is not None and "val" in measured:
        row = floor_for(measured["val"][2], target_accuracy)
        summary["reachable"] = row is not None
        if row is not None:
            summary["min_confidence"] = float(row[2])
            summary["val_at_min_confidence"] = {"coverage": float(row[0]), "accuracy": float(row[1])}
            if "test" in measured:
                summary["test_at_min_confidence"] = at_floor(measured["test"][0], measured["test"][1], float(row[2]))
    return summary, curves
