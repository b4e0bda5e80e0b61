"""Job store (SQL via SQLAlchemy 2: SQLite by default, PostgreSQL when configured) and its reconciler.
Torch-free."""

from core.job_states import FINISHED, STATES
from jobs.reconcile import Reconciled, reconcile, reconcile_once
from jobs.schema import SchemaError
from jobs.store import Job, JobFinished, JobNotFound, JobStore

__all__ = [
    "FINISHED",
    "STATES",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobStore",
    "Reconciled",
    "SchemaError",
    "reconcile",
    "reconcile_once",
]
