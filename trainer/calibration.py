"""Temperature scaling (Guo et al. 2017) and expected calibration error."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

ECE_BINS = 15
T_MIN, T_MAX = 0.25, 10.0


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    if len(labels) == 0:
        return 0.0
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (optimised in log space)."""
    if len(labels) == 0:
        return 1.0
    logits = logits.detach().float()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    t = float(log_t.detach().exp())
    if t != t:
        return 1.0
    # A perfectly separated (often tiny) validation set drives T towards 0; the bounds keep one
    # unlucky split from making the served model absurdly sure (or unsure) of itself.
    return min(max(t, T_MIN), T_MAX)
