""""None of these": an out-of-distribution score fitted on the training photos, carried inside the ONNX graph.

The score is the cosine k-nearest-neighbour distance (Sun et al., "Out-of-Distribution Detection with
Deep Nearest Neighbors", 2022) of a photo's pooled penultimate feature (what enters the classifier)
to a bank of L2-normalised training features: ``1 - (k-th largest cosine similarity)``, higher = less
like the training photos. In the graph it is a normalisation, one MatMul and a TopK: exact, no
approximation, and cheap next to the backbone (docs/benchmarks.md, "Honest answers", has the choice
against Mahalanobis, energy and the maximum softmax, and the bank's size).

The threshold is chosen on the validation split so that ``target_recall`` of its photos score at or
below it (kept); a photo above it is "unknown". :class:`WithScore` adds the ``ood_score`` output after
the network's own outputs (the contract in the service: logits, [features], ood_score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.run.labels import final_linear

log = logging.getLogger(__name__)

OOD_OUTPUT = "ood_score"
OOD_FILE = "ood.npz"
METHOD = "knn_cosine"
DEFAULT_RECALL = 0.95
DEFAULT_K = 1
# Bank bound: 2048 x 1280 fp32 is 10 MB in the ONNX file; a larger bank barely moved the far-case
# AUROC in the benchmark (docs/benchmarks.md, "Honest answers").
MAX_BANK = 2048


def normalise(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float32)
    unit: np.ndarray = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return unit


def knn_scores(bank: np.ndarray, feats: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """The numpy reference of the graph's score: 1 - k-th largest cosine similarity to ``bank`` rows."""
    queries = normalise(feats)
    out = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ bank.T
        out.append(1.0 - np.partition(sims, -k, axis=1)[:, -k])
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def threshold_at_recall(scores: np.ndarray, recall: float) -> float:
    """The smallest score that keeps (score <= threshold) at least ``recall`` of ``scores``."""
    if len(scores) == 0:
        raise ValueError("no validation scores to choose the threshold on")
    return float(np.quantile(scores.astype(np.float64), recall, method="higher"))


def choose_bank(labels: np.ndarray, limit: int = MAX_BANK, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` of the photos labelled ``labels``, every class in proportion (seeded)."""
    n = len(labels)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, round(limit * len(members) / n))
        picked.append(rng.choice(members, min(take, len(members)), replace=False))
    rows = np.concatenate(picked)
    if len(rows) > limit:  # rounding up in many classes
        rows = rng.choice(rows, limit, replace=False)
    return np.sort(rows)


@dataclass
class OodScorer:
    """A fitted score: the normalised bank, k, and the threshold chosen on validation."""

    bank: np.ndarray  # [n, d] float32, rows L2-normalised
    k: int
    threshold: float
    target_recall: float
    val_recall: float
    fitted_on: str  # what the bank holds, for the manifest
    extra: dict[str, Any] = field(default_factory=dict)  # test_recall, val_images, ...

    def score(self, feats: np.ndarray) -> np.ndarray:
        return knn_scores(self.bank, feats, self.k)

    def summary(self) -> dict[str, Any]:
        """The manifest's ``ood`` key (the service contract: method, threshold, target/val recall)."""
        return {"method": METHOD, "threshold": self.threshold, "target_recall": self.target_recall,
                "val_recall": self.val_recall, "k": self.k, "bank_size": len(self.bank),
                "feature_dim": int(self.bank.shape[1]), "fitted_on": self.fitted_on,
                "output": OOD_OUTPUT, "file": OOD_FILE, **self.extra}

    def save(self, path: Path) -> Path:
        np.savez(path, bank=self.bank, k=np.int64(self.k), threshold=np.float64(self.threshold))
        return path


def fit_scorer(train_feats: np.ndarray, val_feats: np.ndarray, target_recall: float = DEFAULT_RECALL,
               k: int = DEFAULT_K, fitted_on: str = "training split") -> OodScorer:
    """Bank = ``train_feats`` (already bounded by the caller), threshold at ``target_recall`` on ``val_feats``."""
    if len(train_feats) == 0:
        raise ValueError("no training features to fit the out-of-distribution score on")
    k = max(1, min(k, len(train_feats)))
    bank = normalise(train_feats)
    val_scores = knn_scores(bank, val_feats, k)
    threshold = threshold_at_recall(val_scores, target_recall)
    val_recall = float((val_scores <= threshold).mean())
    log.info("ood score: %s, k=%d, bank %d, threshold %.4f keeps %.3f of %d validation photos",
             METHOD, k, len(bank), threshold, val_recall, len(val_scores))
    return OodScorer(bank, k, threshold, target_recall, val_recall, fitted_on,
                     {"val_images": len(val_scores)})


def kept_share(scorer: OodScorer, feats: np.ndarray) -> float:
    """Share of ``feats`` the threshold keeps (in-distribution recall on a held-out split)."""
    return float((scorer.score(feats) <= scorer.threshold).mean()) if len(feats) else float("nan")


class WithScore(nn.Module):
    """``network``'s outputs plus ``ood_score``: the input of ``model``'s classifier scored against the bank.

    ``network`` is the model itself or its CAM wrapper (trainer/publish/cam.py); either way its classifier is
    ``model``'s last Linear (trainer/run/labels.py), whose input a forward hook hands to the score, so the
    backbone runs once. Non-strict ``torch.export`` runs the hook as plain Python, so it is traced.
    """

    def __init__(self, network: nn.Module, model: nn.Module, scorer: OodScorer) -> None:
        super().__init__()
        self.network = network
        self.bank: torch.Tensor
        self.register_buffer("bank", torch.from_numpy(np.ascontiguousarray(scorer.bank.T)).float())
        self.k = scorer.k
        self.head = final_linear(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: list[torch.Tensor] = []
        hook = self.head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            out = self.network(x)
        finally:  # the hook lives for one call: the model is used on after the export
            hook.remove()
        outputs = out if isinstance(out, tuple) else (out,)
        pooled = seen[-1].flatten(1)
        unit = nn.functional.normalize(pooled, dim=1, eps=1e-12)
        sims = unit @ self.bank
        nearest = sims.max(dim=1).values if self.k == 1 else sims.topk(self.k, dim=1).values[:, -1]
        return (*outputs, 1.0 - nearest)
