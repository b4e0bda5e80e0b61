"""``tuneserve worker``: one solo-pool Celery worker (one job at a time) on the configured queue."""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings

from core.settings import get_settings
from transport.broker import broker_url

log = logging.getLogger(__name__)


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
    settings = get_settings()
    if not broker_url(settings):
        sys.stderr.write("no broker: set TUNESERVE_BROKER_URL=redis://... or start `tuneserve serve` on this home\n")
        return 2
    limit_train_threads(settings.train_threads)
    from celery.exceptions import SecurityWarning

    from jobs import JobStore, SchemaError

    try:  # upgrade (or refuse) the job database now, not with the first job
        JobStore(settings.resolved_database_url, settings.db_auto_upgrade)
    except SchemaError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    from trainer.celery_app import app  # Celery only; torch loads with the first job

    # A quiet start: no banner (our own log line says the worker started), and no SecurityWarning for a
    # container's root user (the task serializer is JSON, so running as root cannot execute a payload).
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.info("the worker runs as root; a non-root user is better where one can be arranged")
    warnings.filterwarnings("ignore", category=SecurityWarning)
    argv = ["--quiet", "worker", "--pool=solo", "--concurrency=1", f"--queues={settings.task_queue}",
            f"--hostname=tuneserve-{os.getpid()}@{socket.gethostname()}", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", *args]
    app.worker_main(argv)
    return 0


def run(command: str, args: list[str]) -> int:
    return main(args)
