"""Decoding threads shared fairly between requests, and the per-request decode budget.

Before, every image of every request went into one FIFO thread pool: a request of 64 large photos
queued 64 decodes, and a single photo sent meanwhile waited for all of them (26 s, issue 23). Here
a request's images wait in the request's own line, and a free thread takes the next image of the
request that has had the fewest images started (a request that arrives joins level with the least
served one, and among equals the one whose turn is longest ago goes first): a photo that arrives
behind a big request waits for at most one decode per thread, and a big request alone still gets
every thread. The batcher's fair share does the same for inference (service/inference/batching.py).

The budget bounds what one request may ask to decode at all, in pixels read from the headers before
any pixel is decoded: past it the request is refused with 413, naming the setting.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from core.images import ImageError, open_image

T = TypeVar("T")
Job = tuple[Callable[[], Any], "Future[Any]"]


@dataclass
class _Line:
    jobs: deque[Job]
    started: int  # jobs started, counted from the level of the least served line when it arrived
    last_turn: int = -1  # when it last had a turn (a dispatch count; -1: never)


class FairDecoder:
    """``threads`` threads; each request's jobs are taken in turn with every other request's."""

    def __init__(self, threads: int, name: str = "decode") -> None:
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix=name)
        self._free = self.threads  # threads not running a job (the pool never queues work itself)
        self._lines: list[_Line] = []  # requests with jobs waiting
        self._turn = 0  # dispatches so far
        self._lock = threading.Lock()

    def submit_all(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Future[Any]]:
        """``fn(item)`` for each item, as one request's line; futures in the items' order."""
        jobs: deque[Job] = deque((partial(fn, item), Future()) for item in items)
        futures = [future for _, future in jobs]
        if jobs:
            with self._lock:
                level = min((line.started for line in self._lines), default=0)
                self._lines.append(_Line(jobs, level))
            self._dispatch()
        return futures

    async def map(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        """Results (or the exceptions raised) of ``fn`` on each item, in order."""
        futures = self.submit_all(fn, items)
        return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True)

    async def run(self, fn: Callable[[], T]) -> T:
        """One job, in its own turn (explanations, header scans)."""
        (future,) = self.submit_all(lambda _: fn(), [None])
        result: T = await asyncio.wrap_future(future)
        return result

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._free == 0 or not self._lines:
                    return
                line = min(self._lines, key=lambda ln: (ln.started, ln.last_turn))
                job = line.jobs.popleft()
                line.started += 1
                line.last_turn = self._turn
                self._turn += 1
                if not line.jobs:
                    self._lines.remove(line)
                self._free -= 1
            try:
                self._pool.submit(self._work, job)
            except RuntimeError:  # shut down: nothing will run it
                job[1].cancel()
                return

    def _work(self, job: Job) -> None:
        call, future = job
        try:
            if future.set_running_or_notify_cancel():  # a request that went away skips its remaining jobs
                try:
                    future.set_result(call())
                except BaseException as exc:  # noqa: BLE001 - handed to the request that owns the job
                    future.set_exception(exc)
        finally:
            with self._lock:
                self._free += 1
            self._dispatch()

    def shutdown(self) -> None:
        with self._lock:
            waiting = [job for line in self._lines for job in line.jobs]
            self._lines.clear()
        for _, future in waiting:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


def needs_budget_check(count: int, max_image_pixels: int, budget: int) -> bool:
    """Whether ``count`` images could hold more than ``budget`` pixels at all (else skip reading headers)."""
    return count * max_image_pixels > budget


def check_budget(payloads: Sequence[bytes], max_image_pixels: int, budget: int) -> None:
    """Raises ImageError("too_large") (413) when the payloads' headers say they hold more than ``budget``
    pixels together; a header that does not parse is left for the decoder to name (per image)."""
    total = 0
    for data in payloads:
        try:
            width, height = open_image(data, max_image_pixels).size
        except ImageError:
            continue
        total += width * height
    if total > budget:
        raise ImageError(
            "too_large",
            f"the {len(payloads)} images of this request hold {total:,} pixels; a request may hold at most "
            f"{budget:,} (TUNESERVE_MAX_REQUEST_PIXELS): send them in smaller requests or as smaller images")
