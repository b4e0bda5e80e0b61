"""``tuneserve serve``: the API (and, by default, one worker and a private Redis)."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from core.settings import get_settings

log = logging.getLogger(__name__)


def run(command: str, args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tuneserve serve")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-worker", action="store_true", help="run the API alone")
    opts = parser.parse_args(args)
    settings = get_settings()
    uvicorn.run(
        "service.app:create_app", factory=True,
        host=opts.host or settings.host, port=opts.port or settings.port, log_level="info",
    )
    return 0
