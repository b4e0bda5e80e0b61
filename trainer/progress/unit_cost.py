"""What the run's units cost on this machine now, timed in a fraction of a second before the run needs them.

The backbone's forward pass (:func:`forward_s`, "the yardstick") is timed on a few random images as
soon as the model is built, before the photos are decoded: until the feature extraction's own
batches are timed, the ETA and the fraction would otherwise rest on a prior that leans slow (a busy
machine's), which left a first job's fraction 0.1-0.15 behind the clock while its photos decoded.
Every cost the ETA expects is a measured multiple of it (trainer/progress/eta_plan.py): the cost per
image depends on the batch size (on a 2-core CPU 0.016 s at 16 images, 0.026 s at 64), so a feature
batch or a training step is expected at the ratio an earlier job measured against the same yardstick.

The linear probe's head step (:func:`head_step_s`):

A step of the head on cached features (a ``Linear`` forward, the loss, backward, the optimizer's
update) does almost no arithmetic: its cost is the framework's per-call overhead and how the
machine's scheduler treats a busy process, which no forward pass predicts (one job measured 1.1 ms
a step beside a 28 ms forward pass on a quiet 2-core CPU, another 30-60 ms beside 80-180 ms under
load 7-9). So it is timed: a few steps on random features of the head's shape with the run's
optimizer, while the backbone decodes and extracts features, so the probe's epochs are expected at
today's cost from the first feature batch on (docs/benchmarks.md, "ETA and progress against the clock").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

STEPS = 12  # timed steps (after one warm-up step)
BUDGET_S = 0.5  # at most this long, however slow the machine is today
FORWARD_IMAGES, FORWARD_REPEATS = 4, 3  # timed batches of the backbone (after one warm-up batch)


def forward_s(model: nn.Module, crop: int, device: torch.device, images: int = FORWARD_IMAGES,
              repeats: int = FORWARD_REPEATS) -> float:
    """Seconds per image of ``model``'s forward pass (eval, no gradients) on random ``crop`` px images:
    the fastest of ``repeats`` batches (one batch alone varied 1.6x between jobs on a quiet machine: a
    scheduler's hiccup is not the machine's speed). The model's mode and the global random state are
    left as they were."""
    was_training = model.training
    batch = torch.randn(images, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    batch = batch.to(device).contiguous(memory_format=torch.channels_last)
    model.eval()
    try:
        with torch.no_grad():
            model(batch)  # warm-up: allocations, kernel selection
            sync(device)
            times = []
            for _ in range(max(1, repeats)):
                started = time.perf_counter()
                model(batch)
                sync(device)
                times.append(time.perf_counter() - started)
            return min(times) / images
    finally:
        model.train(was_training)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def head_step_s(in_features: int, classes: int, batch_size: int,
                optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
                steps: int = STEPS, budget_s: float = BUDGET_S) -> float | None:
    """Median seconds of a training step of a fresh ``Linear(in_features, classes)`` on a random batch
    (None when not even two steps fit the budget). The run's own head is left untouched."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the run's random state is not touched by the timing
        head = nn.Linear(in_features, max(2, classes))
    opt = optimizer(list(head.parameters()))
    feats = torch.randn(batch_size, in_features, generator=gen)
    labels = torch.randint(0, max(2, classes), (batch_size,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(steps + 1):
        started = time.perf_counter()
        loss = loss_fn(head(feats), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # the real loop reads the loss each step (trainer/run/loops.py)
        ended = time.perf_counter()
        if i > 0:  # the first step carries one-off allocation
            times.append(ended - started)
        if ended > deadline:
            break
    return statistics.median(times) if len(times) >= 2 else None
