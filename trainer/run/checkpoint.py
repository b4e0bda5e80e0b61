"""Per-epoch training checkpoints, written atomically (temp file + os.replace) so a crash mid-write
leaves the previous checkpoint intact."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from core.fsutil import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    path = folder / CHECKPOINT_FILE
    atomic_write(path, lambda fh: torch.save(state, fh))
    return path


def load_checkpoint(folder: Path | None) -> dict[str, Any] | None:
    if folder is None or not (folder / CHECKPOINT_FILE).is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        return state
    except (OSError, RuntimeError, EOFError) as exc:
        log.warning("checkpoint in %s is unreadable (%s); starting from scratch", folder, exc)
        return None


def spec_fingerprint(spec: Any, dataset_key: str) -> str:
    """What a checkpoint must match to be resumed: the spec and the data (by content key)."""
    # num_workers and device do not change what is computed on CPU; a resume may use others. The
    # selective-answer and out-of-distribution settings act after training (trainer/run/finish.py).
    blob = spec.model_dump_json(exclude={"num_workers", "target_accuracy", "ood_recall"}) + dataset_key
    return hashlib.sha256(blob.encode()).hexdigest()
