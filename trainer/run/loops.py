"""Inner loops: one epoch over cached features, one epoch over images, and batched prediction."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from core.jobspec import TrainSpec
from models.manifest import Preprocessing
from trainer.data.features import autocast
from trainer.data.pixels import CachedSplit, normalize
from trainer.data.transforms import train_preset
from trainer.run.schedulers import is_per_epoch


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class AugmentedPixels(Dataset[tuple[torch.Tensor, int]]):
    """Cached uint8 training pixels through an augmentation preset (runs in DataLoader workers)."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, preset: Callable[[torch.Tensor], torch.Tensor]):
        self.pixels, self.labels, self.preset = pixels, labels, preset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.preset(self.pixels[i]), int(self.labels[i])


def train_features_epoch(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, optimizer: Any,
                         scheduler: Any, loss_fn: nn.Module, batch_size: int, generator: torch.Generator,
                         check: Callable[[], None]) -> EpochStats:
    head.train()
    start = time.perf_counter()
    perm = torch.randperm(len(feats), generator=generator)
    total, seen = 0.0, 0
    for i in range(0, len(feats), batch_size):
        check()
        idx = perm[i:i + batch_size]
        loss = loss_fn(head(feats[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not is_per_epoch(scheduler):
            scheduler.step()
        total += loss.item() * len(idx)
        seen += len(idx)
    return EpochStats(total / max(1, seen), seen, time.perf_counter() - start)


def train_images_epoch(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], pre: Preprocessing,
                       device: torch.device,
                       optimizer: Any, scheduler: Any, loss_fn: nn.Module, mix: Any,
                       prepare: Callable[[nn.Module], None], after_step: Callable[[], None],
                       check: Callable[[], None]) -> EpochStats:
    """One pass over the loader. ``prepare`` sets train/eval per module (frozen BN stays in eval)."""
    prepare(model)
    start = time.perf_counter()
    total = torch.zeros((), device=device)  # summed on device: no host sync per batch
    seen = 0
    for pixels, targets in loader:
        check()
        x = normalize(pixels.to(device, non_blocking=True), pre).contiguous(memory_format=torch.channels_last)
        y = targets.to(device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y)
        with autocast(device):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not is_per_epoch(scheduler):
            scheduler.step()
        after_step()
        total += loss.detach().float() * len(pixels)
        seen += len(pixels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return EpochStats(float(total) / max(1, seen), seen, time.perf_counter() - start)


@torch.no_grad()
def predict(model: nn.Module, pixels: torch.Tensor, pre: Preprocessing, device: torch.device,
            batch_size: int = 64, check: Callable[[], None] | None = None) -> torch.Tensor:
    """fp32 logits (CPU) of uint8 eval crops, model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(pixels), batch_size):
        if check is not None:
            check()
        x = normalize(pixels[i:i + batch_size].to(device), pre).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def val_loss_acc(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if len(labels) == 0:
        return 0.0, 0.0
    loss = float(F.cross_entropy(logits.float(), labels))
    acc = float((logits.argmax(1) == labels).float().mean())
    return loss, acc


class DeviceCropLoader:
    """Random resized crop + horizontal flip done on the GPU, for a whole batch at once (roi_align).

    On a GPU the step is fast enough that per-image CPU augmentation in worker processes would be
    the bottleneck on small datasets (workers restart every epoch); here the cached uint8 pixels
    live on the device and the CPU never touches a pixel. ``random=False`` gives the center crop.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int, crop: int, random: bool,
                 generator: torch.Generator, drop_last: bool, scale: tuple[float, float] = (0.25, 1.0)) -> None:
        self.pixels, self.labels = pixels, labels
        self.batch_size, self.crop, self.random, self.scale = batch_size, crop, random, scale
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _boxes(self, n: int, size: int) -> torch.Tensor:
        g = self.generator
        area = size * size * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, generator=g))
        log_ratio = (torch.rand(n, generator=g) * 2 - 1) * torch.log(torch.tensor(4 / 3))
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=size)
        h = (area / ratio).sqrt().clamp(max=size)
        x0 = torch.rand(n, generator=g) * (size - w)
        y0 = torch.rand(n, generator=g) * (size - h)
        return torch.stack([x0, y0, x0 + w, y0 + h], 1)

    def __iter__(self) -> Any:
        from torchvision.ops import roi_align

        n, size, device = len(self.labels), self.pixels.shape[-1], self.pixels.device
        # All of the epoch's randomness is drawn up front (CPU generator: reproducible) and moved in
        # one copy: a host->device copy per batch would stall the CPU until the GPU drained its queue.
        perm = torch.randperm(n, generator=self.generator)
        boxes = self._boxes(n, size)
        flips = torch.rand(n, generator=self.generator) < 0.5
        perm, boxes, flips = (t.to(device, non_blocking=True) for t in (perm, boxes, flips))
        for i in range(0, len(self) * self.batch_size, self.batch_size):
            idx = perm[i:i + self.batch_size]
            images = self.pixels[idx].float()
            if not self.random:  # exact center crop, as evaluation sees it
                lo = (size - self.crop) // 2
                yield images[:, :, lo:lo + self.crop, lo:lo + self.crop], self.labels[idx]
                continue
            count = images.shape[0]
            rois = torch.cat([torch.arange(count, device=device, dtype=torch.float32)[:, None],
                              boxes[i:i + count]], 1)
            out = roi_align(images, rois, output_size=self.crop, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            out = torch.where(flips[i:i + count][:, None, None, None], out.flip(-1), out)
            yield out, self.labels[idx]


def ema_model(model: nn.Module, steps_per_epoch: int) -> AveragedModel:
    # Average over about one epoch of steps: short runs on small data have few steps.
    decay = min(0.999, max(0.5, 1.0 - 1.0 / max(1, steps_per_epoch)))
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def workers_for(spec: TrainSpec, device: torch.device) -> int:
    if multiprocessing.current_process().daemon:
        return 0  # e.g. a Celery prefork child: daemonic processes may not start DataLoader workers
    if isinstance(spec.num_workers, int):
        return spec.num_workers
    # On CPU the augmentation costs ~1% of a train step, and workers would steal the cores.
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


def drops_last_batch(train_images: int, spec: TrainSpec) -> bool:
    """Whether an epoch leaves out its last, partial batch: not with frozen BatchNorm, which trains on
    batches of any size (the ETA counts a partial batch at its images, trainer/progress/eta_plan.py)."""
    return train_images > spec.batch_size and not spec.freeze_bn


def train_loader(split: CachedSplit, spec: TrainSpec, pre: Preprocessing,
                 device: torch.device) -> DataLoader[Any] | DeviceCropLoader:
    assert split.train is not None
    drop = drops_last_batch(len(split), spec)
    if device.type == "cuda" and spec.augment in ("none", "light") and not isinstance(spec.num_workers, int):
        return DeviceCropLoader(split.train.to(device), split.labels.to(device), spec.batch_size, pre.crop,
                                spec.augment == "light", torch.Generator(), drop)
    data = AugmentedPixels(split.train, split.labels, train_preset(spec.augment, pre.crop))
    workers = workers_for(spec, device)
    return DataLoader(data, batch_size=spec.batch_size, shuffle=True, num_workers=workers,
                      generator=torch.Generator(), drop_last=drop, pin_memory=device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if workers else None)
