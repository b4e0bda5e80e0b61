"""One SQLite write transaction on a per-model file, as the capture index and the drift log both need."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def write_transaction(path: Path, schema: str, row_factory: bool = False,
                      durable: bool = True) -> Iterator[sqlite3.Connection]:
    """WAL (readers never wait for a writer) and BEGIN IMMEDIATE (writers queue, so a check and the write
    after it stay together); rolled back on any error, committed otherwise, always closed. ``durable=False``
    (counters) syncs less: WAL stays consistent, a power cut loses at most the last commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        if row_factory:
            db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()
