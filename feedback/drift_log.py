"""A model's drift history: counts per hour and version, kept on disk beside its captures.

Prometheus counters (service/inference/drift.py) live in one process's memory and start again at zero with it; the
console and ``GET /v1/models/{name}/drift`` need the history itself. Per (hour, version) it keeps:
predictions per top class, a histogram of the top probability (:data:`CONFIDENCE_BINS`), unknown
answers per reason, and first reviews per outcome (``agree``: the label is the model's top class;
``disagree``; ``none_of_these``).

One SQLite file per model (``<home>/feedback/<model>/drift.sqlite``) in WAL mode; every write is an
upsert that adds to a row (``count = count + excluded.count``), so any number of API processes can add
their counts to the same buckets without reading them first, and none overwrites another's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from feedback.sqlite_tx import write_transaction

DRIFT_FILE = "drift.sqlite"
BUCKET_S = 3600  # one row set per hour: a week of one version is 168 buckets
CONFIDENCE_BINS = 10  # top probability in [0, 0.1), [0.1, 0.2), ... [0.9, 1.0]
Kind = Literal["class", "confidence", "unknown", "review"]
KINDS: tuple[Kind, ...] = ("class", "confidence", "unknown", "review")
SCHEMA = """
CREATE TABLE IF NOT EXISTS drift (
    hour INTEGER NOT NULL,     -- the bucket's start, unix seconds (UTC), a multiple of 3600
    version INTEGER NOT NULL,  -- the model version that answered
    kind TEXT NOT NULL,        -- 'class' | 'confidence' | 'unknown' | 'review'
    key TEXT NOT NULL,         -- the top class | the bin's index | the unknown reason | the review's outcome
    count INTEGER NOT NULL,
    PRIMARY KEY (hour, version, kind, key)
) WITHOUT ROWID;
"""
UPSERT = ("INSERT INTO drift (hour, version, kind, key, count) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT (hour, version, kind, key) DO UPDATE SET count = count + excluded.count")


@dataclass(frozen=True)
class Row:
    hour: int
    version: int
    kind: Kind
    key: str
    count: int


def bucket(ts: float) -> int:
    """The start of the hour ``ts`` (unix seconds) falls in."""
    return int(ts // BUCKET_S) * BUCKET_S


def confidence_bin(probability: float) -> int:
    """The histogram bin of a top probability (1.0 falls in the last bin)."""
    return min(max(int(probability * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)


class DriftLog:
    """One model's drift history under ``folder`` (``<home>/feedback/<model>``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def add(self, rows: Iterable[Row]) -> None:
        """Add these counts to their buckets (one transaction)."""
        args = [(r.hour, r.version, r.kind, r.key, r.count) for r in rows if r.count]
        if not args:
            return
        with self._writing() as db:
            db.executemany(UPSERT, args)

    def rows(self, since: int, version: int | None = None) -> list[Row]:
        """Every count of the buckets from the one holding ``since`` on (one version's, or all)."""
        if not (self.folder / DRIFT_FILE).is_file():
            return []
        where, args = "hour >= ?", [bucket(since)]
        if version is not None:
            where, args = where + " AND version = ?", [*args, version]
        # A read takes no write lock (no pragma, no schema): it never waits behind a writer's transaction.
        db = sqlite3.connect(self.folder / DRIFT_FILE, timeout=30, isolation_level=None)
        try:
            found = db.execute(f"SELECT hour, version, kind, key, count FROM drift WHERE {where} "
                               "ORDER BY version, hour, kind, key", args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):  # a file made by a writer that stopped before its schema
                raise
            found = []
        finally:
            db.close()
        return [Row(int(h), int(v), k, str(key), int(n)) for h, v, k, key, n in found]

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        # upserts only: no read-then-write, so any order of writers adds up
        with write_transaction(self.folder / DRIFT_FILE, SCHEMA, durable=False) as db:
            yield db
