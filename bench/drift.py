"""What the persisted drift history costs: counting one answer on the event loop (service/drift_history.py),
a flush to the model's SQLite (feedback/drift_log.py), four processes adding to the same buckets at once, and
a read of a long series (GET /v1/models/{name}/drift without the HTTP).

    flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.drift --write-docs
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from bench.docs import write_section

COMMAND = "flock /tmp/tuneserve-bench.lock .venv/bin/python -m bench.drift --write-docs"
HOUR0 = 1_800_000_000 // 3600 * 3600
CLASSES = [f"class{i}" for i in range(10)]


def answer(i: int) -> object:
    from service.inference.predictor import Answer, ImageAnswer

    label = CLASSES[i % len(CLASSES)]
    return Answer("m", 1, 5, [ImageAnswer([(label, i % 10, (i % 100) / 100)], 0.1, "ood" if i % 7 == 0 else None)])


def writer(folder: str, flushes: int, per_flush: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from service.drift_history import DriftHistory

    history = DriftHistory(Path(folder), flush_interval_s=3600)
    answers = [answer(i) for i in range(per_flush)]
    took = []
    for _ in range(flushes):
        for a in answers:
            history.observe(a, now=HOUR0)  # type: ignore[arg-type]
        started = time.perf_counter()
        history.flush()
        took.append(time.perf_counter() - started)
    out.put(took)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    from feedback.drift_log import DriftLog
    from service.drift_history import DriftHistory

    with tempfile.TemporaryDirectory() as tmp:
        one, n = answer(3), 200_000
        counting = DriftHistory(Path(tmp) / "observe-only", flush_interval_s=3600)  # never flushed
        observe_us = timeit.timeit(lambda: counting.observe(one, now=HOUR0), number=n) / n * 1e6  # type: ignore[arg-type]
        history = DriftHistory(Path(tmp), flush_interval_s=3600)

        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=writer, args=(tmp, 50, 200, out)) for _ in range(4)]
        for p in procs:
            p.start()
        flushes = [t for _ in procs for t in out.get(timeout=300)]
        for p in procs:
            p.join(60)
        rows = DriftLog(Path(tmp) / "m").rows(HOUR0)
        counted = sum(r.count for r in rows if r.kind == "class")

        for hour in range(24 * 30):  # a month of hourly buckets, 10 classes
            for i in range(10):
                history.observe(answer(i), now=HOUR0 + 3600 * (hour + 1))  # type: ignore[arg-type]
        history.flush()
        reads = []
        for _ in range(5):
            started = time.perf_counter()
            series = history.series("m", HOUR0)
            reads.append(time.perf_counter() - started)
        buckets = len(series.versions[0].buckets)

    flush_ms = f"{1e3 * statistics.median(flushes):.1f} / {1e3 * max(flushes):.1f} ms"
    rows_md = [
        ("count one answer (one photo) on the event loop: a lock and three dict increments", f"{observe_us:.2f} µs"),
        ("one flush of 200 answers (10 classes, 10 bins, one reason: 21 upserts in one transaction), "
         "4 processes flushing the same buckets at once, median / max", flush_ms),
        (f"read a month of hourly buckets ({buckets} buckets, 10 classes) into the API's answer, median of 5",
         f"{1e3 * statistics.median(reads):.1f} ms"),
    ]
    table = "\n".join(f"| {what} | {took} |" for what, took in rows_md)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = f"""## Drift history (bench/drift.py)

Command: `{COMMAND}` (one run; load average {load} at its end)

| what | time |
| --- | --- |
{table}

The 4 processes x 50 flushes x 200 answers came out as {counted} predictions (expected {4 * 50 * 200}):
upserts add, so no process overwrites another's counts.
"""
    print(text)
    if args.write_docs:
        write_section("## Drift history (bench/drift.py)", text)


if __name__ == "__main__":
    main()
