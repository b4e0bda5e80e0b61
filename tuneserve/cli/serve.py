"""``tuneserve serve``: the API and, by default, one training worker and a private Redis.

With ``TUNESERVE_BROKER_URL`` unset, ``serve`` reuses the embedded Redis another ``serve`` on the same
home is running, or starts its own (and stops it on exit). The worker is a child process
(``tuneserve worker``) that gets the broker URL through its environment; it is stopped when the
API stops. SIGINT/SIGTERM stop uvicorn gracefully, then the worker, then Redis.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading

import uvicorn

from core.extras import train_extra_message
from core.formats import FormatTooNew
from core.logs import logging_config
from core.procs import die_with_parent
from core.settings import Settings, get_settings
from core.storage import StorageUrlInvalid
from dataset_store import datasets_for
from jobs import JobStore, SchemaError
from models import registry_for
from service.http.auth import bind_refusal
from service.http.http_protocol import GuardedHttpToolsProtocol
from service.inference.gpu_pipeline import require_decoder
from service.inference.selection import DecoderUnavailable
from service.metrics import prepare_multiprocess
from transport.embedded_redis import EmbeddedRedis, discover, stop_stale

log = logging.getLogger(__name__)

# `docker stop` waits 10 s: uvicorn gets HTTP_STOP_S to finish requests, the worker WORKER_STOP_S to
# stop (then it is killed: its job's lease expires and the job resumes from its checkpoint, acks_late
# keeping the message), Redis the rest.
HTTP_STOP_S = 3
WORKER_STOP_S = 4.0


class WorkerProcess:
    """The child ``tuneserve worker``, restarted (with a pause) if it dies while the API runs."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._keep_alive, name="worker-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watch.start()

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "tuneserve.cli", "worker"]
        # Dies with serve even when serve is SIGKILLed (spawned by the main or the watch thread, which
        # both live until stop()).
        self.process = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
        log.info("training worker started (pid %d)", self.process.pid)

    def _keep_alive(self) -> None:
        while not self._stopping.wait(2.0):
            proc = self.process
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                log.error("training worker exited with %s; restarting it in 5 s", proc.returncode)
                if self._stopping.wait(5.0):
                    return
                self._spawn()  # its reconciler re-queues the job the dead one held

    def stop(self) -> None:
        """Warm shutdown first (the running job's lease then expires and it resumes on next start)."""
        self._stopping.set()
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WORKER_STOP_S)
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop within %.0fs (a job is running); killing it: the job resumes "
                        "from its checkpoint when its lease expires", WORKER_STOP_S)
            proc.kill()
            proc.wait(10)


def open_stores(settings: Settings) -> str | None:
    """Upgrade the job database and the home's store formats once, here, before the API workers and the
    worker start (they would each find the work done); the refusal, naming the fix, or None."""
    try:
        JobStore(settings.resolved_database_url, settings.db_auto_upgrade)
        datasets_for(settings)
        registry_for(settings)
    except (SchemaError, FormatTooNew, StorageUrlInvalid) as exc:
        return str(exc)
    return None


def resolve_broker(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """(broker URL, the embedded Redis we own or None)."""
    if settings.broker_url:
        return settings.broker_url, None
    stop_stale(settings.home)  # one a crashed serve left behind (a live serve's is shared, below)
    running = discover(settings.home)
    if running:
        log.info("using the embedded Redis already running for %s", settings.home)
        return running, None
    embedded = EmbeddedRedis(settings.home)
    return embedded.start(), embedded


def serve_http(settings: Settings, host: str, port: int, workers: int) -> None:
    """uvicorn in this process, or ``workers`` processes sharing the port (uvicorn's supervisor restarts
    one that dies). Worker processes build their settings from the environment, so the broker URL
    chosen here goes to them that way; each loads the active models and follows promotions (registry
    pointer polling plus Redis pub/sub) on its own."""
    log_config = logging_config(settings.log_format, settings.log_level)  # uvicorn's lines in our format
    if workers == 1:
        from service.http.app import create_app

        # The bind address is one of the names the Host check allows by default (service/http/origins.py).
        app = create_app(settings.model_copy(update={"host": host}))
        uvicorn.run(app, host=host, port=port, access_log=False, log_config=log_config,
                    http=GuardedHttpToolsProtocol, timeout_graceful_shutdown=HTTP_STOP_S)
        return
    os.environ["TUNESERVE_BROKER_URL"] = str(settings.broker_url)
    prepare_multiprocess(settings.work_dir)  # /metrics adds up every worker's samples
    os.environ["TUNESERVE_HOME"] = str(settings.home.resolve())
    os.environ["TUNESERVE_HOST"] = host
    uvicorn.run("service.http.app:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_config=log_config, http=GuardedHttpToolsProtocol,
                timeout_graceful_shutdown=HTTP_STOP_S)


def run(command: str, args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tuneserve serve")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-worker", action="store_true", help="run the API alone")
    parser.add_argument("--workers", type=int, default=None,
                        help="HTTP worker processes sharing the port (default TUNESERVE_API_WORKERS, 1)")
    opts = parser.parse_args(args)
    settings = get_settings()
    workers = opts.workers or settings.api_workers
    if workers < 1:
        parser.error("--workers must be at least 1")
    if refusal := bind_refusal(settings, opts.host or settings.host):
        log.error("%s", refusal)  # names the setting; never a key
        return 2
    try:
        require_decoder(settings.decoder)
    except DecoderUnavailable as exc:
        log.error("%s", exc)
        return 2
    settings.home.mkdir(parents=True, exist_ok=True)
    if refusal := open_stores(settings):
        log.error("%s", refusal)
        return 2
    url, embedded = resolve_broker(settings)
    settings = settings.model_copy(update={"broker_url": url})
    worker = None
    # uvicorn re-raises the signal that stopped it once it is done; with the default handler that
    # would kill this process before the worker and Redis are stopped, so note it instead.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    if not opts.no_worker and (message := train_extra_message("the training worker")):
        # The API-only install: serve predictions; jobs queue until a worker with the extra joins.
        log.warning("%s; serving without a worker (queued jobs wait for a `tuneserve worker`)", message)
        opts.no_worker = True
    try:
        if not opts.no_worker:
            env = {**os.environ, "TUNESERVE_BROKER_URL": url, "TUNESERVE_HOME": str(settings.home.resolve())}
            worker = WorkerProcess(env)
            worker.start()
        serve_http(settings, opts.host or settings.host, opts.port or settings.port, workers)
    finally:
        if worker is not None:
            worker.stop()
        if embedded is not None:
            embedded.stop()
    log.info("stopped%s", f" on signal {received[0]}" if received else "")
    return 0
