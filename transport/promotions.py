"""Promotion announcements over Redis pub/sub: the trainer (or a manual activate) publishes, every API
process listens (``service/inference/notify.py``). At-most-once, so only a hint: the API processes also poll."""

from __future__ import annotations

import json
import logging

import redis

log = logging.getLogger(__name__)

PROMOTIONS_CHANNEL = "tuneserve:promotions"


def announce_promotion(redis_url: str | None, name: str, version: int) -> None:
    """Tell every API process that ``name`` changed active version (best effort: they also poll)."""
    if not redis_url:
        return
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        client.publish(PROMOTIONS_CHANNEL, json.dumps({"model": name, "version": version}))
        client.close()
    except redis.RedisError as exc:
        log.warning("could not announce promotion of %s v%d: %s (replicas will poll)", name, version, exc)


def announce_deletion(redis_url: str | None, name: str, version: int | None) -> None:
    """Tell every API process that ``name`` (one ``version``, or all of it when None) was deleted, on the
    promotions channel: a replica wakes and re-reads the registry (a missed notice: its next poll)."""
    if not redis_url:
        return
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        client.publish(PROMOTIONS_CHANNEL, json.dumps({"model": name, "deleted": version or "all"}))
        client.close()
    except redis.RedisError as exc:
        log.warning("could not announce deletion of %s: %s (replicas will poll)", name, exc)
