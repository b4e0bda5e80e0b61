"""Out-of-fold logits of the linear probe over train+val, so a small val split is not all the evidence.

The probe trains on cached features in milliseconds, so it can be refitted K times: each fold of
train+val (stratified, seeded) is scored by a probe trained the same way (same optimizer, learning
rate, schedule and epoch count as the run's probe) on the other folds. The temperature is then
fitted on every train+val photo's out-of-fold logits instead of on a handful of val photos, and
the probe's cross-validated accuracy is reported next to its val accuracy.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from core.jobspec import TrainSpec
from trainer.run.loops import train_features_epoch
from trainer.run.optim import make_optimizer
from trainer.run.schedulers import build_scheduler, is_per_epoch

MAX_FOLDS = 5


@dataclass(frozen=True)
class CrossFit:
    logits: torch.Tensor  # out-of-fold logits, one row per train+val photo
    labels: torch.Tensor
    folds: int

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).float().mean())


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[int]:
    """Fold number per item: each class dealt round-robin over the folds after a seeded shuffle."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels.tolist()):
        by_class[int(label)].append(i)
    out = [0] * len(labels)
    for label, members in sorted(by_class.items()):
        random.Random(f"{seed}:{label}").shuffle(members)
        for k, i in enumerate(members):
            out[i] = k % folds
    return out


def fit_probe(spec: TrainSpec, feats: torch.Tensor, labels: torch.Tensor, classes: int, lr: float, epochs: int,
              seed: int) -> nn.Linear:
    """A fresh linear head trained as the run's probe was (its optimizer, lr, schedule, epochs)."""
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], classes)
    optimizer = make_optimizer(spec, [{"params": list(head.parameters()), "lr": lr}])
    steps = -(-len(feats) // spec.batch_size)
    scheduler = build_scheduler(spec.scheduler, optimizer, steps, epochs, spec.warmup_epochs, False)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_features_epoch(head, feats, labels, optimizer, scheduler, loss_fn, spec.batch_size, gen, lambda: None)
        if is_per_epoch(scheduler):
            scheduler.step(0.0)  # no held-out metric inside a fold: the plateau scheduler sees a flat curve
    return head.eval()


def cross_fit_probe(spec: TrainSpec, feats: torch.Tensor, labels: torch.Tensor, classes: int, lr: float,
                    epochs: int) -> CrossFit | None:
    """Out-of-fold probe logits over ``feats`` (train+val); None when a class has fewer than 2 photos."""
    smallest = int(torch.bincount(labels, minlength=classes).min())
    folds = min(MAX_FOLDS, smallest)
    if folds < 2:
        return None
    fold_of = torch.tensor(stratified_folds(labels, folds, spec.seed))
    logits = torch.zeros(len(labels), classes)
    for k in range(folds):
        held = fold_of == k
        head = fit_probe(spec, feats[~held], labels[~held], classes, lr, max(1, epochs), spec.seed + k)
        with torch.no_grad():
            logits[held] = head(feats[held]).float()
    return CrossFit(logits, labels.clone(), folds)
