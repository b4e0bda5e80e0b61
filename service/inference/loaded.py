"""One loaded version: its onnxruntime session, batcher and :class:`Predictor`, and who is using it.

A swap or an unload retires it (no new users); it closes once the last in-flight request releases it.
"""

from __future__ import annotations

import logging
import threading
import time

from core.settings import Settings
from models import VersionInfo
from service.inference.decoding import FairDecoder
from service.inference.gpu_batcher import build_batcher, warm_up
from service.inference.onnx_session import CUDA, OnnxEngine, choose_providers, cpu_cores
from service.inference.predictor import Predictor
from service.inference.selection import int8_speedup, variant_and_reason

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """The model exists but no version of it is loaded (none active, or loading failed)."""


def decode_threads(settings: Settings) -> int:
    return settings.decode_threads or cpu_cores()


class LoadedModel:
    """An onnxruntime session for one version, with its batcher, its :class:`Predictor` and reference count.

    ``decoding``: the process's fair decode pool (the manager's); without one the model gets its own."""

    def __init__(self, info: VersionInfo, settings: Settings, decoding: FairDecoder | None = None) -> None:
        self.info = info
        self.name = info.manifest.name
        self.version = info.version
        self.labels = info.manifest.labels
        self.preprocessing = info.manifest.preprocessing
        self.temperature = info.manifest.temperature
        variant, reason = variant_and_reason(
            settings.variant, info.manifest.variants, choose_providers(settings.device),
            int8_speedup=lambda: int8_speedup(info.file("fp32"), info.file("int8"), self.preprocessing.crop),
            min_speedup=settings.int8_min_speedup)
        self.engine = OnnxEngine(info.file(variant), settings)
        if variant == "fp16" and self.engine.provider != CUDA:
            # fp16 has no fast CPU kernels (onnxruntime inserts casts around every op): serve fp32.
            reason = f"fp16 chosen but the session runs on {self.engine.provider} (no CUDA): fp32"
            variant = "fp32"
            self.engine = OnnxEngine(info.file(variant), settings)
        self.variant, self.variant_reason = variant, reason
        log.info("%s v%d serves %s: %s", info.manifest.name, info.version, variant, reason,
                 extra={"model": info.manifest.name, "version": info.version})
        self._own_decoding = decoding is None
        self.decoding = decoding or FairDecoder(decode_threads(settings), name=f"decode-{self.name}")
        self._users = 0  # requests holding this version now (acquire/release)
        self.last_used = time.monotonic()  # the budget unloads the least recently used version first
        self._retired = False
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.batcher, self.decoder = build_batcher(
            self.engine, self.preprocessing, settings, name=f"batcher-{self.name}", in_flight=lambda: self._users,
        )
        self.predictor = Predictor(info, self.engine, self.batcher, self.decoder, self.decoding, settings)
        try:  # every batch shape the batcher can run, before the first request (off the request path)
            warm_up(self.batcher, self.preprocessing.crop)
        except BaseException:
            self._close()
            raise

    @property
    def provider(self) -> str:
        return self.engine.provider

    def try_acquire(self) -> bool:
        """Count one more user, unless the model is already retired (then the caller looks again)."""
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            self.last_used = time.monotonic()
            return True

    def acquire(self) -> LoadedModel:
        if not self.try_acquire():
            raise ModelUnavailable(f"{self.name} version {self.version} was just replaced")
        return self

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close_now = self._retired and self._users == 0
        if close_now:
            self._close_in_background()

    def retire(self) -> None:
        """No new requests will come; close as soon as the in-flight ones are done."""
        with self._lock:
            self._retired = True
            close_now = self._users == 0
        if close_now:
            self._close_in_background()

    @property
    def users(self) -> int:
        return self._users

    def _close_in_background(self) -> None:
        # The last release() runs on the event loop: stopping the batcher and freeing the session
        # (plus malloc_trim) must not stall other requests, so it happens on a short-lived thread.
        threading.Thread(target=self._close, name=f"close-{self.name}-{self.version}", daemon=True).start()

    def _close(self) -> None:
        self.batcher.stop()
        self.engine.close()
        if self._own_decoding:
            self.decoding.shutdown()
        self.closed.set()
        log.info("released %s version %d", self.name, self.version)
