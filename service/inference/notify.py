"""Promotion announcements over Redis pub/sub: a hint that makes swaps fast.

Pub/sub is at-most-once, so it only wakes the refresher early; the refresher also re-reads the
registry's pointers every ``refresh_interval_s`` and after every reconnect.
"""

from __future__ import annotations

import logging
import threading

import redis

from service.inference.manager import ModelManager
from transport.promotions import PROMOTIONS_CHANNEL

log = logging.getLogger(__name__)


class PromotionListener:
    def __init__(self, redis_url: str, manager: ModelManager) -> None:
        self.redis_url = redis_url
        self.manager = manager
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promotion-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
            try:
                self._listen(client)
            except (redis.RedisError, OSError) as exc:
                log.warning("promotion listener lost Redis (%s); polling the registry meanwhile", exc)
                self._stop.wait(2.0)
            except Exception:  # this thread must live as long as the API
                log.exception("promotion listener failed; restarting it")
                self._stop.wait(2.0)
            finally:
                client.close()

    def _listen(self, client: redis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(PROMOTIONS_CHANNEL)
            self.manager.wake()  # (re)connected: we may have missed announcements
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    log.info("promotion announced: %s", message.get("data"))
                    self.manager.wake()
        finally:
            pubsub.close()
