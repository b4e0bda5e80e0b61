"""The job store: the source of truth for every job (the broker only carries job ids).

Every state change is one conditional ``UPDATE ... WHERE state = ...`` (plus the lease owner for a
worker's writes), so two workers that receive the same message never both run it, a worker that
lost its lease cannot overwrite what the reconciler decided, and a cancel never races a finish.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, delete, event, func, or_, select, update
from sqlalchemy.orm import sessionmaker

from core.job_states import FINISHED
from core.jobspec import JobSpec
from jobs.schema import ensure_schema, forget
from jobs.tables import JobRow

log = logging.getLogger(__name__)


STALL_AFTER_S = 5.0  # ten missed heartbeats: a worker this silent is gone or frozen


class JobNotFound(LookupError):
    pass


class JobFinished(Exception):
    """The job already ended; it can no longer be cancelled."""


@dataclass(frozen=True)
class Job:
    """A detached snapshot of one row."""

    id: str
    kind: str
    model: str
    dataset_id: str
    spec: JobSpec
    state: str
    progress: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @classmethod
    def of(cls, row: JobRow) -> Job:
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        values["metrics"] = list(values["metrics"] or [])
        values["spec"] = stored_spec(row.spec or {})
        return cls(**values)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def stalled_s(self, lease_s: float, now: float) -> float | None:
        """Seconds since a live worker last held this started job, or None while one does (or it never started).

        A held lease is renewed every half second (trainer/lease.py), so ``lease_expires_at - lease_s``
        is the last heartbeat; silence beyond ``STALL_AFTER_S`` (or the lease, if shorter) means no live
        worker. A job put back in the queue after its lease ran out (``requeue``, at ``updated_at``) waits
        with nobody on it.
        """
        if self.state == "running" and self.lease_expires_at is not None:
            silent = now - (self.lease_expires_at - lease_s)
            return silent if silent > min(STALL_AFTER_S, lease_s) else None
        if self.state == "queued" and self.attempts > 0:  # requeued: its last heartbeat was a lease earlier
            return now - self.updated_at + lease_s
        return None


def stored_spec(raw: dict[str, Any]) -> JobSpec:
    """A stored spec, typed. One an older version stored that no longer validates is kept as stored
    (unvalidated): the job view still shows it, and a worker fails the job naming the bad field."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        log.warning("a stored job spec no longer validates (%s); kept as stored", exc.errors()[0]["msg"])
        return JobSpec.model_construct(_fields_set=set(raw), **raw)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout waits instead of "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def engine_for(url: str) -> Engine:
    """One engine (connection pool) per URL per process."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
            _engines[url] = engine
        return engine


class JobStore:
    def __init__(self, url: str, auto_upgrade: bool = True) -> None:
        """Open the store; an older schema is upgraded first (refused when not ``auto_upgrade``)."""
        self.url = url
        self.engine = engine_for(url)
        ensure_schema(self.engine, auto_upgrade)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        with _engines_lock:
            _engines.pop(self.url, None)
        forget(self.engine)
        self.engine.dispose()

    # ----------------------------------------------------------------- reading
    def get(self, job_id: str) -> Job:
        with self._session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            return Job.of(row)

    def list_jobs(self, state: str | None = None, model: str | None = None, limit: int = 100) -> list[Job]:
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
        if state:
            query = query.where(JobRow.state == state)
        if model:
            query = query.where(JobRow.model == model)
        with self._session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (states without jobs are absent)."""
        query = select(JobRow.state, func.count()).group_by(JobRow.state)
        with self._session() as s:
            return {state: int(n) for state, n in s.execute(query)}

    def unfinished_on_dataset(self, dataset_id: str) -> int:
        """How many queued or running jobs use ``dataset_id`` (a dataset in use cannot be deleted)."""
        query = select(func.count()).select_from(JobRow).where(
            JobRow.dataset_id == dataset_id, JobRow.state.not_in(FINISHED)
        )
        with self._session() as s:
            return int(s.scalar(query) or 0)

    def unfinished(self) -> list[Job]:
        """Every queued or running job (what a delete must not pull files out from under)."""
        query = select(JobRow).where(JobRow.state.not_in(FINISHED))
        with self._session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    def expired(self, now: float) -> list[Job]:
        """Running jobs whose lease ran out (their worker died or hung)."""
        query = select(JobRow).where(JobRow.state == "running", JobRow.lease_expires_at < now)
        with self._session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    def unfinished_older_than(self, created_before: float) -> list[Job]:
        query = select(JobRow).where(JobRow.state.not_in(FINISHED), JobRow.created_at < created_before)
        with self._session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    # ----------------------------------------------------------------- writing
    def create(self, model: str, dataset_id: str, spec: JobSpec | dict[str, Any], kind: str = "train") -> Job:
        """A queued job; ``spec`` is a JobSpec (a dict is validated into one)."""
        typed = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
        now = time.time()
        row = JobRow(
            id=uuid.uuid4().hex, kind=kind, model=model, dataset_id=dataset_id, spec=typed.stored(),
            state="queued", metrics=[], attempts=0, cancel_requested=False, created_at=now, updated_at=now,
        )
        with self._session.begin() as s:
            s.add(row)
        return self.get(row.id)

    def delete_finished(self, job_id: str) -> bool:
        """Remove a finished job's row; False when it is not there or not finished (one conditional DELETE,
        so a job that a worker is still writing is never removed)."""
        with self._session.begin() as s:
            result = s.execute(delete(JobRow).where(JobRow.id == job_id, JobRow.state.in_(FINISHED)))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def _update(self, where: list[Any], **values: Any) -> bool:
        values["updated_at"] = time.time()
        with self._session.begin() as s:
            result = s.execute(update(JobRow).where(*where).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def claim(self, job_id: str, owner: str, lease_s: float, max_attempts: int) -> Job | None:
        """Take the job for ``owner`` if it is queued (or its holder's lease ran out); None if not ours."""
        now = time.time()
        took = self._update(
            [
                JobRow.id == job_id,
                JobRow.attempts < max_attempts,
                or_(JobRow.state == "queued", (JobRow.state == "running") & (JobRow.lease_expires_at < now)),
            ],
            state="running", lease_owner=owner, lease_expires_at=now + lease_s,
            attempts=JobRow.attempts + 1, started_at=func.coalesce(JobRow.started_at, now),
        )
        return self.get(job_id) if took else None

    def renew(self, job_id: str, owner: str, lease_s: float) -> tuple[bool, bool]:
        """Extend the lease; returns (still held, cancel requested)."""
        held = self._update(
            [JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == "running"],
            lease_expires_at=time.time() + lease_s,
        )
        if not held:
            return False, False
        return True, self.get(job_id).cancel_requested

    def hand_over(self, job_id: str, owner: str, new_owner: str, lease_s: float) -> bool:
        """Atomically move a running job's lease from ``owner`` to ``new_owner``: exactly one caller wins."""
        return self._update(
            [JobRow.id == job_id, JobRow.state == "running", JobRow.lease_owner == owner],
            lease_owner=new_owner, lease_expires_at=time.time() + lease_s,
        )

    def record_progress(
        self, job_id: str, owner: str, progress: dict[str, Any], metric: dict[str, Any] | None = None,
        monotone: bool = False,
    ) -> bool:
        """Write progress; append one epoch's metrics (a re-run of the same stage and epoch replaces it).

        ``monotone``: the fraction never moves back (several processes write a search's progress,
        and one that read the study earlier may write after one that read it later).
        """
        with self._session.begin() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.state != "running" or row.lease_owner != owner:
                return False
            if monotone and row.progress and "fraction" in progress:
                progress = {**progress, "fraction": max(progress["fraction"], row.progress.get("fraction") or 0.0)}
            row.progress = progress
            if metric is not None:
                key = (metric.get("stage"), metric.get("epoch"))
                kept = [m for m in (row.metrics or []) if (m.get("stage"), m.get("epoch")) != key]
                row.metrics = [*kept, metric]
            row.updated_at = time.time()
            return True

    def finish(
        self, job_id: str, owner: str, state: str, result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """End a job the caller holds; False when it lost the lease meanwhile (nothing written)."""
        assert state in FINISHED
        return self._update(
            [JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == "running"],
            state=state, result=result, error=error, finished_at=time.time(),
            lease_owner=None, lease_expires_at=None,
        )

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; ask a running job's worker to stop (it checks every batch)."""
        if self._update([JobRow.id == job_id, JobRow.state == "queued"],
                        state="cancelled", finished_at=time.time(), error="cancelled before it started"):
            return self.get(job_id)
        if self._update([JobRow.id == job_id, JobRow.state == "running"], cancel_requested=True):
            return self.get(job_id)
        job = self.get(job_id)  # raises JobNotFound
        if job.finished:
            raise JobFinished(f"job {job_id} already {job.state}")
        return self.cancel(job_id)  # it changed state between our two updates: look again

    def requeue(self, job: Job, now: float) -> bool:
        """Put an expired running job back in the queue (only if nobody touched it since we looked)."""
        return self._update(
            [JobRow.id == job.id, JobRow.state == "running", JobRow.lease_owner == job.lease_owner,
             JobRow.lease_expires_at < now],
            state="queued", lease_owner=None, lease_expires_at=None,
        )

    def discard(self, job: Job) -> bool:
        """Delete a job that was never queued (its task could not be sent) and nobody has touched."""
        with self._session.begin() as s:
            result = s.execute(delete(JobRow).where(JobRow.id == job.id, JobRow.state == "queued",
                                                    JobRow.attempts == 0, JobRow.lease_owner.is_(None)))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def force_finish(self, job: Job, state: str, error: str) -> bool:
        """End a job nobody holds any more (expired, timed out) from the reconciler."""
        holder = job.lease_owner
        owner = JobRow.lease_owner.is_(None) if holder is None else JobRow.lease_owner == holder
        return self._update(
            [JobRow.id == job.id, JobRow.state == job.state, owner],
            state=state, error=error, finished_at=time.time(), lease_owner=None, lease_expires_at=None,
        )
