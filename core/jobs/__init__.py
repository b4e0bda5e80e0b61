"""Job store (SQL via SQLAlchemy 2: SQLite by default, PostgreSQL when configured). Torch-free."""

from core.jobs.models import FINISHED, STATES
from core.jobs.reconcile import Reconciled, reconcile, reconcile_once
from core.jobs.store import Job, JobFinished, JobNotFound, JobStore

__all__ = [
    "FINISHED",
    "STATES",
    "Job",
    "JobFinished",
    "JobNotFound",
    "JobStore",
    "Reconciled",
    "reconcile",
    "reconcile_once",
]
