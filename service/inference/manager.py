"""Loaded models, hot-swap and the budget of loaded models.

Each model name maps to one :class:`LoadedModel` (its active version). A refresher thread re-reads
the registry's active pointers every ``refresh_interval_s`` and whenever a promotion is announced
on Redis; a changed pointer loads and warms the new session off the request path, then swaps one
dict entry. Requests that already hold the old :class:`LoadedModel` finish on it; it is closed
once the last of them is done.

Many models (``max_loaded_models``, like Triton's explicit model control and ModelMesh's LRU): with a
budget only the ``preload_models`` are loaded at start; any other model (or a version other than the
active one, asked for by number over ``/v2``) is loaded on its first request, and when more versions
are loaded than the budget allows the least recently used one is unloaded the way a swap releases a
version: no new requests, closed after the last in-flight one. Without a budget every active model is
loaded at start and kept, as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.settings import Settings
from models import Registry, RegistryError
from service import metrics
from service.inference.decoding import FairDecoder
from service.inference.loaded import LoadedModel, ModelUnavailable, decode_threads

log = logging.getLogger(__name__)

LOAD_RETRY_S = 60.0  # a version that failed to load is tried again after this long


@dataclass
class LoadError:
    version: int
    error: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    when: float = field(default_factory=time.time)


class ModelManager:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        # Decoding threads for every model of this process, shared fairly between requests.
        self.decoding = FairDecoder(decode_threads(settings))
        self._models: dict[str, LoadedModel] = {}  # the active version of each loaded model
        self._others: dict[tuple[str, int], LoadedModel] = {}  # other versions, asked for by number (/v2)
        self.errors: dict[str, LoadError] = {}  # the active version failed to load
        self._failures: dict[tuple[str, int], LoadError] = {}  # another version failed to load
        self.budget = settings.max_loaded_models  # 0: no budget
        self.preload = frozenset(n.strip() for n in settings.preload_models.split(",") if n.strip())
        # Held while loading, swapping or unloading (the refresher and on-demand loads): one load at a time.
        self._swap_lock = threading.RLock()
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

    def loaded_count(self) -> int:
        return len(self._models) + len(self._others)

    def resident(self, name: str) -> bool:
        """Whether ``name`` is loaded at start and kept (no budget: every model; else the preloaded ones)."""
        return self.budget == 0 or name in self.preload

    def _lookup(self, name: str, version: int | None) -> LoadedModel | None:
        current = self._models.get(name)
        if version is None or (current is not None and current.version == version):
            return current
        return self._others.get((name, version))

    async def acquire(self, name: str, version: int | None = None) -> LoadedModel:
        """Like :meth:`get` (the caller must ``release()``), for ``version`` (None: the active one), loading
        it first when it is not loaded (off the event loop). Raises ModelNotFound / VersionNotFound, or
        ModelUnavailable when it cannot be loaded."""
        loaded = self._lookup(name, version)
        if loaded is not None and loaded.try_acquire():
            return loaded
        return await asyncio.to_thread(self._load_on_demand, name, version)

    def _load_on_demand(self, name: str, version: int | None) -> LoadedModel:
        with self._swap_lock:
            loaded = self._lookup(name, version)
            if loaded is not None and loaded.try_acquire():  # another request loaded it meanwhile
                return loaded
            info = self.registry.get(name, version)  # 404s with a clear message
            as_active = info.status == "active"
            failed = self.errors.get(name) if as_active else self._failures.get((name, info.version))
            if failed is not None and failed.version == info.version and time.time() - failed.when < LOAD_RETRY_S:
                raise ModelUnavailable(f"version {info.version} of {name!r} could not be loaded ({failed.error}); "
                                       f"it is tried again {LOAD_RETRY_S:.0f} s after the failure")
            started = time.perf_counter()
            try:
                new = LoadedModel(info, self.settings, self.decoding)
            except Exception as exc:  # any load failure is the model's, said in the answer
                error = LoadError(version=info.version, error=str(exc))
                if as_active:
                    self.errors[name] = error
                else:
                    self._failures[(name, info.version)] = error
                log.error("could not load %s version %d: %s", name, info.version, exc,
                          extra={"model": name, "version": info.version})
                raise ModelUnavailable(f"version {info.version} of {name!r} could not be loaded: {exc}") from exc
            new.try_acquire()  # the caller's hold, taken before anything may unload it
            if as_active:
                old = self._models.get(name)
                self._models[name] = new
                self.errors.pop(name, None)
                if old is not None:
                    old.retire()
            else:
                self._others[(name, info.version)] = new
                self._failures.pop((name, info.version), None)
            log.info("loaded %s version %d on demand in %.2fs", name, info.version, time.perf_counter() - started,
                     extra={"model": name, "version": info.version})
            metrics.model_loaded(time.perf_counter() - started)
            self._evict(keep=new)
            with self._changed:
                self._changed.notify_all()
            return new

    def _evict(self, keep: LoadedModel) -> None:
        """Unload least recently used versions until the budget holds (never ``keep`` nor a preloaded model)."""
        if not self.budget:
            return
        while self.loaded_count() > self.budget:
            candidates: list[tuple[float, str, int]] = [
                (m.last_used, name, -1) for name, m in self._models.items()
                if m is not keep and name not in self.preload
            ] + [(m.last_used, name, v) for (name, v), m in self._others.items() if m is not keep]
            if not candidates:
                log.warning("%d models loaded, over the budget of %d: the others are preloaded or in use",
                            self.loaded_count(), self.budget)
                return
            _, name, version = min(candidates)
            victim = self._models.pop(name) if version < 0 else self._others.pop((name, version))
            victim.retire()  # closed after its last in-flight request, like a swapped-out version
            metrics.model_unloaded()
            log.info("unloaded %s version %d (least recently used; budget %d loaded)", name, victim.version,
                     self.budget, extra={"model": name, "version": victim.version})

    def state(self, name: str, version: int | None = None) -> tuple[str, str | None]:
        """``(state, error)``, state one of "loaded", "unloaded" (loaded on its next request), "loading"
        (preloaded, start-up or a swap not done yet) or "failed" (error says why). Raises 404 errors."""
        info = self.registry.get(name, version)
        current = self._models.get(name)
        if (version is None and current is not None) or self._lookup(name, info.version) is not None:
            return "loaded", None
        active = info.status == "active"
        failed = self.errors.get(name) if active else self._failures.get((name, info.version))
        if failed is not None and failed.version == info.version:
            return "failed", failed.error
        if active and self.resident(name):
            return "loading", None
        return "unloaded", None

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
        """True when every resident model with an active version has that version loaded (or failed), and
        every loaded one serves its active version (or failed to swap). Models the budget unloaded, or
        never loaded, are loaded on their next request: they do not make the process unready."""
        for name in self.registry.model_names():
            active = self.registry.active_version(name)
            if active is None:
                continue
            loaded = self._models.get(name)
            if loaded is None:
                if self.resident(name):
                    return False
                continue
            if loaded.version != active and name not in self.errors:
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
            for key in [k for k in self._others  # a version asked for by number (/v2) that was deleted
                        if k[0] not in names or k[1] not in self.registry.version_numbers(k[0])]:
                self._others.pop(key).retire()
        with self._changed:
            self._changed.notify_all()

    def _refresh_one(self, name: str) -> None:
        active = self.registry.active_version(name)
        current = self._models.get(name)
        if active is None or (current is not None and current.version == active):
            if current is not None and name in self.errors:
                self.errors.pop(name)  # the version that failed is no longer active (rolled back)
            return
        if current is None and not self.resident(name):
            return  # a cold model under the budget: loaded on its first request
        failed = self.errors.get(name)
        if failed is not None and failed.version == active and time.time() - failed.when < LOAD_RETRY_S:
            return  # failed on this version recently; retry now and then, not in a tight loop
        try:
            started = time.perf_counter()
            info = self.registry.get(name, active)
            # A version asked for by number (/v2) that is now active is already loaded: promote it.
            promoted = self._others.pop((name, active), None)
            new = promoted or LoadedModel(info, self.settings, self.decoding)
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
        self._evict(keep=new)

    def forget(self, name: str) -> None:
        """Stop serving ``name`` now (it was deleted): new requests get 404, in-flight ones finish first."""
        with self._swap_lock:
            loaded = self._models.pop(name, None)
            self.errors.pop(name, None)
            for key in [k for k in self._others if k[0] == name]:  # versions asked for by number (/v2)
                self._others.pop(key).retire()
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
            for loaded in [*self._models.values(), *self._others.values()]:
                loaded.retire()
            self._models.clear()
            self._others.clear()
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
