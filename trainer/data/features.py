"""Frozen-backbone features: computed once per (backbone, split), so a linear probe trains in seconds.

The feature of an image is whatever enters the classifier (captured by a forward hook), so this
works for every catalogue backbone without knowing its architecture.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from models.manifest import Preprocessing
from trainer.data.pixels import CachedSplit, normalize

log = logging.getLogger(__name__)

_MEMORY: OrderedDict[tuple[str, str, bool], torch.Tensor] = OrderedDict()
_LIMIT = 12
_LOCK = threading.Lock()


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context on CPU (fp32 there is both faster and exact)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def extract(model: nn.Module, classifier: nn.Module, pixels: torch.Tensor, pre: Preprocessing,
            device: torch.device, batch_size: int = 64, flip: bool = False,
            should_stop: Callable[[], None] | None = None) -> torch.Tensor:
    """Features (fp32, CPU) of uint8 ``pixels`` [N,3,H,W] in eval mode; ``flip`` mirrors them first."""
    captured: list[torch.Tensor] = []
    hook = classifier.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(pixels), batch_size):
            if should_stop is not None:
                should_stop()
            batch = pixels[start:start + batch_size].to(device, non_blocking=True)
            if flip:
                batch = batch.flip(-1)
            x = normalize(batch, pre).contiguous(memory_format=torch.channels_last)
            with autocast(device):
                model(x)
            out.append(captured.pop().float().flatten(1).cpu())
    finally:
        hook.remove()
        model.train(was_training)
    if not out:
        return torch.zeros(0, classifier.in_features if isinstance(classifier, nn.Linear) else 0)
    return torch.cat(out)


def cached_features(base_key: str, model: nn.Module, classifier: nn.Module, split: CachedSplit,
                    pre: Preprocessing, device: torch.device, flip: bool = False,
                    should_stop: Callable[[], None] | None = None) -> torch.Tensor:
    """:func:`extract` memoised per process by (backbone key, split content key, flip)."""
    key = (base_key, split.key, flip)
    with _LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            _MEMORY.move_to_end(key)
            return hit
    feats = extract(model, classifier, split.eval, pre, device, flip=flip, should_stop=should_stop)
    if split.key:
        with _LOCK:
            _MEMORY[key] = feats
            while len(_MEMORY) > _LIMIT:
                _MEMORY.popitem(last=False)
    return feats


def clear_memory_cache() -> None:
    with _LOCK:
        _MEMORY.clear()
