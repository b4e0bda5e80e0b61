"""The feedback loop's store: captured predictions, users' corrections, their labels. Torch-free.

A model's captures live under ``<home>/feedback/<model>/``: ``policy.json``, ``feedback.sqlite`` (the index;
SQLite because several API processes capture at once) and ``photos/``. :mod:`feedback.dataset` turns the
labelled ones into a new dataset version whose lineage names its parent.
"""

from feedback.policy import CapturePolicy, should_capture
from feedback.store import Capture, FeedbackFull, FeedbackNotFound, FeedbackStore

__all__ = ["Capture", "CapturePolicy", "FeedbackFull", "FeedbackNotFound", "FeedbackStore", "should_capture"]
