"""Put a trained model's outputs in a given label order (the order the target model serves)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from trainer.run.engine import TrainingResult


def final_linear(model: nn.Module) -> nn.Linear:
    """The classifier: the last Linear layer of the catalogue's architectures."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no Linear classifier to reorder")
    return linears[-1]


def reorder_labels(result: TrainingResult, order: list[str]) -> TrainingResult:
    """``result`` with output i meaning ``order[i]``: classifier rows, kept logits and labels permuted.

    ``order`` must hold the same labels as ``result.labels``. The model's predictions do not change,
    only the index each label answers at, so a caller of the served model keeps its meaning.
    """
    if sorted(order) != sorted(result.labels):
        raise ValueError(f"cannot reorder labels {result.labels} to {order}: not the same set")
    if order == result.labels:
        return result
    perm = torch.tensor([result.labels.index(name) for name in order])  # new index -> old index
    inverse = torch.argsort(perm)  # old index -> new index
    head = final_linear(result.model)
    with torch.no_grad():
        head.weight.copy_(head.weight[perm])
        if head.bias is not None:
            head.bias.copy_(head.bias[perm])
    for out in result.outputs.values():
        out.logits = out.logits[:, perm]
        out.labels = inverse[out.labels]
    result.labels = list(order)
    return result
