"""The workers' Celery app: ``celery -A trainer.celery_app worker --pool=solo -c 1`` or ``tuneserve worker``.

Configuration comes from ``transport.broker.celery_config`` (shared with the API's client) so that
both sides agree on queue, serializer and visibility timeout; it is read when Celery first needs it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from core.logs import configure_logging
from core.settings import get_settings
from transport.broker import broker_url, celery_config


@setup_logging.connect
def _our_logging(**_: Any) -> None:
    """Celery would replace the root logger's handlers with its own format; ours (text or JSON) instead."""
    configure_logging(get_settings())


def _config() -> dict[str, Any]:
    settings = get_settings()
    url = broker_url(settings)
    return celery_config(settings, url) if url else {}


def make_app() -> Celery:
    app = Celery("tuneserve", include=["trainer.tasks", "trainer.search.tasks"])
    # Read when Celery first needs its configuration (sending or starting a worker), not at import.
    app.add_defaults(_config)
    return app


app = make_app()
