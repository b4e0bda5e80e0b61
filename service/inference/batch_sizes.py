"""How big a batch gets: the batcher's settings per provider, and the padded sizes (powers of two) it runs.

Apart from service/inference/batching.py so that the GPU batcher and the tests share them without the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from service.inference.onnx_session import CUDA


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    # Fairness: a request of more than share * max_queue images is fed in pieces, that many queued at
    # a time, and only while the queue keeps that much room for others; it waits up to wait_s for room.
    share: float = 0.25
    wait_s: float = 30.0

    @classmethod
    def for_provider(cls, provider: str, settings: Settings) -> BatchSettings:
        # Defaults measured (docs/benchmarks.md "## Serving"): on CUDA big batches pay, so a short
        # wait to fill them is worth it. On the CPU onnxruntime is fastest per image at batch 1
        # (2 cores: 143 images/s at batch 1, 127 at 8, 96 at 32; bigger batches spill the caches),
        # so by default we never wait and run one image at a time; the queue still serialises
        # inference so the session's threads never fight each other.
        if provider == CUDA:
            size, delay = 256, 2.0
        else:
            size, delay = 1, 0.0
        return cls(
            max_batch_size=settings.max_batch_size or size,
            max_delay_ms=delay if settings.max_delay_ms < 0 else settings.max_delay_ms,
            max_queue=settings.max_queue,
            share=settings.queue_share,
            wait_s=settings.queue_wait_s,
        )


def powers(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``, and ``limit`` itself: the batch sizes warmed up front."""
    return [1 << i for i in range(limit.bit_length() + 1) if (1 << i) <= limit] + [limit]


def bucket(n: int, limit: int) -> int:
    """The smallest power of two >= n, capped at ``limit``."""
    return min(1 << (n - 1).bit_length(), limit)
