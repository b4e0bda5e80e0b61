"""Celery task names: the service and the reconciler send these by name; only trainer defines them."""

from __future__ import annotations

TASK_TRAIN = "tuneserve.train"
TASK_SEARCH = "tuneserve.search"
TASK_TRIAL = "tuneserve.trial"
