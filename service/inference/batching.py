"""Dynamic batching: requests queue; one thread runs a batch when it is full or its oldest waited long enough.

Images of one request always go into the same batch (or consecutive batches when a request holds
more than ``max_batch_size`` images); results come back to each request in its own order. The
batcher's threads are the engine's only callers, so inference runs in its own executor, pipelined
with the decode pool: while batch N infers, the requests of batch N+1 are being decoded.

On the CPU the batcher runs ``engine.lanes`` threads ("lanes"). A request may also come encoded
(``submit_encoded``): the lane that runs it decodes it first, so a single-image request crosses
threads twice (event loop -> lane -> event loop) instead of four times through a decode pool; with
one lane per core, decoding and inference still fill every core. A batch that is alone (no other batch
running, nothing else queued, no other request in flight, e.g. still being decoded) runs on the
engine's all-cores session: lowest latency for a lone request. When more work is waiting, each lane
runs its batch on the one-thread lane session, side by side: more images per second than one batch
at a time across all cores (see service/inference/onnx_session.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.inference.batch_sizes import BatchSettings, bucket, powers
from service.inference.onnx_session import CUDA, OnnxEngine

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` images already: the caller should answer 503."""


# A request's answer as a lane hands it back: its future, and its output rows (OnnxEngine.infer) or the error.
Outcome = tuple[Future[np.ndarray], np.ndarray | None, BaseException | None]


@dataclass
class BatchRequest:
    images: list[np.ndarray]  # each (3, H, W), preprocessed (by the lane, for an encoded request)
    future: Future[np.ndarray]
    enqueued: float
    count: int  # images in the request
    encoded: list[bytes] | None = None  # decoded by the lane that runs the request
    decode: Callable[[bytes], np.ndarray] | None = None
    decode_s: float = 0.0  # seconds its images took to decode where the batcher decoded them (the lane, the GPU)


class Batcher:
    """Groups queued requests into batches for one engine; ``submit`` is safe from any thread."""

    def __init__(
        self, engine: OnnxEngine, settings: BatchSettings, name: str = "batcher",
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        """``in_flight`` counts the requests the caller holds now, submitted or not (still being read
        or decoded): a batch is only alone, and worth all cores, when it holds every one of them."""
        if settings.max_batch_size < 1 or settings.max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self.engine = engine
        self.settings = settings
        self.model = name.removeprefix("batcher-")  # the manager names batchers after their model
        self._in_flight = in_flight or (lambda: 0)
        self._queue: queue.SimpleQueue[BatchRequest | None] = queue.SimpleQueue()
        self._pending_images = 0
        self._count_lock = threading.Lock()
        self._buffers: dict[int, np.ndarray] = {}  # reused batch input per lane, grown on demand
        self.lanes = engine.lanes
        self._active = 0  # batches running now (under _count_lock)
        self._collecting = threading.Lock()
        self._idle: list[threading.Event] = []  # wake-ups of lanes waiting for work, last idle on top
        self._idle_lock = threading.Lock()
        self._carry: BatchRequest | None = None  # the request that starts the next batch (under _collecting)
        # On CUDA every new batch shape costs a cuDNN algorithm search (and memory): pad batches up to
        # a power of two so only log2(max_batch_size) shapes ever run, all warmed at load.
        self.pad_to_buckets = engine.provider == CUDA
        self.batches_run = 0
        self.images_run = 0
        self.lane_batches = 0  # of batches_run, those run on the one-thread lane session
        self._threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"{name}-{lane}", daemon=True)
            for lane in range(self.lanes)
        ]
        for thread in self._threads:
            thread.start()

    def warm_sizes(self) -> tuple[int, ...]:
        """Batch sizes to run once at load so the first real requests don't pay for them."""
        if not self.pad_to_buckets:
            return (1,) if self.settings.max_batch_size == 1 else (1, self.settings.max_batch_size)
        return tuple(sorted({bucket(n, self.settings.max_batch_size) for n in powers(self.settings.max_batch_size)}))

    @property
    def decodes_in_lanes(self) -> bool:
        """Whether single encoded images are best decoded by the lanes (``submit_encoded``): with one lane
        per core a lane that decodes keeps its core busy; one lane alone would serialise decoding
        and inference, and on CUDA the GPU would wait for decoding, so those decode in a pool."""
        return self.lanes > 1

    @property
    def pending_images(self) -> int:
        return self._pending_images

    @property
    def fair_share(self) -> int:
        """The most images one request may have queued at once."""
        return max(1, int(self.settings.max_queue * self.settings.share))

    async def submit(self, images: list[np.ndarray]) -> np.ndarray:
        """Output rows (``OnnxEngine.infer``), one per image in the order given. Raises :class:`QueueFull` when full.

        A request over :attr:`fair_share` images goes in pieces, one share at a time, each admitted
        only while the queue keeps a share free: two clients sending 256 images each fill at most
        half of a 256-image queue, and requests of a few images still get in between their pieces
        (before, the two filled the queue and everyone else got 503)."""
        if not images:
            raise ValueError("no images to predict")
        share = self.fair_share
        if len(images) <= share:
            return await asyncio.wrap_future(self.submit_nowait(images))
        _check_shapes(images)
        room = max(self.settings.max_queue - share, share)
        # Pieces of one batch each (one image on the CPU), so every lane can take part of a share.
        piece = max(1, min(self.settings.max_batch_size, share))
        out: list[np.ndarray] = []
        for start in range(0, len(images), share):
            chunk = images[start : start + share]
            futures = []
            for at in range(0, len(chunk), piece):
                part = chunk[at : at + piece]
                request = BatchRequest(list(part), Future(), time.perf_counter(), len(part))
                futures.append(await self._enqueue_when_room(request, room + at))  # its own pieces count once
            out.extend(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        return np.concatenate(out)

    async def _enqueue_when_room(self, request: BatchRequest, limit: int) -> Future[np.ndarray]:
        """Queue ``request`` once the queue holds at most ``limit`` images with it; QueueFull after wait_s."""
        deadline = time.monotonic() + self.settings.wait_s
        while True:
            try:
                return self._enqueue(request, limit)
            except QueueFull:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.005)

    def submit_nowait(self, images: list[np.ndarray]) -> Future[np.ndarray]:
        if not images:
            raise ValueError("no images to predict")
        _check_shapes(images)
        return self._enqueue(BatchRequest(list(images), Future(), time.perf_counter(), len(images)))

    async def submit_encoded(
        self, payloads: list[bytes], decode: Callable[[bytes], np.ndarray]
    ) -> tuple[np.ndarray, float]:
        """Like ``submit``, for encoded images: the lane that runs the request calls ``decode`` on each
        payload first. A payload that fails to decode fails only its own request, with decode's error.
        Returns the rows and the seconds the decoding took (part of the wait, for the stage metrics)."""
        request = self._encoded_request(payloads, decode)
        rows = await asyncio.wrap_future(self._enqueue(request))
        return rows, request.decode_s

    def submit_encoded_nowait(self, payloads: list[bytes], decode: Callable[[bytes], np.ndarray]) -> Future[np.ndarray]:
        return self._enqueue(self._encoded_request(payloads, decode))

    @staticmethod
    def _encoded_request(payloads: list[bytes], decode: Callable[[bytes], np.ndarray]) -> BatchRequest:
        if not payloads:
            raise ValueError("no images to predict")
        return BatchRequest([], Future(), time.perf_counter(), len(payloads), list(payloads), decode)

    def _enqueue(self, request: BatchRequest, limit: int | None = None) -> Future[np.ndarray]:
        with self._count_lock:
            if self._pending_images + request.count > min(limit or self.settings.max_queue, self.settings.max_queue):
                raise QueueFull(
                    f"prediction queue is full ({self._pending_images} images waiting, "
                    f"limit {self.settings.max_queue}); retry shortly"
                )
            self._pending_images += request.count
        metrics.queue_changed(self.model, request.count)
        self._queue.put(request)
        self._wake_idle_lane()
        return request.future

    def stop(self) -> None:
        """Finish what is queued, then end the threads (one stop marker each, behind the queued work)."""
        for _ in self._threads:
            self._queue.put(None)
            self._wake_idle_lane()
        for thread in self._threads:
            thread.join(timeout=30)

    # ---------------------------------------------------------------- thread
    def _run(self, lane: int) -> None:
        wake = threading.Event()
        while True:
            if self.settings.max_batch_size == 1:
                first = self._take(wake)  # nothing to collect
                if first is None:
                    return
                batch, stop = [first], False
            else:
                # One lane collects at a time, so batches form as with one thread (a lane waiting out
                # max_delay_ms keeps the others from starting half-empty batches); they run side by side.
                with self._collecting:
                    first, self._carry = self._carry or self._queue.get(), None
                    if first is None:
                        return
                    batch, self._carry, stop = self._collect(first)  # no carry when it met a stop marker
            self._execute(batch, lane)
            if stop:
                self._drain(lane)
                return

    def _take(self, wake: threading.Event) -> BatchRequest | None:
        """The next request (or stop marker), for a lane that collects nothing (batches of one).

        Idle lanes wait on a stack, and a new request wakes the lane that went idle last: at low
        load the same lane serves request after request. Lanes taking turns from one shared queue
        measured a longer c=1 tail (p99 22-31 ms against 19 ms with one lane, same session)."""
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            with self._idle_lock:
                if not self._queue.empty():  # arrived meanwhile: its wake-up found no idle lane
                    continue
                wake.clear()
                self._idle.append(wake)
            wake.wait()

    def _wake_idle_lane(self) -> None:
        with self._idle_lock:
            if self._idle:
                self._idle.pop().set()

    def _collect(self, first: BatchRequest) -> tuple[list[BatchRequest], BatchRequest | None, bool]:
        """``first`` plus whatever arrives before the batch is full or ``first`` waited its delay."""
        batch = [first]
        size = first.count
        deadline = first.enqueued + self.settings.max_delay_ms / 1000.0
        while size < self.settings.max_batch_size:
            timeout = deadline - time.perf_counter()
            try:
                nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch, None, False
            if nxt is None:
                return batch, None, True
            if size + nxt.count > self.settings.max_batch_size:
                return batch, nxt, False  # starts the next batch; a request is never split across others
            batch.append(nxt)
            size += nxt.count
        return batch, None, False

    def _drain(self, lane: int) -> None:
        """Run requests that raced with ``stop``; other lanes' stop markers go back for them."""
        markers = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                markers += 1
            else:
                self._execute([item], lane)
        for _ in range(markers):
            self._queue.put(None)
            self._wake_idle_lane()

    def _execute(self, batch: list[BatchRequest], lane: int) -> None:
        live = [r for r in batch if not r.future.cancelled()]  # client gone: don't spend a slot on it
        count = sum(r.count for r in batch)
        outcomes: list[Outcome] = []
        with self._count_lock:
            self._active += 1
            # Alone (no other batch running, nothing else queued or on its way): all cores for this
            # batch. Under load a batch that merely found the queue empty for a moment would run
            # wide, and the all-cores session's spinning workers then take CPU from the decoders.
            side_by_side = self.lanes > 1 and (
                self._active > 1 or self._pending_images > count or self._in_flight() > len(batch)
            )
        try:
            ready, outcomes = self._decode(live)
            if ready:
                outcomes += self._run_batch(ready, lane, side_by_side)
        finally:
            with self._count_lock:  # freed before the answers go out: a caller may resubmit at once
                self._active -= 1
                self._pending_images -= count
            metrics.queue_changed(self.model, -count)
        for fut, result, exc in outcomes:
            _deliver(fut, result, exc)

    @staticmethod
    def _decode(batch: list[BatchRequest]) -> tuple[list[BatchRequest], list[Outcome]]:
        """Decode the encoded requests of ``batch``: the ready ones, and failures for those that did not."""
        ready: list[BatchRequest] = []
        failed: list[Outcome] = []
        for req in batch:
            if req.encoded is not None and req.decode is not None:
                started = time.perf_counter()
                try:
                    req.images = _check_shapes([req.decode(data) for data in req.encoded])
                except Exception as exc:  # noqa: BLE001 - the request's own error (e.g. not an image)
                    failed.append((req.future, None, exc))
                    continue
                finally:
                    req.decode_s = time.perf_counter() - started
                req.encoded = None  # the bytes are not needed any more
            ready.append(req)
        return ready, failed

    def _run_batch(self, batch: list[BatchRequest], lane: int, side_by_side: bool) -> list[Outcome]:
        try:
            started = time.perf_counter()
            logits = self._infer(batch, lane, side_by_side)
            metrics.observe_batch(self.model, sum(r.count for r in batch), time.perf_counter() - started)
        except Exception as exc:  # delivered to the requests, never kills the thread
            if len(batch) > 1:  # find the culprit: each request alone, so only it fails
                log.warning("batch of %d requests failed (%s); retrying one by one", len(batch), exc)
                return [outcome for req in batch for outcome in self._run_batch([req], lane, side_by_side)]
            log.exception("inference failed for a request of %d images", batch[0].count)
            return [(batch[0].future, None, exc)]
        outcomes: list[Outcome] = []
        offset = 0
        for req in batch:
            n = req.count
            outcomes.append((req.future, logits[offset : offset + n], None))
            offset += n
        return outcomes

    def _infer(self, batch: list[BatchRequest], lane: int, side_by_side: bool) -> np.ndarray:
        """The batch's output rows (``OnnxEngine.infer``: logits, and the OOD score when the model has one)."""
        images = [img for req in batch for img in req.images]
        limit = self.settings.max_batch_size
        outputs = []
        for start in range(0, len(images), limit):
            chunk, n = self._assemble(images[start : start + limit], lane)  # the lane's buffer: run it now
            outputs.append(self.engine.infer(chunk, lane=side_by_side)[:n])
            with self._count_lock:
                self.batches_run += 1
                self.images_run += n
                self.lane_batches += side_by_side
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _assemble(self, images: list[np.ndarray], lane: int) -> tuple[np.ndarray, int]:
        """One (N, 3, H, W) array and its real image count: a view for a single image, else one copy
        into a reused buffer (zero-padded up to the bucket size on CUDA)."""
        n = len(images)
        size = bucket(n, self.settings.max_batch_size) if self.pad_to_buckets else n
        if size == 1:
            return images[0][None], 1
        item_shape = images[0].shape
        buf = self._buffers.get(lane)
        if buf is None or buf.shape[1:] != item_shape or len(buf) < size or buf.dtype != images[0].dtype:
            cap = max(size, min(self.settings.max_batch_size, 1024))
            buf = self._buffers[lane] = np.zeros((cap, *item_shape), dtype=images[0].dtype)
        for slot, img in zip(buf, images, strict=False):
            slot[...] = img
        # Padding rows keep earlier images (or the initial zeros): finite, independent of the real rows
        # (eval-mode networks never mix rows), and their logits are dropped; not clearing them saves
        # a memset of up to half the batch.
        return buf[:size], n


def _check_shapes(images: list[np.ndarray]) -> list[np.ndarray]:
    shape = images[0].shape
    if len(shape) != 3 or any(img.shape != shape for img in images):
        raise ValueError(f"images must share one (3, H, W) shape, got {[img.shape for img in images]}")
    return images


def _deliver(fut: Future[np.ndarray], result: np.ndarray | None = None, exc: BaseException | None = None) -> None:
    """Complete ``fut`` unless its caller already gave up (cancelled futures refuse results)."""
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(np.array(result, dtype=np.float32, copy=True))
    except InvalidStateError:
        pass
