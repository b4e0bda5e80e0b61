"""Dynamic batching: requests queue, one thread runs a batch when it is full or its oldest waited long enough.

Images of one request always go into the same batch (or consecutive batches when a request holds
more than ``max_batch_size`` images); results come back to each request in its own order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from core.settings import Settings
from service.engine import CUDA, OnnxEngine

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` images already: the caller should answer 503."""


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int
    max_delay_ms: float
    max_queue: int

    @classmethod
    def for_provider(cls, provider: str, settings: Settings) -> BatchSettings:
        # Defaults measured (docs/benchmarks.md): on CUDA big batches pay; on a small CPU batch 1 is
        # fastest per image, so we never wait there and only group what is already queued.
        if provider == CUDA:
            size, delay = 256, 2.0
        else:
            size, delay = 8, 0.0
        return cls(
            max_batch_size=settings.max_batch_size or size,
            max_delay_ms=delay if settings.max_delay_ms < 0 else settings.max_delay_ms,
            max_queue=settings.max_queue,
        )


@dataclass
class _Request:
    images: np.ndarray  # (n, 3, H, W)
    future: Future[np.ndarray]
    enqueued: float


class Batcher:
    def __init__(self, engine: OnnxEngine, settings: BatchSettings) -> None:
        self.engine = engine
        self.settings = settings
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._pending_images = 0
        self._count_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()
        self.batches_run = 0

    async def submit(self, images: list[np.ndarray]) -> np.ndarray:
        return await asyncio.wrap_future(self.submit_nowait(images))

    def submit_nowait(self, images: list[np.ndarray]) -> Future[np.ndarray]:
        stacked = np.stack(images) if len(images) > 1 else images[0][None]
        with self._count_lock:
            if self._pending_images + len(images) > self.settings.max_queue:
                raise QueueFull(f"prediction queue is full ({self.settings.max_queue} images waiting)")
            self._pending_images += len(images)
        fut: Future[np.ndarray] = Future()
        self._queue.put(_Request(stacked, fut, time.perf_counter()))
        return fut

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        carry: _Request | None = None
        while True:
            first = carry or self._queue.get()
            carry = None
            if first is None:
                return
            batch = [first]
            size = len(first.images)
            deadline = first.enqueued + self.settings.max_delay_ms / 1000.0
            stop = False
            while size < self.settings.max_batch_size:
                timeout = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if size + len(nxt.images) > self.settings.max_batch_size:
                    carry = nxt  # starts the next batch; a request is never split across two others
                    break
                batch.append(nxt)
                size += len(nxt.images)
            self._execute(batch)
            if stop:
                self._drain_then_exit()
                return

    def _drain_then_exit(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._execute([item])

    def _execute(self, batch: list[_Request]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
        try:
            logits = self._infer(images)
        except Exception as exc:  # noqa: BLE001 - delivered to every request of the batch
            log.exception("inference failed for a batch of %d", len(images))
            for req in batch:
                req.future.set_exception(exc)
        else:
            offset = 0
            for req in batch:
                n = len(req.images)
                req.future.set_result(logits[offset : offset + n])
                offset += n
        finally:
            with self._count_lock:
                self._pending_images -= len(images)
            self.batches_run += 1

    def _infer(self, images: np.ndarray) -> np.ndarray:
        limit = self.settings.max_batch_size
        if len(images) <= limit:
            return self.engine.run(images)
        return np.concatenate([self.engine.run(images[i : i + limit]) for i in range(0, len(images), limit)])
