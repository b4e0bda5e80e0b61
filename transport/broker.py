"""Celery over Redis, shared by the sender (API, torch-free) and the workers (trainer/celery_app.py).

The API sends tasks by name (``core.task_names.TASK_*``) through a client app that has no tasks, so it
never imports the trainer. The configuration follows Celery's advice for long tasks: a message is
acknowledged only after its task returned (``acks_late``), a worker reserves one message at a time,
and the visibility timeout is longer than any job. Recovery of a dead worker's job is the job
store's lease and reconciler, not the broker's redelivery (which may come hours later).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery

from core.settings import Settings
from transport.embedded_redis import discover

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    pass


def broker_url(settings: Settings) -> str | None:
    """The configured Redis, else the embedded one a ``serve`` on this home is running."""
    return settings.broker_url or discover(settings.home)


def celery_config(settings: Settings, url: str) -> dict[str, Any]:
    return {
        "broker_url": url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Longer than any job, so Redis never hands a running job's message to a second worker.
            "visibility_timeout": int(settings.job_timeout_s * 2 + 3600),
        },
        "task_default_queue": settings.task_queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_time_limit": int(settings.job_timeout_s + 600),
        "task_soft_time_limit": int(settings.job_timeout_s + 300),
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "task_serializer": "json",
        "accept_content": ["json"],
    }


_clients: dict[tuple[str, str], Celery] = {}
_clients_lock = threading.Lock()


def client(settings: Settings) -> Celery:
    url = broker_url(settings)
    if not url:
        raise BrokerUnavailable("no broker: set TUNESERVE_BROKER_URL or start `tuneserve serve`")
    key = (url, settings.task_queue)
    with _clients_lock:
        app = _clients.get(key)
        if app is None:
            app = Celery("tuneserve-client", set_as_current=False)
            app.conf.update(celery_config(settings, url))
            _clients[key] = app
        return app


def send_task(settings: Settings, name: str, args: list[Any]) -> None:
    """Queue task ``name`` (a ``core.task_names.TASK_*``); raises BrokerUnavailable when Redis is down."""
    app = client(settings)
    try:
        app.send_task(name, args=args, queue=settings.task_queue, retry=True,
                      retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
    except Exception as exc:  # kombu OperationalError and friends
        raise BrokerUnavailable(f"could not queue {name}: {exc}") from exc


def _where(url: str) -> str:
    """host:port of a Redis URL, without its password (for messages)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


class BrokerProbe:
    """Does the broker answer PING? For /readyz; the answer is kept ``ttl`` seconds so that frequent
    probes cost one round trip, and a down broker costs at most ``timeout`` per refresh."""

    def __init__(self, settings: Settings, ttl: float = 0.5, timeout: float = 0.5) -> None:
        self.settings = settings
        self.ttl = ttl
        self.timeout = timeout
        self._lock = threading.Lock()
        self._checked = 0.0
        self._state: tuple[str, str | None] = ("none", None)
        self._client: Any = None
        self._url: str | None = None

    def check(self) -> tuple[str, str | None]:
        """("up", None) | ("none", None) when no broker is configured | ("down", what is wrong)."""
        with self._lock:
            if time.monotonic() - self._checked < self.ttl:
                return self._state
            url = broker_url(self.settings)
            if url is None:
                self._state = ("none", None)
            else:
                if url != self._url:
                    if self._client is not None:
                        self._client.close()
                    self._url = url
                    self._client = redis.Redis.from_url(url, socket_timeout=self.timeout,
                                                        socket_connect_timeout=self.timeout)
                try:
                    self._client.ping()
                    self._state = ("up", None)
                except redis.RedisError as exc:
                    self._state = ("down", f"broker (Redis at {_where(url)}) is not answering: {exc}")
            self._checked = time.monotonic()
            return self._state

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
