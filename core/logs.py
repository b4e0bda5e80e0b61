"""Logging for every process: text or JSON lines (``TUNESERVE_LOG_FORMAT``), repeats rate-limited.

``log_fields(job_id=..., model=..., version=...)`` attaches those fields to every line logged inside
it (in this thread or task); a call's own ``extra={"model": ...}`` does the same for one line. JSON
lines carry them as keys, text lines as ``key=value`` after the message. The same warning or error,
word for word, is written once per ``REPEAT_WINDOW_S`` per logger; the next one that gets through says
how many were held back (a broker down for an hour is one line a minute, not 1,800).
"""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger import json as jsonlogger

from core.settings import Settings

FIELDS = ("job_id", "model", "version")
REPEAT_WINDOW_S = 60.0
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_fields: ContextVar[dict[str, Any]] = ContextVar("tuneserve_log_fields", default={})  # noqa: B039 - never mutated


@contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    token = _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current ``log_fields`` onto each record (a line's own ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _fields.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RepeatFilter(logging.Filter):
    """Drops a WARNING-or-worse line identical to one written less than ``window_s`` ago."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (last written, held back)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        with self._lock:
            written, held = self._seen.get(key, (-self.window_s, 0))
            if now - written < self.window_s:
                self._seen[key] = (written, held + 1)
                return False
            if len(self._seen) > 10_000:  # many distinct messages: forget the old ones, keep memory flat
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
            self._seen[key] = (now, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} (and {held} more like it in {now - written:.0f}s)", ()
        return True


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    return {key: getattr(record, key) for key in FIELDS if getattr(record, key, None) is not None}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name (camelCase)
        line = super().formatMessage(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields_of(record).items())
        return f"{line} [{extra}]" if extra else line


class JsonFormatter(jsonlogger.JsonFormatter):
    """One JSON object a line (python-json-logger): time, level, logger, message, the job/model fields,
    the traceback as ``exception``."""

    KEYS = frozenset({"time", "level", "logger", "message", "exception", "stack_info", *FIELDS})

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", json_default=str,
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                                        "exc_info": "exception"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # logging's name
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Only these keys: other libraries' extras (uvicorn's color_message, ...) stay out of the line.
        return {key: value for key, value in log_data.items() if key in self.KEYS and value is not None}


def logging_config(fmt: str = "text", level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` for our loggers and uvicorn's (uvicorn takes it as ``log_config``)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}, "repeats": {"()": RepeatFilter}},
        "formatters": {"tuneserve": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "tuneserve", "filters": ["context", "repeats"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # uvicorn's own loggers write through ours (same format); its access log stays off (we log requests).
        "loggers": {name: {"handlers": [], "propagate": True, "level": "INFO"}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Set up this process's logging from the settings; returns the config (for uvicorn's workers)."""
    config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    return config
