"""LR range test (Smith 2015) on the cached features: cheap, because only the head trains.

The LR grows exponentially from ``start`` to ``end`` over ``steps`` mini-batches; the pick is the
LR of the lowest smoothed loss divided by 10 (a step back from the edge of divergence). The head's
weights are restored afterwards.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def lr_range_test(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
                  make_optimizer: Callable[[list[nn.Parameter], float], torch.optim.Optimizer],
                  loss_fn: nn.Module, batch_size: int, seed: int,
                  start: float = 1e-6, end: float = 1.0, steps: int = 100) -> float:
    saved = copy.deepcopy(head.state_dict())
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(list(head.parameters()), start)
    factor = (end / start) ** (1 / max(1, steps - 1))
    smooth, best, best_lr = 0.0, math.inf, start
    lrs, losses = [], []
    perm = torch.randperm(len(features), generator=gen)
    pos = 0
    for step in range(steps):
        lr = start * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        if pos + batch_size > len(features):
            perm, pos = torch.randperm(len(features), generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        loss = loss_fn(head(features[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        smooth = 0.9 * smooth + 0.1 * value if step else value
        debiased = smooth / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(debiased)
        if debiased < best:
            best, best_lr = debiased, lr
        if step > 10 and (debiased > 4 * best or not math.isfinite(debiased)):
            break
    head.load_state_dict(saved)
    picked = best_lr / 10
    log.info("LR range test: lowest loss %.3f at lr %.2e -> picked %.2e", best, best_lr, picked)
    return picked
