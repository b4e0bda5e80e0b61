"""A model's captures: photo files plus a SQLite index, within the policy's caps.

SQLite (WAL, one transaction per change) because several API processes capture for the same model at
once; a photo file is written before its row, so a row never names a missing file. At the cap the oldest
unlabelled captures are dropped; labelled ones are what review produced, so they are never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.fsutil import atomic_write_text
from feedback.policy import CapturePolicy
from feedback.sqlite_tx import write_transaction

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
INDEX_FILE = "feedback.sqlite"
PHOTOS_DIR = "photos"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_LABEL = 100
NO_LABEL_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")
State = Literal["unlabeled", "labeled"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS captures (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    source TEXT NOT NULL,          -- 'capture' (a prediction kept by the policy) | 'correction' (sent by a user)
    version INTEGER,               -- the model version that answered (null for a correction)
    file TEXT NOT NULL,            -- under photos/
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    answer TEXT,                   -- JSON: predictions, ood_score, unknown, unknown_reason
    labeled INTEGER NOT NULL DEFAULT 0,
    label TEXT,                    -- null with labeled=1: "none of these" (a negative)
    labeled_at REAL
);
CREATE INDEX IF NOT EXISTS captures_state ON captures (labeled, created_at);
"""


class FeedbackNotFound(LookupError):
    """No such capture (HTTP 404)."""


class FeedbackFull(RuntimeError):
    """The store is at its cap with labelled captures only (HTTP 409)."""


class LabelInvalid(ValueError):
    """A label that cannot name a class (HTTP 422)."""


@dataclass(frozen=True)
class Capture:
    id: str
    created_at: float
    source: str
    version: int | None
    file: str
    size: int
    sha256: str
    answer: dict[str, Any] | None
    labeled: bool
    label: str | None
    labeled_at: float | None

    def view(self, model: str) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "source": self.source, "version": self.version,
                "size": self.size, "sha256": self.sha256, "answer": self.answer,
                "state": "labeled" if self.labeled else "unlabeled", "label": self.label,
                "none_of_these": self.labeled and self.label is None, "labeled_at": self.labeled_at,
                "image_url": f"/v1/models/{model}/feedback/{self.id}/image"}


def check_label(label: str | None) -> str | None:
    """A class name as given (trimmed), or None for "none of these"; raises :class:`LabelInvalid`."""
    if label is None:
        return None
    text = label.strip()
    if not text or len(text) > MAX_LABEL or NO_LABEL_CHARS.search(text) or text in (".", ".."):
        raise LabelInvalid(f"label {label!r} cannot name a class: give 1 to {MAX_LABEL} characters without "
                           "slashes or control characters, or null for 'none of these'")
    return text


class FeedbackStore:
    """One model's captures under ``folder`` (``<home>/feedback/<model>``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._policy: tuple[int, CapturePolicy] | None = None

    # -- policy -------------------------------------------------------------------------------

    def policy(self) -> CapturePolicy:
        """The stored policy (default: off); re-read only when the file changed (one stat per call)."""
        path = self.folder / POLICY_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return CapturePolicy()
        if self._policy is None or self._policy[0] != mtime:
            self._policy = (mtime, CapturePolicy.model_validate_json(path.read_text(encoding="utf-8")))
        return self._policy[1]

    def set_policy(self, policy: CapturePolicy) -> CapturePolicy:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / POLICY_FILE, policy.model_dump_json(indent=1))
        with self._db() as db:  # a lower cap applies now, not at the next capture
            doomed = self._make_room(db, policy, 0)
        self._unlink(doomed)
        return policy

    # -- writing ------------------------------------------------------------------------------

    def add(self, photo: bytes, sha256: str, ext: str, *, source: str, version: int | None,
            answer: dict[str, Any] | None, label: str | None = None, labeled: bool = False) -> str | None:
        """Keep one photo; its id, or None when a capture finds the store full of labelled ones.
        A correction (``labeled``) in a full store raises :class:`FeedbackFull` instead."""
        policy = self.policy()
        capture_id = uuid.uuid4().hex
        photos = self.folder / PHOTOS_DIR
        photos.mkdir(parents=True, exist_ok=True)
        name = f"{capture_id}.{ext}"
        tmp = photos / f".tmp-{name}"
        tmp.write_bytes(photo)
        os.rename(tmp, photos / name)  # whole file or none: the row below names it
        doomed: list[str] = []
        try:
            with self._db() as db:
                doomed = self._make_room(db, policy, len(photo))
                if self._full(db, policy, len(photo)):
                    raise FeedbackFull(
                        f"the feedback store is full of labelled photos ({policy.max_items} photos or "
                        f"{policy.max_bytes} bytes): raise max_items/max_bytes with PUT .../feedback/policy")
                db.execute("INSERT INTO captures VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (capture_id, time.time(), source, version, name, len(photo), sha256,
                            None if answer is None else json.dumps(answer), int(labeled), label,
                            time.time() if labeled else None))
        except FeedbackFull:
            os.unlink(photos / name)
            if labeled:
                raise
            log.warning("feedback store %s is full of labelled photos: capture skipped", self.folder)
            return None
        finally:
            self._unlink(doomed)
        return capture_id

    def label(self, capture_id: str, label: str | None) -> Capture:
        label = check_label(label)
        with self._db() as db:
            changed = db.execute("UPDATE captures SET labeled=1, label=?, labeled_at=? WHERE id=?",
                                 (label, time.time(), capture_id)).rowcount
        if not changed:
            raise FeedbackNotFound(self._missing(capture_id))
        return self.get(capture_id)

    # -- reading ------------------------------------------------------------------------------

    def get(self, capture_id: str) -> Capture:
        if ID_RE.match(capture_id) and (self.folder / INDEX_FILE).is_file():
            with self._db() as db:
                row = db.execute("SELECT * FROM captures WHERE id=?", (capture_id,)).fetchone()
            if row is not None:
                return _capture(row)
        raise FeedbackNotFound(self._missing(capture_id))

    def photo(self, capture: Capture) -> Path:
        return self.folder / PHOTOS_DIR / capture.file

    def page(self, state: State | None, limit: int, offset: int) -> tuple[list[Capture], int]:
        """A page of captures, oldest first, and how many there are in that state."""
        if not (self.folder / INDEX_FILE).is_file():
            return [], 0
        where, args = ("", ()) if state is None else ("WHERE labeled=?", (int(state == "labeled"),))
        with self._db() as db:
            total = db.execute(f"SELECT COUNT(*) FROM captures {where}", args).fetchone()[0]
            rows = db.execute(f"SELECT * FROM captures {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
                              (*args, limit, offset)).fetchall()
        return [_capture(r) for r in rows], int(total)

    def labelled(self) -> list[Capture]:
        return [c for c in self._all() if c.labeled]

    def _all(self) -> Iterator[Capture]:
        if not (self.folder / INDEX_FILE).is_file():
            return
        with self._db() as db:
            rows = db.execute("SELECT * FROM captures ORDER BY created_at, id").fetchall()
        yield from (_capture(r) for r in rows)

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # one writer at a time: the cap check and the insert stay together
        with write_transaction(self.folder / INDEX_FILE, SCHEMA, row_factory=True) as db:
            yield db

    @staticmethod
    def _full(db: sqlite3.Connection, policy: CapturePolicy, incoming: int) -> bool:
        count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM captures").fetchone()
        return bool(count + (1 if incoming else 0) > policy.max_items or size + incoming > policy.max_bytes)

    def _make_room(self, db: sqlite3.Connection, policy: CapturePolicy, incoming: int) -> list[str]:
        """Drop the oldest unlabelled captures until ``incoming`` bytes fit; the files to delete."""
        doomed: list[str] = []
        while self._full(db, policy, incoming):
            row = db.execute("SELECT id, file FROM captures WHERE labeled=0 ORDER BY created_at, id LIMIT 1"
                             ).fetchone()
            if row is None:
                break
            db.execute("DELETE FROM captures WHERE id=?", (row["id"],))
            doomed.append(row["file"])
        return doomed

    def _unlink(self, files: list[str]) -> None:
        for name in files:  # after the commit: a row never names a deleted file
            (self.folder / PHOTOS_DIR / name).unlink(missing_ok=True)

    def _missing(self, capture_id: str) -> str:
        return (f"no capture {capture_id!r} for model {self.folder.name!r}: list them with "
                f"GET /v1/models/{self.folder.name}/feedback")


def _capture(row: sqlite3.Row) -> Capture:
    return Capture(id=row["id"], created_at=row["created_at"], source=row["source"], version=row["version"],
                   file=row["file"], size=row["size"], sha256=row["sha256"],
                   answer=None if row["answer"] is None else json.loads(row["answer"]),
                   labeled=bool(row["labeled"]), label=row["label"], labeled_at=row["labeled_at"])
