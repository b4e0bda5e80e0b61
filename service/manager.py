"""Loaded models and hot-swap.

Each model name maps to one :class:`LoadedModel` (its active version). A refresher thread re-reads
the registry's active pointers every ``refresh_interval_s`` and whenever a promotion is announced
on Redis; a changed pointer loads and warms the new session off the request path, then swaps one
dict entry. Requests that already hold the old :class:`LoadedModel` finish on it; it is closed
once the last of them is done.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.settings import Settings
from models import Registry, RegistryError, VersionInfo
from service import metrics
from service.decoding import FairDecoder
from service.gpu_batcher import build_batcher, warm_up
from service.onnx_session import CUDA, OnnxEngine, choose_providers, cpu_cores
from service.predictor import Predictor
from service.selection import variant_and_reason

log = logging.getLogger(__name__)

LOAD_RETRY_S = 60.0  # a version that failed to load is tried again after this long


class ModelUnavailable(Exception):
    """The model exists but no version of it is loaded (none active, or loading failed)."""


@dataclass
class LoadError:
    version: int
    error: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    when: float = field(default_factory=time.time)


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
        variant, reason = variant_and_reason(settings.variant, info.manifest.variants,
                                             choose_providers(settings.device))
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


class ModelManager:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        # Decoding threads for every model of this process, shared fairly between requests.
        self.decoding = FairDecoder(decode_threads(settings))
        self._models: dict[str, LoadedModel] = {}
        self.errors: dict[str, LoadError] = {}
        self._swap_lock = threading.Lock()
        self._changed = threading.Condition()  # notified after each swap or failed load
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- lookups
    def get(self, name: str) -> LoadedModel:
        """The loaded model, acquired: the caller must ``release()`` it.

        A swap may retire the entry between reading the dict and acquiring it; then the dict
        already holds the new version, so look again (the swap stores the new one first).
        """
        for _ in range(100):
            loaded = self._models.get(name)
            if loaded is None:
                self.registry.get(name)  # raises ModelNotFound / VersionNotFound with a clear message
                raise ModelUnavailable(f"model {name!r} is not loaded yet")
            if loaded.try_acquire():
                return loaded
        raise ModelUnavailable(f"model {name!r} is being swapped; retry")

    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._models)

    def wait_serving(self, name: str, version: int, timeout: float) -> str:
        """Wait until this process serves ``version``: ``"serving"``, ``"failed"`` (it could not load) or
        ``"pending"`` (still loading when ``timeout`` ran out)."""
        deadline = time.monotonic() + timeout

        def outcome() -> str | None:
            loaded = self._models.get(name)
            if loaded is not None and loaded.version == version:
                return "serving"
            error = self.errors.get(name)
            return "failed" if error is not None and error.version == version else None

        with self._changed:
            while (state := outcome()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "pending"
                self._changed.wait(left)
            return state

    def ready(self) -> bool:
        """True when every model with an active version has that version loaded (or failed)."""
        for name in self.registry.model_names():
            active = self.registry.active_version(name)
            if active is None:
                continue
            loaded = self._models.get(name)
            if loaded is None or (loaded.version != active and name not in self.errors):
                return False
        return True

    # --------------------------------------------------------------- refreshing
    def refresh(self) -> None:
        """Bring every loaded model in line with the registry's active pointers."""
        with self._swap_lock:
            names = self.registry.model_names()
            for name in names:
                self._refresh_one(name)
            for name in set(self._models) - set(names):
                self._models.pop(name).retire()  # deleted (here or by another replica)
            for name in set(self.errors) - set(names):
                self.errors.pop(name)
        with self._changed:
            self._changed.notify_all()

    def _refresh_one(self, name: str) -> None:
        active = self.registry.active_version(name)
        current = self._models.get(name)
        if active is None or (current is not None and current.version == active):
            if current is not None and name in self.errors:
                self.errors.pop(name)  # the version that failed is no longer active (rolled back)
            return
        failed = self.errors.get(name)
        if failed is not None and failed.version == active and time.time() - failed.when < LOAD_RETRY_S:
            return  # failed on this version recently; retry now and then, not in a tight loop
        try:
            started = time.perf_counter()
            info = self.registry.get(name, active)
            new = LoadedModel(info, self.settings, self.decoding)
        except (RegistryError, Exception) as exc:  # noqa: BLE001 - any load failure keeps the old one
            log.error("could not load %s version %s: %s; keeping the old one", name, active, exc,
                      extra={"model": name, "version": active})
            self.errors[name] = LoadError(version=active, error=str(exc))
            if current is not None and not current.info.path.is_dir():  # its version was deleted meanwhile
                self._models.pop(name).retire()
            return
        self._models[name] = new  # the swap: one reference
        self.errors.pop(name, None)
        log.info(
            "serving %s version %d on %s (loaded in %.2fs)",
            name, new.version, new.provider, time.perf_counter() - started,
            extra={"model": name, "version": new.version},
        )
        if current is not None:
            metrics.swapped(name)
            current.retire()

    def forget(self, name: str) -> None:
        """Stop serving ``name`` now (it was deleted): new requests get 404, in-flight ones finish first."""
        with self._swap_lock:
            loaded = self._models.pop(name, None)
            self.errors.pop(name, None)
        if loaded is not None:
            loaded.retire()
            log.info("unloaded deleted model %s (version %d)", name, loaded.version)
        with self._changed:
            self._changed.notify_all()

    def wake(self) -> None:
        """Ask the refresher to look now (a promotion was announced)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="model-refresher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._swap_lock:
            for loaded in self._models.values():
                loaded.retire()
            self._models.clear()
        self.decoding.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.refresh_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.refresh()
            except Exception:  # the refresher must survive a bad registry read
                log.exception("model refresh failed")
