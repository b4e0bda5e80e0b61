"""What a fine-tuning run should do. Defined torch-free in ``core.jobspec`` (the API validates jobs
with it before queueing); the trainer uses the very same classes. ``tests/core/test_jobs_spec.py``
keeps its list of catalogue names equal to ``trainer.backbones.available_backbones()``.
"""

from core.jobspec import REGISTRY_BASE, Augment, Device, EarlyStopping, Mode, Optimizer, Scheduler, TrainSpec

__all__ = ["REGISTRY_BASE", "Augment", "Device", "EarlyStopping", "Mode", "Optimizer", "Scheduler", "TrainSpec"]
