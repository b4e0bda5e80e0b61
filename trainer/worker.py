"""What runs beside the tasks in a worker process: the job lease heartbeat and the reconciler timer.

``Heartbeat`` renews the running job's lease and reads its cancel flag every half second, so a
cancel takes effect within one batch and a worker that dies stops renewing; the reconciler (every
worker runs one) then re-queues the job and it resumes from its checkpoint on a live worker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from types import TracebackType

from core.settings import Settings, get_settings
from jobs import JobStore, reconcile_once
from transport.broker import broker_url

log = logging.getLogger(__name__)


def owner_id() -> str:
    """Unique per task run: host, pid and a nonce (a redelivered message on the same pid is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(Exception):
    """Another worker or the reconciler took the job over; stop without writing anything."""


class Heartbeat:
    def __init__(self, store: JobStore, job_id: str, owner: str, lease_s: float, deadline: float) -> None:
        self.store = store
        self.job_id = job_id
        self.owner = owner
        self.lease_s = lease_s
        self.deadline = deadline  # UNIX time after which the job is stopped (job_timeout_s)
        self.interval = min(0.5, lease_s / 4)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def timed_out(self) -> bool:
        return time.time() > self.deadline

    def should_stop(self) -> bool:
        """Checked by the engine every batch."""
        return self.cancelled.is_set() or self.lost.is_set() or self.timed_out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                held, cancel = self.store.renew(self.job_id, self.owner, self.lease_s)
            except Exception as exc:  # noqa: BLE001 - a DB hiccup: try again; the lease has slack
                log.warning("lease renewal for job %s failed: %s", self.job_id, exc)
                continue
            if not held:
                log.error("job %s: lease lost (re-queued elsewhere); stopping", self.job_id)
                self.lost.set()
                return
            if cancel:
                self.cancelled.set()


class ReconcilerThread(threading.Thread):
    """Runs the reconciler every half lease (at most every 30 s) for as long as the worker lives."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="job-reconciler", daemon=True)
        self.settings = settings
        self.interval = max(0.5, min(settings.lease_seconds / 2, 30.0))
        self._stop = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reconcile_once(self.settings)
            except Exception:  # noqa: BLE001 - the timer must outlive a DB or broker outage
                log.exception("job reconciler pass failed")
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()


def limit_train_threads(threads: int) -> None:
    """Cap torch's intra-op threads in this process (``train_threads``; 0 leaves torch's default)."""
    if threads <= 0:
        return
    # torch reads these when it is first imported (with the first job); set_num_threads covers the
    # case where something imported it already.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def main(args: list[str]) -> int:
    """``tuneserve worker``: one solo-pool Celery worker (one job at a time) on the configured queue."""
    settings = get_settings()
    if not broker_url(settings):
        print("no broker: set TUNESERVE_BROKER_URL=redis://... or start `tuneserve serve` on this home",
              file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    limit_train_threads(settings.train_threads)
    from trainer.celery_app import app

    argv = ["worker", "--pool=solo", "--concurrency=1", f"--queues={settings.task_queue}",
            f"--hostname=tuneserve-{os.getpid()}@{socket.gethostname()}", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", *args]
    app.worker_main(argv)
    return 0
