"""Temperature scaling (Guo et al. 2017) and expected calibration error.

``calibrate`` fits log T on the validation logits with L-BFGS (log space: T stays positive and
the optimiser sees a smooth, convex-in-practice function) over a wide range, and applies T only
when it lowers the validation NLL. When the NLL keeps falling towards the edge of the range (a
perfectly separated validation set: T -> 0 makes every answer certain), there is no optimum to
take and T stays 1: a bound is not a calibration.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
# log T is searched in [LOG_T_MIN, LOG_T_MAX] (T from ~0.002 to ~400): far wider than any real
# temperature, so a result on an edge means "no optimum", never "the optimum was cut off".
LOG_T_MIN, LOG_T_MAX = -6.0, 6.0
EDGE = 0.5  # an optimum within this (in log T) of an edge counts as the edge


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins: the reliability
    diagram's bins, so the ECE a report shows is the one its diagram draws.

    (torchmetrics' ``multiclass_calibration_error`` bins [lo, hi) and gives confidence 1.0 a bin of its
    own; with the report's (lo, hi] bins the two differ whenever a confidence sits on an edge.)
    """
    n = len(labels)
    if n == 0:
        return 0.0
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(probs, labels, bins))


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per-bin count, mean confidence and accuracy (for the reliability diagram)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        out.append({"lo": float(lo), "hi": float(hi), "count": n,
                    "confidence": float(conf[in_bin].mean()) if n else 0.0,
                    "accuracy": float(correct[in_bin].mean()) if n else 0.0})
    return out


@dataclass
class Calibration:
    """The fitted temperature and whether it is used (``temperature`` is 1.0 when not applied)."""

    temperature: float
    fitted: float  # the optimiser's T, applied or not
    applied: bool
    reason: str
    val_nll_before: float
    val_nll_after: float  # with ``temperature`` (equal to before when not applied)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nll(logits: torch.Tensor, labels: torch.Tensor, log_t: float) -> float:
    return float(F.cross_entropy(logits / math.exp(log_t), labels))


def fit_log_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """log T minimising the NLL of softmax(logits / T), within [LOG_T_MIN, LOG_T_MAX].

    A coarse grid picks the basin (L-BFGS alone can wander on flat, tiny validation sets), then
    L-BFGS with a strong-Wolfe line search polishes it.
    """
    grid = torch.linspace(LOG_T_MIN, LOG_T_MAX, 49)
    start = float(grid[int(torch.tensor([_nll(logits, labels, float(g)) for g in grid]).argmin())])
    log_t = torch.tensor([start], requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    value = float(log_t.detach())
    if not math.isfinite(value):
        return start
    return min(max(value, LOG_T_MIN), LOG_T_MAX)


def calibrate(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """Fit T on validation logits; keep it only when it is an interior optimum that lowers the NLL."""
    if len(labels) == 0:
        return Calibration(1.0, 1.0, False, "no validation images", 0.0, 0.0)
    logits = logits.detach().float()
    before = _nll(logits, labels, 0.0)
    log_t = fit_log_temperature(logits, labels)
    fitted, after = math.exp(log_t), _nll(logits, labels, log_t)
    if log_t <= LOG_T_MIN + EDGE or log_t >= LOG_T_MAX - EDGE:
        why = ("validation NLL keeps falling as T -> 0 (every validation image is already right and "
               "sure): no optimum to fit, T stays 1") if log_t < 0 else \
              ("validation NLL keeps falling as T grows (predictions no better than uniform): T stays 1")
        return Calibration(1.0, fitted, False, why, before, before)
    if not after < before:
        return Calibration(1.0, fitted, False, f"T={fitted:.3f} does not lower validation NLL "
                           f"({after:.4f} vs {before:.4f}): T stays 1", before, before)
    return Calibration(fitted, fitted, True, f"T={fitted:.3f} lowers validation NLL {before:.4f} -> {after:.4f}",
                       before, after)


def calibration_metrics(calibration: Calibration, outputs: dict[str, Any]) -> dict[str, Any]:
    """ECE before/after on held-out data (the test split when there is one, else validation, which
    the temperature was fitted on: then the "after" is optimistic, and ``ece_split`` says so)."""
    split = "test" if "test" in outputs else "val"
    out = outputs[split]
    t = calibration.temperature
    return {
        "temperature": t, "temperature_fitted": calibration.fitted, "calibration_applied": calibration.applied,
        "calibration_reason": calibration.reason,
        "val_nll_before": calibration.val_nll_before, "val_nll_after": calibration.val_nll_after,
        "ece_split": split,
        "ece_before": expected_calibration_error(out.logits.float().softmax(1), out.labels),
        "ece_after": expected_calibration_error((out.logits.float() / t).softmax(1), out.labels),
    }
