"""The drift history on disk (feedback/drift_log.py) and its writer (service/drift_history.py): upserts add up
across processes writing the same buckets at once, hours and versions stay apart, and a stopping writer
leaves nothing pending."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from feedback.drift_log import BUCKET_S, DRIFT_FILE, DriftLog, Row, bucket, confidence_bin
from service.drift_history import DriftHistory
from service.inference.predictor import Answer, ImageAnswer

HOUR = 1_800_000_000 // BUCKET_S * BUCKET_S


def write_many(folder: str, worker: int, rounds: int) -> None:
    log = DriftLog(Path(folder))
    for i in range(rounds):  # one transaction each: the processes interleave
        log.add([Row(HOUR, 1, "class", "ant", 1), Row(HOUR, 1, "confidence", str(i % 10), 1),
                 Row(HOUR + BUCKET_S * (i % 2), 2, "review", "agree", worker + 1)])


def test_processes_writing_at_once_lose_no_count(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_many, args=(str(tmp_path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = DriftLog(tmp_path).rows(HOUR)
    count = {(r.hour, r.version, r.kind, r.key): r.count for r in rows}
    assert count[(HOUR, 1, "class", "ant")] == 240
    assert sum(n for (_, v, k, _), n in count.items() if k == "confidence") == 240
    assert count[(HOUR, 1, "confidence", "3")] == 4 * 6
    assert count[(HOUR, 2, "review", "agree")] == count[(HOUR + BUCKET_S, 2, "review", "agree")] == 30 * (1 + 2 + 3 + 4)
    assert DriftLog(tmp_path).rows(HOUR + BUCKET_S, version=2) == [Row(HOUR + BUCKET_S, 2, "review", "agree", 300)]
    assert DriftLog(tmp_path / "none").rows(0) == []  # no history yet: nothing, and no file made
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / DRIFT_FILE).write_bytes(b"")  # a writer stopped before its schema: still no rows
    assert DriftLog(tmp_path / "empty").rows(0) == []


def test_bins_and_buckets() -> None:
    assert [confidence_bin(p) for p in (0.0, 0.05, 0.1, 0.55, 0.999, 1.0)] == [0, 0, 1, 5, 9, 9]
    assert bucket(HOUR + 3599.9) == HOUR and bucket(HOUR + 3600) == HOUR + BUCKET_S


def test_the_writer_flushes_what_is_pending_when_it_stops(tmp_path: Path) -> None:
    history = DriftHistory(tmp_path, flush_interval_s=3600)  # the thread would not flush within the test
    history.start()
    answer = Answer("m", 3, 2, [ImageAnswer([("cat", 0, 0.93), ("dog", 1, 0.07)], 0.9, "ood"),
                                ImageAnswer([("dog", 1, 0.51), ("cat", 0, 0.49)], 0.1, None)])
    history.observe(answer, now=HOUR + 10)
    history.review("m", 3, "disagree", now=HOUR + 20)
    assert not (tmp_path / "m").exists()
    history.close()
    rows = {(r.kind, r.key): r.count for r in DriftLog(tmp_path / "m").rows(HOUR)}
    assert rows == {("class", "cat"): 1, ("class", "dog"): 1, ("confidence", "9"): 1, ("confidence", "5"): 1,
                    ("unknown", "ood"): 1, ("review", "disagree"): 1}
    totals = history.series("m", HOUR).versions[0].totals
    assert (totals.predictions, totals.unknown_share, totals.reviewed, totals.live_accuracy) == (2, 0.5, 1, 0.0)
