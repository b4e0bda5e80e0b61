"""The drift history of every model, as ``GET /v1/models/{name}/drift`` answers it.

The predict route counts each answer here (a lock and a few dict increments on the event loop, no I/O);
a thread adds the counts to the model's on-disk history (feedback/drift_log.py) every
``flush_interval_s`` and when the app stops, and a read adds this process's pending counts first. With
several API processes a read sees the others' counts of the last interval once they flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from feedback.drift_log import BUCKET_S, CONFIDENCE_BINS, DriftLog, Kind, Row, bucket, confidence_bin
from service.inference.predictor import Answer

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
Key = tuple[str, int, int, Kind, str]  # model, hour, version, kind, key


class DriftCounts(BaseModel):
    predictions: int = Field(description="photos answered (each counted under its top class)")
    by_class: dict[str, int] = Field(description="photos per top class")
    confidence: list[int] = Field(description="photos per bin of the top probability (edges: confidence_bins)")
    unknown: int = Field(description="answers flagged unknown (out of distribution or below the confidence floor)")
    unknown_by_reason: dict[str, int] = Field(description="unknown answers per reason: ood, low_confidence")
    unknown_share: float | None = Field(description="unknown / predictions; null without predictions")
    reviewed: int = Field(description="captures of this version labelled for the first time")
    reviewed_correct: int = Field(description="of those, labelled with the model's top class")
    none_of_these: int = Field(description="of those, labelled 'none of these'")
    live_accuracy: float | None = Field(
        description="reviewed_correct / (reviewed - none_of_these): the accuracy on reviewed photos of known "
                    "classes; null before any such review")


class DriftBucket(DriftCounts):
    start: int = Field(description="the hour's start, unix seconds (UTC)")


class VersionDrift(BaseModel):
    version: int
    totals: DriftCounts = Field(description="the sums over every bucket listed")
    buckets: list[DriftBucket] = Field(description="hours with any count, oldest first")


class DriftResponse(BaseModel):
    model: str
    since: int = Field(description="the first bucket's hour, unix seconds (UTC)")
    bucket_seconds: int
    confidence_bins: list[float] = Field(description="the edges of the confidence histogram's bins")
    versions: list[VersionDrift] = Field(description="one entry per version with counts, in version order")


def counts(rows: list[Row]) -> DriftCounts:
    by_class: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    outcomes: dict[str, int] = defaultdict(int)
    confidence = [0] * CONFIDENCE_BINS
    for r in rows:
        if r.kind == "class":
            by_class[r.key] += r.count
        elif r.kind == "unknown":
            reasons[r.key] += r.count
        elif r.kind == "review":
            outcomes[r.key] += r.count
        elif r.kind == "confidence" and r.key.isdigit() and int(r.key) < CONFIDENCE_BINS:
            confidence[int(r.key)] += r.count
    predictions, unknown = sum(by_class.values()), sum(reasons.values())
    correct, none = outcomes["agree"], outcomes["none_of_these"]
    judged = correct + outcomes["disagree"]
    return DriftCounts(predictions=predictions, by_class=dict(sorted(by_class.items())), confidence=confidence,
                       unknown=unknown, unknown_by_reason=dict(sorted(reasons.items())),
                       unknown_share=unknown / predictions if predictions else None,
                       reviewed=judged + none, reviewed_correct=correct, none_of_these=none,
                       live_accuracy=correct / judged if judged else None)


def series(model: str, since: int, rows: list[Row]) -> DriftResponse:
    grouped: dict[int, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))  # version -> hour -> rows
    for r in rows:
        grouped[r.version][r.hour].append(r)
    versions = [VersionDrift(version=version, totals=counts([r for hour in hours.values() for r in hour]),
                             buckets=[DriftBucket(start=start, **counts(hours[start]).model_dump())
                                      for start in sorted(hours)])
                for version, hours in sorted(grouped.items())]
    return DriftResponse(model=model, since=bucket(since), bucket_seconds=BUCKET_S,
                         confidence_bins=[round(i / CONFIDENCE_BINS, 2) for i in range(CONFIDENCE_BINS + 1)],
                         versions=versions)


class DriftHistory:
    """Pending counts per model, flushed to ``<root>/<model>/drift.sqlite`` by a thread of its own."""

    def __init__(self, root: Path, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.root = Path(root)
        self.interval = flush_interval_s
        self._pending: dict[Key, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="drift-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.flush()

    def observe(self, answer: Answer, now: float | None = None) -> None:
        hour = bucket(time.time() if now is None else now)
        with self._lock:
            for r in answer.results:
                if not r.predictions:
                    continue
                label, _, probability = r.predictions[0]
                self._pending[(answer.model, hour, answer.version, "class", label)] += 1
                self._pending[(answer.model, hour, answer.version, "confidence", str(confidence_bin(probability)))] += 1
                if r.unknown_reason is not None:
                    self._pending[(answer.model, hour, answer.version, "unknown", r.unknown_reason)] += 1

    def review(self, model: str, version: int, outcome: str, now: float | None = None) -> None:
        """A capture's first review: ``agree``, ``disagree`` or ``none_of_these`` (service/inference/drift.py)."""
        with self._lock:
            self._pending[(model, bucket(time.time() if now is None else now), version, "review", outcome)] += 1

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(int)
        by_model: dict[str, list[Row]] = defaultdict(list)
        for (model, hour, version, kind, key), n in pending.items():
            by_model[model].append(Row(hour, version, kind, key, n))
        for model, rows in by_model.items():
            try:
                DriftLog(self.root / model).add(rows)
            except Exception:  # a full disk or a locked file: keep the counts for the next flush
                log.exception("could not write the drift history of %s; retrying at the next flush", model)
                with self._lock:
                    for r in rows:
                        self._pending[(model, r.hour, r.version, r.kind, r.key)] += r.count

    def series(self, model: str, since: int, version: int | None = None) -> DriftResponse:
        self.flush()  # this process's counts are in the answer; other processes' within their interval
        return series(model, since, DriftLog(self.root / model).rows(since, version))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
