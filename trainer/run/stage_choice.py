"""Which of two stages' best weights to keep, decided on the same validation photos with stated confidence.

Validation accuracies alone decide nothing on a small split (8 photos: one photo is 12 points). The
two stages are compared *paired*, photo by photo: ``b`` photos only the later (more complex) stage
gets right, ``c`` only the earlier one does. Under "equally good" each discordant photo is a fair
coin, so the exact McNemar test is a binomial test of ``b`` out of ``b + c`` (scipy; statsmodels'
``mcnemar(exact=True)`` computes the same number). The later stage is kept only when it is better
at one-sided ``ALPHA``; otherwise the simpler, earlier stage stays, and the reason gives the counts
and the p-value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binomtest

ALPHA = 0.05  # the later stage must be better with 95 % confidence


@dataclass(frozen=True)
class Paired:
    later_only: int  # photos only the later stage gets right
    earlier_only: int  # photos only the earlier stage gets right
    images: int
    p_value: float  # one-sided exact McNemar: "the later stage is better"

    @property
    def later_better(self) -> bool:
        return self.p_value < ALPHA


def paired_comparison(later_pred: torch.Tensor, earlier_pred: torch.Tensor, labels: torch.Tensor) -> Paired:
    """Exact McNemar of two stages' predicted classes on the same photos."""
    later_ok, earlier_ok = later_pred == labels, earlier_pred == labels
    b = int((later_ok & ~earlier_ok).sum())
    c = int((earlier_ok & ~later_ok).sum())
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    return Paired(b, c, len(labels), float(p))


def describe(later: str, earlier: str, paired: Paired) -> str:
    verdict = (f"{later} is better with {1 - ALPHA:.0%} confidence" if paired.later_better else
               f"not better with {1 - ALPHA:.0%} confidence: the simpler {earlier} is kept")
    return (f"on the same {paired.images} val photos {later} alone is right on {paired.later_only}, {earlier} "
            f"alone on {paired.earlier_only} (exact McNemar, one-sided p={paired.p_value:.3f}): {verdict}")
