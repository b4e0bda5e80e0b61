"""Prometheus metrics: what the service counts and times, and the text ``/metrics`` answers.

With several uvicorn workers (``tuneserve serve --workers N``) each process writes its samples to
files under ``PROMETHEUS_MULTIPROC_DIR`` (``serve`` sets it before the workers start, because
prometheus_client picks its storage when it is imported) and a scrape of any worker adds them up.
State that lives outside the processes (active versions in the registry, jobs in the job store) is
read at scrape time, so every worker answers the same numbers for it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs import STATES, JobStore
from models import Registry
from service.asgi_status import StatusRecorder

# No *_created series: each would double the families a scrape holds, for a timestamp nobody graphs.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUEST_SECONDS = Histogram(
    "tuneserve_http_request_duration_seconds", "HTTP requests, from the first byte read to the last sent",
    ["method", "route", "status"], buckets=_LATENCY_BUCKETS)
IMAGES_PREDICTED = Counter("tuneserve_images_predicted_total", "Images classified", ["model", "version"])
BATCH_IMAGES = Histogram("tuneserve_batch_size_images", "Images per inference batch", ["model"],
                         buckets=_BATCH_BUCKETS)
INFERENCE_SECONDS = Histogram("tuneserve_inference_duration_seconds", "Inference time of one batch", ["model"],
                              buckets=_LATENCY_BUCKETS)
DECODE_SECONDS = Histogram("tuneserve_decode_duration_seconds", "Decoding and preprocessing of one image",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
# One observation per request and stage (service/inference/predictor.py): preprocess = header checks and decoding,
# wherever it runs (the fair decode pool, a CPU lane, the GPU pipeline); infer = the batcher's queue and
# the session run; postprocess = probabilities, top-k, the unknown decision and heatmaps. A Histogram
# needs no multiprocess_mode: under --workers each process writes its own file and a scrape sums them.
STAGE_SECONDS = Histogram("tuneserve_predict_stage_seconds", "Seconds one predict request spent in each stage",
                          ["stage", "model"], buckets=(0.0005, 0.001, *_LATENCY_BUCKETS))
QUEUE_IMAGES = Gauge("tuneserve_queue_depth_images", "Images queued for inference, not yet answered", ["model"],
                     multiprocess_mode="livesum")
SWAPS = Counter("tuneserve_model_swaps_total", "Versions this process started serving in place of another",
                ["model"])
# The budget of loaded models (TUNESERVE_MAX_LOADED_MODELS): loads a request waited for, and unloads.
COLD_LOAD_SECONDS = Histogram("tuneserve_model_cold_load_seconds", "Loading a model a request asked for",
                              buckets=_LATENCY_BUCKETS)
UNLOADS = Counter("tuneserve_model_unloads_total", "Versions unloaded to keep within the loaded-model budget")
UPLOADS = Counter("tuneserve_dataset_uploads_total", "Dataset uploads by outcome (created, duplicate, refused)",
                  ["outcome"])


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess(work_dir: Path) -> None:
    """Before uvicorn starts several workers: a fresh folder for their sample files (files of an
    earlier run would add its counts to this one's). An operator's own PROMETHEUS_MULTIPROC_DIR wins."""
    if multiprocess():
        return
    folder = work_dir / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder.resolve())


def mark_exited() -> None:
    """This worker process is stopping: its live gauges (queue depth) stop counting."""
    if multiprocess():
        prom_multiprocess.mark_process_dead(os.getpid())


class StateCollector(Collector):
    """Gauges read at scrape time from shared state: the registry's active versions, the job store."""

    def __init__(self, registry: Registry, jobs: JobStore) -> None:
        self.registry = registry
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("tuneserve_model_active_version", "The version each model's pointer names",
                                   labels=["model"])
        for name in self.registry.model_names():
            version = self.registry.active_version(name)
            if version is not None:
                active.add_metric([name], version)
        yield active
        jobs = GaugeMetricFamily("tuneserve_jobs", "Jobs in the job store by state", labels=["state"])
        counts = self.jobs.count_by_state()
        for state in STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs


def exposition(state: Collector) -> bytes:
    """The text a scrape gets: this process's (or every worker's) metrics, then the shared state."""
    if multiprocess():
        merged = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(merged)
        own = generate_latest(merged)
    else:
        own = generate_latest(REGISTRY)
    shared = CollectorRegistry()
    shared.register(state)
    return own + generate_latest(shared)


class RequestMetricsMiddleware:
    """Times every request; labels it with its route template (never the raw path, which a client
    could make unique each time), ``unmatched`` for paths no route serves."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self._routes = routes
        self._labels: dict[int, str] = {}
        self._templates: list[tuple[re.Pattern[str], str]] = []

    def _learn(self) -> None:
        """Every route's full path (prefixes included), by route object and as a pattern."""
        contexts = [ctx for ctx in iter_route_contexts(self._routes()) if ctx.path is not None]
        self._labels = {id(ctx.original_route): str(ctx.path) for ctx in contexts}
        self._templates = [(re.compile("^" + re.sub(r"\\{\w+(:\w+)?\\}", "[^/]+", re.escape(str(ctx.path))) + "$"),
                            str(ctx.path)) for ctx in contexts]

    def route_label(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:  # refused before routing (401, 403, 413 ...): find the template it was for
            if not self._templates:
                self._learn()
            return next((label for pattern, label in self._templates if pattern.match(scope["path"])), "unmatched")
        label = self._labels.get(id(route))
        if label is None:
            self._learn()
            label = self._labels.setdefault(id(route), getattr(route, "path", "unmatched"))
        return label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            status = recorder.status or 500  # what the client gets if the app raises before answering
            REQUEST_SECONDS.labels(scope["method"], self.route_label(scope), str(status)).observe(
                time.perf_counter() - started)


def observe_batch(model: str, images: int, seconds: float) -> None:
    BATCH_IMAGES.labels(model).observe(images)
    INFERENCE_SECONDS.labels(model).observe(seconds)


def observe_stage(model: str, stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage, model).observe(seconds)


def queue_changed(model: str, delta: int) -> None:
    QUEUE_IMAGES.labels(model).inc(delta)


def predicted(model: str, version: int, images: int) -> None:
    IMAGES_PREDICTED.labels(model, str(version)).inc(images)


def swapped(model: str) -> None:
    SWAPS.labels(model).inc()


def model_loaded(seconds: float) -> None:
    COLD_LOAD_SECONDS.observe(seconds)


def model_unloaded() -> None:
    UNLOADS.inc()


def upload_finished(outcome: str) -> None:
    UPLOADS.labels(outcome).inc()
