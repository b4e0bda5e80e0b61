"""transport/: the broker settings both sides share, the readiness probe, and promotion notices, on a real Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from core.settings import Settings
from tests.services import free_port, redis_url
from transport.broker import BrokerProbe, broker_url, celery_config
from transport.embedded_redis import EmbeddedRedis, discover
from transport.promotions import PROMOTIONS_CHANNEL, announce_deletion, announce_promotion


def test_the_configured_broker_wins_and_a_long_job_is_never_redelivered(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, broker_url="redis://example:6379/3", job_timeout_s=7200, task_queue="q1")
    assert broker_url(settings) == "redis://example:6379/3"
    config = celery_config(settings, "redis://example:6379/3")
    # the visibility timeout outlives any job (else Redis hands a running job to a second worker)
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"] > 7200
    assert config["task_default_queue"] == "q1" and config["task_acks_late"] and config["task_serializer"] == "json"
    assert broker_url(Settings(home=tmp_path, broker_url=None)) is None  # nothing configured, no serve running


def test_the_embedded_redis_is_found_by_its_home_then_forgotten(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        assert discover(tmp_path) == url == broker_url(Settings(home=tmp_path, broker_url=None))
        assert redis.Redis.from_url(url).ping()
    finally:
        server.stop()
    assert discover(tmp_path) is None


def test_the_probe_answers_up_then_names_a_dead_broker(tmp_path: Path) -> None:
    up = BrokerProbe(Settings(home=tmp_path, broker_url=redis_url()), ttl=0)
    assert up.check() == ("up", None)
    up.close()
    port = free_port()
    down = BrokerProbe(Settings(home=tmp_path, broker_url=f"redis://127.0.0.1:{port}/0"), ttl=0, timeout=0.2)
    state, why = down.check()
    down.close()
    assert state == "down" and why is not None and f"127.0.0.1:{port}" in why
    assert BrokerProbe(Settings(home=tmp_path, broker_url=None)).check() == ("none", None)


def test_promotions_and_deletions_reach_a_listener() -> None:
    url = redis_url()
    listener = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(PROMOTIONS_CHANNEL)
    try:
        listener.get_message(timeout=1.0)
        announce_promotion(url, "cats", 3)
        announce_deletion(url, "cats", None)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
            if message is not None:
                got.append(json.loads(message["data"]))
        assert got == [{"model": "cats", "version": 3}, {"model": "cats", "deleted": "all"}]
    finally:
        listener.close()
    announce_promotion(None, "cats", 4)  # no broker: nothing to tell, no error
