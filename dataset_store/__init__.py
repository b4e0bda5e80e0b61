"""The dataset store: safe archive upload, per-file validation, duplicates, leak-free splits. Torch-free.

Its contracts (the ``index.json`` schemas, the ingest limits, the errors) live in ``core.datasets``.
"""

from dataset_store.remote import S3DatasetStore, datasets_for
from dataset_store.store import DatasetStore

__all__ = ["DatasetStore", "S3DatasetStore", "datasets_for"]
