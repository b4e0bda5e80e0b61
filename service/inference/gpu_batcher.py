"""The batcher for the GPU decoder: requests stay encoded until their batch runs, then the whole batch
is decoded, preprocessed and inferred by one :class:`GpuPipeline` call (batched decoding is what makes
nvImageCodec fast; decoding request by request would leave the GPU idle between small jobs).

:func:`build_batcher` picks the decoder for a loaded model (``service/inference/selection.py``) and builds the
batcher that goes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import groupby

import numpy as np

from core.images import ImageError
from core.settings import Settings
from models.manifest import Preprocessing
from service.inference import preprocess_graph
from service.inference.batch_sizes import BatchSettings, bucket
from service.inference.batching import Batcher, BatchRequest, Outcome
from service.inference.gpu_pipeline import GpuPipeline, nvimgcodec, warm_up_jpeg
from service.inference.onnx_session import CUDA, OnnxEngine
from service.inference.selection import choose_decoder

log = logging.getLogger(__name__)


class GpuBatcher(Batcher):
    def __init__(self, engine: OnnxEngine, settings: BatchSettings, pipeline: GpuPipeline, name: str = "batcher",
                 in_flight: Callable[[], int] | None = None) -> None:
        self.pipeline = pipeline
        super().__init__(engine, settings, name=name, in_flight=in_flight)

    def _collect(self, first: BatchRequest) -> tuple[list[BatchRequest], BatchRequest | None, bool]:
        """A request that is the only one this process holds runs at once: waiting ``max_delay_ms`` for
        companions that cannot come would only add to its latency (the single-photo p50 target)."""
        if self._in_flight() <= 1:
            return [first], None, False
        return super()._collect(first)

    def stop(self) -> None:
        """Finish what is queued, then free the pipeline's device memory (a retired version's, after a swap)."""
        super().stop()
        self.pipeline.close()

    def _decode(self, batch: list[BatchRequest]) -> tuple[list[BatchRequest], list[Outcome]]:  # type: ignore[override]
        """Header checks only, per request (a bad image fails its own request before the batch runs)."""
        ready: list[BatchRequest] = []
        failed: list[Outcome] = []
        for req in batch:
            if req.encoded is not None:
                try:
                    self.pipeline.check(req.encoded)
                except ImageError as exc:
                    failed.append((req.future, None, exc))
                    continue
            ready.append(req)
        return ready, failed

    def _infer(self, batch: list[BatchRequest], lane: int, side_by_side: bool) -> np.ndarray:
        outputs = []
        for encoded, group in groupby(batch, key=lambda r: r.encoded is not None):
            requests = list(group)
            if not encoded:  # arrays (LoadedModel.predict): the host path
                outputs.append(super()._infer(requests, lane, side_by_side))
                continue
            payloads = [data for req in requests for data in req.encoded or []]
            limit = self.settings.max_batch_size
            for start in range(0, len(payloads), limit):
                chunk = payloads[start : start + limit]
                padded = bucket(len(chunk), limit) if self.pad_to_buckets else len(chunk)
                outputs.append(self.pipeline.run(chunk, padded=padded))
                for req in requests:  # the batch decodes together: each of its requests waited that long
                    req.decode_s += self.pipeline.last_decode_s
                with self._count_lock:
                    self.batches_run += 1
                    self.images_run += len(chunk)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


def build_batcher(engine: OnnxEngine, pre: Preprocessing, settings: Settings, name: str,
                  in_flight: Callable[[], int] | None = None) -> tuple[Batcher, str]:
    """The batcher for ``engine`` and the decoder it uses (``"gpu"`` or ``"pil"``).

    Raises :class:`service.inference.selection.DecoderUnavailable` when ``gpu`` is asked for and cannot run."""
    batch_settings = BatchSettings.for_provider(engine.provider, settings)
    # Imported only where it could be used: `auto` on the CPU provider is Pillow whatever is installed.
    wanted = settings.decoder == "gpu" or (settings.decoder == "auto" and engine.provider == CUDA)
    module, reason = nvimgcodec() if wanted else (None, "")
    decoder = choose_decoder(settings.decoder, engine.provider, module is not None, reason)
    if decoder == "gpu" and not preprocess_graph.supported(pre):
        log.warning("%s: preprocessing %s is not covered by the GPU graph; decoding with Pillow", name, pre)
        decoder = "pil"
    if decoder == "pil":
        return Batcher(engine, batch_settings, name=name, in_flight=in_flight), decoder
    try:
        pipeline = GpuPipeline(engine, pre, settings, batch_settings.max_batch_size)
    except Exception as exc:
        if settings.decoder == "gpu":  # asked for explicitly: the load fails, naming why
            raise
        log.warning("%s: GPU decoder unavailable (%s); decoding with Pillow", name, exc)
        return Batcher(engine, batch_settings, name=name, in_flight=in_flight), "pil"
    return GpuBatcher(engine, batch_settings, pipeline, name=name, in_flight=in_flight), decoder


def warm_up(batcher: Batcher, crop: int) -> None:
    """Every batch shape the batcher can run, once: through the whole GPU pipeline when it has one."""
    if isinstance(batcher, GpuBatcher):
        batcher.pipeline.warm_up(batcher.warm_sizes(), warm_up_jpeg())
    else:
        batcher.engine.warm_up(crop, batcher.warm_sizes())
